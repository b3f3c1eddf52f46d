"""A job's targets: the content features, the blended style Gram matrices and the loss weights.

Computed once per job and scale, so each evaluation pushes only the optimised image through VGG16.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from styletx import colors, geometry, images, vgg
from styletx.errors import Cancelled
from styletx.options import StyleOptions
from styletx.protocol import StopCallback
from styletx.result import Image

if TYPE_CHECKING:
    from styletx.backends.base import DeviceTargets, LossStep


def check_stop(should_stop: StopCallback | None) -> None:
    """Cancelled when the caller's `should_stop` says so."""
    if should_stop is not None and should_stop():
        raise Cancelled("stylization cancelled")


def luminance_inputs(content: Image, styles: Sequence[Image]) -> tuple[Image, list[Image]]:
    """Gatys et al. (2016): the content's luminance, and each style's luminance matched to its
    mean and spread: what luminance-only transfer optimises against."""
    grey = colors.to_luminance(content)
    return grey, [colors.match_luminance(style, grey) for style in styles]


def style_targets(
    step: LossStep,
    base: Image,
    styles: Sequence[Image],
    blend: Sequence[float],
    options: StyleOptions,
    should_stop: StopCallback | None = None,
) -> DeviceTargets:
    """Content features and blended style Gram matrices at `base`'s size, on the device.

    Computed once per job and scale; `should_stop` is polled before each image's VGG16 pass
    (a job with many large style images spends seconds here).
    """
    h, w = base.shape[:2]
    check_stop(should_stop)
    content, _ = step.targets(vgg.preprocess(base)[np.newaxis])
    grams: list[Any] | None = None
    for style, weight in zip(styles, blend, strict=True):
        check_stop(should_stop)
        if weight == 0.0:
            continue  # blended in with weight 0: its VGG16 pass would change nothing
        sh, sw = geometry.style_size(style.shape[0], style.shape[1], (h, w), options.style_scale)
        _, style_grams = step.targets(vgg.preprocess(images.resize_to(style, sh, sw))[None])
        # The style loss divides by the *output's* pixel count (the tutorial's), and a Gram
        # matrix sums over pixels: rescale the style's Grams from its own pixel count to the
        # output's, so the style loss means the same whatever the style image's size.
        factor = weight * (h * w) / (sh * sw)
        scaled = [factor * g.astype(np.float64) for g in style_grams]
        grams = scaled if grams is None else [a + b for a, b in zip(grams, scaled, strict=True)]
    assert grams is not None  # blend weights are validated: at least one is positive
    return step.put(content, [g.astype(np.float32) for g in grams], loss_weights(options))


def loss_weights(options: StyleOptions) -> vgg.FloatImage:
    """`[1, 4]`: content, style per layer, tv, tv power (`losses.WEIGHT_FIELDS`): data, not
    constants, so new values never recompile."""
    return np.array(
        [
            [
                options.content_weight,
                options.style_weight / len(options.style_layers),
                options.tv_weight,
                options.tv_power,
            ]
        ],
        dtype=np.float32,
    )


def blend_weights(options: StyleOptions, count: int) -> list[float]:
    """Blend weights normalised to sum 1; scaled by the largest first, so that any finite
    weights (1e308 each) blend without their sum overflowing."""
    raw = list(options.style_blend_weights) or [1.0] * count
    largest = max(raw)
    relative = [w / largest for w in raw]
    total = sum(relative)
    return [w / total for w in relative]


__all__ = ["blend_weights", "check_stop", "loss_weights", "luminance_inputs", "style_targets"]
