"""Colour transforms of RGB uint8 images: YIQ, luminance, and colour and luminance matching.

What `preserve_colors` and the `content_matched` start are made of; no framework imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from styletx.result import Image

FloatArray = npt.NDArray[np.float32]

# NTSC RGB -> YIQ (FCC coefficients); Y is the luminance neural-style keeps for -original_colors.
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def rgb_to_yiq(image: FloatArray) -> FloatArray:
    """RGB (0..255 floats, channels last) to YIQ; Y is luminance in 0..255."""
    return np.asarray(image, dtype=np.float32) @ _RGB_TO_YIQ.T.astype(np.float32)


def yiq_to_rgb(image: FloatArray) -> FloatArray:
    """Inverse of `rgb_to_yiq` (not clipped: out-of-gamut YIQ gives values outside 0..255)."""
    return np.asarray(image, dtype=np.float32) @ _YIQ_TO_RGB.T.astype(np.float32)


def to_luminance(image: Image) -> Image:
    """The image's luminance (Y) in all three channels: the input of luminance-only transfer."""
    luminance = rgb_to_yiq(image.astype(np.float32))[..., 0]
    return grey_to_rgb(round_to_uint8(luminance))


def match_luminance(image: Image, reference: Image) -> Image:
    """Luminance of `image` shifted and scaled to the mean and spread of `reference`'s luminance.

    Gatys et al. (2016) do this to the style image before luminance-only transfer, so the style's
    brightness statistics do not overrule the content's.
    """
    source = rgb_to_yiq(image.astype(np.float32))[..., 0].astype(np.float64)
    target = rgb_to_yiq(reference.astype(np.float32))[..., 0].astype(np.float64)
    spread = source.std()
    scale = target.std() / spread if spread > 0 else 0.0
    matched = (source - source.mean()) * scale + target.mean()
    return grey_to_rgb(round_to_uint8(matched))


def match_colors(image: Image, references: Sequence[Image], weights: Sequence[float]) -> Image:
    """`image` with each RGB channel's mean and spread moved to those of `references` blended
    with `weights` (the statistics of their mixture): the content's shapes in the style's
    palette, a start from which the style's low-level Gram matrices are already near."""
    pixels = image.astype(np.float64).reshape(-1, 3)
    # Each style converted once: per channel its mean and mean square, whose blends are the
    # mixture's.
    flats = [r.astype(np.float64).reshape(-1, 3) for r in references]
    blend = np.asarray(weights, dtype=np.float64)[:, None]
    mean = (blend * np.array([f.mean(axis=0) for f in flats])).sum(axis=0)
    square = (blend * np.array([(f * f).mean(axis=0) for f in flats])).sum(axis=0)
    spread = np.sqrt(np.maximum(square - mean**2, 0.0))
    own = pixels.std(axis=0)
    scale = np.divide(spread, own, out=np.zeros(3), where=own > 0)
    matched = (pixels - pixels.mean(axis=0)) * scale + mean
    return round_to_uint8(matched.reshape(image.shape))


def transfer_luminance(luminance: Image, colors: Image) -> Image:
    """Combine the luminance (Y) of `luminance` with the chrominance (I, Q) of `colors`.

    This is preserve_colors' last step: the stylized image's structure in the content's colours.
    """
    if luminance.shape != colors.shape:
        raise ValueError(f"shapes differ: {luminance.shape} vs {colors.shape}")
    yiq = rgb_to_yiq(colors.astype(np.float32))
    yiq[..., 0] = rgb_to_yiq(luminance.astype(np.float32))[..., 0]
    return round_to_uint8(yiq_to_rgb(yiq))


def round_to_uint8(values: npt.NDArray[np.floating[Any]]) -> Image:
    """Round half up and clip to 0..255."""
    rounded: Image = np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)
    return rounded


def grey_to_rgb(grey: Image) -> Image:
    """A grey `[H, W]` uint8 image as RGB (the value in all three channels)."""
    return np.ascontiguousarray(np.repeat(grey[..., np.newaxis], 3, axis=-1))


__all__ = [
    "grey_to_rgb",
    "match_colors",
    "match_luminance",
    "rgb_to_yiq",
    "round_to_uint8",
    "to_luminance",
    "transfer_luminance",
    "yiq_to_rgb",
]
