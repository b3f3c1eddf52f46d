"""What a caller passes to `stylize`: image inputs, style blends and the typed per-call options."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Protocol, TypeAlias

from styletx_api.v1.style_options import (
    ColorPreservation,
    ImageFormat,
    InitMethod,
    Preset,
    StyleOptionArgs,
)


class PILImageLike(Protocol):
    """What the SDK needs of a PIL image; a Protocol so that typing never requires Pillow."""

    def save(self, fp: IO[bytes], format: str | None = None) -> None: ...


ImageInput: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview | PILImageLike
"""An image: a file path, encoded bytes (PNG, JPEG, ...) or a PIL image (encoded as PNG)."""


@dataclass(frozen=True, slots=True)
class Style:
    """One style image with its relative blend weight (None: the server's default of 1)."""

    image: ImageInput
    weight: float | None = None


StyleInput: TypeAlias = ImageInput | Style
Styles: TypeAlias = StyleInput | Sequence[StyleInput]


class StylizeOptions(StyleOptionArgs, total=False):
    """Optional keyword arguments of `stylize`/`stream`; an omitted key takes the server default.

    The stylization options are `styletx.v1.StyleOptions`' fields (generated from the proto, see
    `StyleOptionArgs`); these three add the output encoding and the preview cadence.
    """

    output_format: ImageFormat
    """Encoding of the result and the previews (default png)."""
    quality: int
    """JPEG/WebP quality 1-100 (the request's `output_quality`)."""
    preview_every: int
    """Attach a preview image to every N-th progress event."""


__all__ = [
    "ColorPreservation",
    "ImageFormat",
    "ImageInput",
    "InitMethod",
    "PILImageLike",
    "Preset",
    "Style",
    "StyleInput",
    "StyleOptionArgs",
    "Styles",
    "StylizeOptions",
]
