"""What a caller passes to `stylize`: image inputs, style blends and the typed per-call options."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Literal, Protocol, TypeAlias, TypedDict

ImageFormat: TypeAlias = Literal["png", "jpeg", "webp"]
InitMethod: TypeAlias = Literal["random", "content", "style"]
ColorPreservation: TypeAlias = Literal["swap", "luminance", "off"]
Preset: TypeAlias = Literal["reference", "fast", "high"]


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


class StylizeOptions(TypedDict, total=False):
    """Optional keyword arguments of `stylize`/`stream`; an omitted key takes the server default.

    Names follow `styletx.v1.StyleOptions`, plus the output encoding and the preview cadence.
    """

    size: int
    content_weight: float
    style_weight: float
    tv_weight: float
    tv_power: float
    content_layer: str
    style_layers: Sequence[str]
    max_evaluations: int
    restart_every: int
    init: InitMethod
    seed: int
    style_scale: float
    preserve_colors: ColorPreservation
    scales: int
    preset: Preset
    lbfgs_memory: int
    output_format: ImageFormat
    quality: int
    preview_every: int
