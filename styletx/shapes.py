"""Which (height, width) VGG16 runs an image at: the shape `geometry.padded_size` gives, always.

TensorFlow's oneDNN kernels keep compiled primitives for every shape they meet, a few MiB each
(bench/shape_bench.py), so a service fed photos of every aspect ratio pads them onto a few shared
shapes. The shape depends on the image and the step alone, never on what ran before: padded and
exact runs agree only to float rounding, which L-BFGS amplifies into different pixels, so a shape
that switched to running exact once "in steady use" (as an earlier version did) gave its first job
other bytes than the next ones, and a keyed job recomputed after a restart other bytes than the
stored result. Squares and sides already on the step are not padded at all; the rest pay for the
padding on every job (bench/RESULTS.md, shapes).
"""

from __future__ import annotations

from styletx.geometry import padded_size

Shape = tuple[int, int]


class ShapePlanner:
    """The shape every image of a `step` runs at; stateless, so shared by every thread."""

    def __init__(self, step: int) -> None:
        if step < 1:
            raise ValueError("step must be positive")
        self.step = step

    def shape(self, height: int, width: int) -> Shape:
        """(height, width) to run a `height` x `width` image at: the same every time."""
        return padded_size(height, width, self.step)


__all__ = ["ShapePlanner"]
