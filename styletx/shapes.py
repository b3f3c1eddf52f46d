"""Which (height, width) VGG16 runs an image at: exact for the few shapes in steady use, padded
to a shared shape (`geometry.padded_size`) for the long tail of aspect ratios.

TensorFlow's oneDNN kernels keep compiled primitives for every shape they meet, a few MiB each
(bench/shape_bench.py), so a service fed photos of every aspect ratio pads them onto a few
shapes. Padding costs a little (the padded rows and the masks that keep the results exact, about
5 % at 173 x 260), which a shape that keeps coming back should not pay: after `promote_after`
jobs a shape runs exact, on kernels of its own. At most `hot` shapes do (least recently used
first out), so the kernels held stay bounded either way.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from styletx.geometry import padded_size

#: Shapes that may run exact at once.
HOT_SHAPES = 8
#: Jobs at a shape (its targets computed) before it runs exact.
PROMOTE_AFTER = 2
#: Shapes whose job counts are remembered (least recently seen forgotten first).
TRACKED_SHAPES = 256

Shape = tuple[int, int]


class ShapePlanner:
    """Thread-safe: every job of a step (and every worker thread) shares one."""

    def __init__(
        self,
        step: int,
        *,
        hot: int = HOT_SHAPES,
        promote_after: int = PROMOTE_AFTER,
        tracked: int = TRACKED_SHAPES,
    ) -> None:
        if min(step, hot, promote_after, tracked) < 1:
            raise ValueError("step, hot, promote_after and tracked must be positive")
        self.step = step
        self.promote_after = promote_after
        self._hot_capacity = hot
        self._tracked_capacity = tracked
        self._uses: OrderedDict[Shape, int] = OrderedDict()
        self._hot: OrderedDict[Shape, None] = OrderedDict()
        self._lock = threading.Lock()

    def count(self, height: int, width: int) -> None:
        """A job (or one scale of it) starts at this shape: count it, maybe promote it."""
        shape = (height, width)
        with self._lock:
            uses = self._uses.pop(shape, 0) + 1
            self._uses[shape] = uses
            if len(self._uses) > self._tracked_capacity:
                self._uses.popitem(last=False)
            if uses >= self.promote_after and padded_size(height, width, self.step) != shape:
                self._hot[shape] = None
                self._hot.move_to_end(shape)
                if len(self._hot) > self._hot_capacity:
                    self._hot.popitem(last=False)

    def shape(self, height: int, width: int) -> Shape:
        """(height, width) to run a `height` x `width` image at now."""
        shape = (height, width)
        with self._lock:
            if shape in self._hot:
                self._hot.move_to_end(shape)
                return shape
        return padded_size(height, width, self.step)

    def hot(self) -> list[Shape]:
        """Shapes running exact, least recently used first."""
        with self._lock:
            return list(self._hot)


__all__ = ["HOT_SHAPES", "PROMOTE_AFTER", "TRACKED_SHAPES", "ShapePlanner"]
