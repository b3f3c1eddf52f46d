"""The in-flight pixel budget: input pixels (from image headers) reserved before any decoding.

Every call being decoded, queued or running holds a reservation of its images' declared pixels,
so the memory held by decoded inputs is bounded whatever the traffic; a call that does not fit is
refused at once (the caller retries later or elsewhere) instead of decoding and then waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from styletx_server.errors.refusals import OverBudget


class Reservation:
    """Pixels held for one job; `release()` is idempotent and thread-safe."""

    def __init__(self, budget: PixelBudget, pixels: int) -> None:
        self._budget = budget
        self.pixels = pixels
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._budget._give_back(self.pixels)


class PixelBudget:
    """A counter of reserved pixels with a hard limit; `on_change(used)` observes every change."""

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        if limit < 1:
            raise ValueError("the pixel budget must be >= 1")
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()
        self._on_change = on_change

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def reserve(self, pixels: int) -> Reservation:
        """Hold `pixels` (OverBudget when they do not fit now)."""
        if pixels < 0:
            raise ValueError("cannot reserve a negative number of pixels")
        with self._lock:
            available = self.limit - self._used
            if pixels > available:
                raise OverBudget(pixels, available, self.limit)
            self._used += pixels
            used = self._used
        if self._on_change is not None:
            self._on_change(used)
        return Reservation(self, pixels)

    def _give_back(self, pixels: int) -> None:
        with self._lock:
            self._used -= pixels
            used = self._used
        if self._on_change is not None:
            self._on_change(used)


__all__ = ["PixelBudget", "Reservation"]
