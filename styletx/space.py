"""`Space`: what L-BFGS optimises at one scale (colour or luminance), and how VGG16 sees it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from styletx import vgg
from styletx.optimize import Vector
from styletx.result import Image

# Luminance (Y of YIQ, as `colors.rgb_to_yiq`) of an RGB pixel.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclass(frozen=True)
class Space:
    """What L-BFGS optimises at one scale, and how VGG16 sees it.

    In colour, the preprocessed (BGR, mean-subtracted) image itself. For luminance-only transfer
    (Gatys et al. 2016) one luminance value per pixel, shown to VGG16 as the grey image that has
    it in all three channels: the optimisation cannot invent colours, and has a third of the
    unknowns.
    """

    height: int
    width: int
    grey: bool

    @property
    def channels(self) -> int:
        return 1 if self.grey else 3

    def image(self, v: Vector) -> vgg.FloatImage:
        """The preprocessed `[H, W, 3]` float32 image VGG16 gets for the point `v`."""
        if not self.grey:
            return v.reshape(self.height, self.width, 3).astype(np.float32)
        luminance = v.reshape(self.height, self.width, 1)
        return (luminance - vgg.BGR_MEAN).astype(np.float32)

    def gradient(self, grad: vgg.FloatImage) -> Vector:
        """The gradient with respect to `v`, from the gradient with respect to `image(v)`."""
        g = np.asarray(grad, dtype=np.float64)
        return (g.sum(axis=-1) if self.grey else g).ravel()

    def point(self, picture: Image) -> Vector:
        """The point whose image is `picture` (RGB uint8; its luminance when grey)."""
        if not self.grey:
            return vgg.preprocess(picture).ravel().astype(np.float64)
        return (picture.astype(np.float64) @ _LUMA).ravel()

    def noise(self, rng: np.random.Generator) -> Vector:
        """The tutorial's random init: uniform noise in preprocessed space (its luminance when
        grey), drawn the same way in both so a seed means one picture."""
        x = rng.uniform(0, 255, (self.height, self.width, 3)) - 128.0
        if not self.grey:
            return x.astype(np.float32).ravel().astype(np.float64)
        return ((x + vgg.BGR_MEAN)[..., ::-1] @ _LUMA).ravel()

    def bounds(self) -> tuple[Vector, Vector]:
        """Per-element (lower, upper) of the points whose pixels lie in 0..255."""
        low = np.zeros(self.channels) if self.grey else -vgg.BGR_MEAN.astype(np.float64)
        shape = (self.height, self.width, self.channels)
        return (np.broadcast_to(low, shape).ravel(), np.broadcast_to(low + 255.0, shape).ravel())

    def resized(self, v: Vector, height: int, width: int) -> Vector:
        """`v` upsampled (bicubic) to the next scale's size."""
        planes = v.reshape(self.height, self.width, self.channels).astype(np.float32)
        out = np.empty((height, width, self.channels), dtype=np.float64)
        for c in range(self.channels):
            plane = PILImage.fromarray(np.ascontiguousarray(planes[..., c]))  # mode "F"
            out[..., c] = np.asarray(plane.resize((width, height), PILImage.Resampling.BICUBIC))
        return out.ravel()


__all__ = ["Space"]
