"""Typed, immutable events of a `Stylize` stream, decoupled from the generated protobuf classes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from styletx_api.v1.style_options import ResolvedOptions

from .options import ImageFormat


@dataclass(frozen=True, slots=True)
class Losses:
    """Weighted loss terms; `total` is the sum of the other three."""

    total: float
    content: float
    style: float
    tv: float


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """An encoded image (the result or a preview) with its pixel size."""

    data: bytes
    format: ImageFormat
    width: int
    height: int

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the encoded bytes to `path` (parent folders are created) and return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.data)
        return target


@dataclass(frozen=True, slots=True)
class Queued:
    """The job waits for a worker; `position` 1 means it starts when the next worker frees up."""

    position: int
    request_id: str


@dataclass(frozen=True, slots=True)
class Started:
    """A worker took the job. Durations are in seconds."""

    options: ResolvedOptions
    width: int
    height: int
    queue_time: float
    request_id: str
    backend: str = ""
    """Keras backend computing the job ("tensorflow", "jax", ...); empty if not reported."""
    precision: str = ""
    """Numeric precision of the activations ("float32", "mixed_bfloat16", ...)."""
    device: str = ""
    """Device the job runs on, e.g. "GPU:0"."""


@dataclass(frozen=True, slots=True)
class Progress:
    """One L-BFGS iteration finished; `preview` is set when previews were asked for."""

    iteration: int
    evaluations: int
    max_evaluations: int
    losses: Losses
    elapsed: float
    scale: int
    preview: EncodedImage | None


@dataclass(frozen=True, slots=True)
class Result:
    """The stylized image, always the last event of a successful stream. Durations in seconds."""

    image: EncodedImage
    losses: Losses
    iterations: int
    evaluations: int
    queue_time: float
    compute_time: float
    request_id: str

    @property
    def image_bytes(self) -> bytes:
        """The encoded output image."""
        return self.image.data

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    @property
    def format(self) -> ImageFormat:
        return self.image.format

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the output image to `path` (parent folders are created) and return the path."""
        return self.image.save(path)


Event: TypeAlias = Queued | Started | Progress | Result


__all__ = [
    "EncodedImage",
    "Event",
    "Losses",
    "Progress",
    "Queued",
    "ResolvedOptions",
    "Result",
    "Started",
]
