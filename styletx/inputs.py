"""Checks of a job's arrays and options before any work: what `Stylizer.stylize` refuses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from styletx.errors import InvalidImage, InvalidOptions
from styletx.options import StyleOptions
from styletx.result import Image


def check_inputs(content: Image, styles: Sequence[Image], options: StyleOptions) -> None:
    """InvalidImage for an array that is not H x W x 3 uint8 with pixels; InvalidOptions for no
    style images or a blend weight count that does not match them."""
    for name, image in [("content", content), *((f"styles[{i}]", s) for i, s in enumerate(styles))]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidImage("must be an H x W x 3 uint8 RGB array", field=name)
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise InvalidImage("has no pixels", field=name)
    if not styles:
        raise InvalidOptions("styles", "at least one style image is required")
    if options.style_blend_weights and len(options.style_blend_weights) != len(styles):
        raise InvalidOptions(
            "style_blend_weights",
            f"got {len(options.style_blend_weights)} weights for {len(styles)} style images",
        )


__all__ = ["check_inputs"]
