"""Device memory of jobs: a linear model (bytes ~ a * pixels + b) and a per-device budget.

A job's device memory is dominated by VGG16's activations kept for the backward pass, which grow
with the pixels of the largest image pushed through the network (the output, or a style image
resized by style_scale). `MemoryModel` predicts it per backend and precision from measurements
(`bench/gpu_bench.py` fits `a` and `b` from peak memory at several sizes). `MemoryBudget` holds
the predictions of the jobs running on one device: a job that cannot fit even alone is refused
(`DeviceMemoryExceeded`, naming the largest size that fits), one that does not fit beside the
running ones waits for them. Where the device's capacity is unknown (a CPU), nothing is checked.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from styletx import geometry
from styletx.errors import Cancelled, DeviceMemoryExceeded
from styletx.options import MIN_SIZE

GIB = 1024**3
#: Share of the device's memory jobs may plan on: the allocator's fragmentation, the conv
#: algorithms' workspaces and the framework's own buffers take the rest.
HEADROOM = 0.9
#: How often a job waiting for device memory polls its `should_stop`.
WAIT_POLL_SECONDS = 0.05

StopCallback = Callable[[], bool]


@dataclass(frozen=True)
class MemoryModel:
    """Device bytes of one job: `per_pixel` x the pixels of its largest pass, plus `fixed` once
    per device (weights, compiled executables, runtime buffers)."""

    per_pixel: float
    fixed: float
    #: Where the figures come from (printed by the server's start log and the benchmark).
    source: str = ""

    def job_bytes(self, pixels: int) -> int:
        """What one job of `pixels` adds on the device."""
        return math.ceil(self.per_pixel * pixels)

    def max_pixels(self, capacity: float) -> int:
        """Most pixels one job alone may have within `capacity` bytes (0 when none fit)."""
        return max(0, math.floor((capacity - self.fixed) / self.per_pixel))

    @classmethod
    def fit(cls, points: Sequence[tuple[int, float]], source: str = "") -> MemoryModel:
        """Least-squares line through (pixels, bytes) measurements (two at least)."""
        if len({p for p, _ in points}) < 2:
            raise ValueError("fitting a memory model needs measurements at two sizes at least")
        pixels = np.array([p for p, _ in points], dtype=np.float64)
        used = np.array([b for _, b in points], dtype=np.float64)
        slope, intercept = np.polyfit(pixels, used, 1)
        return cls(float(slope), float(max(0.0, intercept)), source)


#: Provisional models per precision, until a GPU run measures them (`bench/gpu_check.sh` prints
#: the fitted figures to paste here): XLA's buffer assignment of the compiled loss-and-gradient
#: step (arguments + outputs + temporaries; JAX on a CPU, default layer set, 128-512 px square,
#: `bench/gpu_bench.py --xla-memory`), assumed for TensorFlow too. XLA on a CPU computes 16-bit
#: convolutions in float32 and keeps both copies, so the mixed figures are no smaller there; on
#: a GPU they should be (16-bit activations): these err on the safe side.
_XLA_CPU = "XLA buffer assignment, JAX on CPU (provisional until measured on a GPU)"
#: Share of float32's bytes per pixel that are VGG16's activations, which a mixed precision
#: keeps in 16 bits where the device does (the rest: the float32 input image and its gradient,
#: the loss layers' features widened to float32 for the Gram matrices and differences).
#: Measured with TensorFlow on a CPU (`bench/precision_bench.py --part memory`, peak RSS growth
#: of one job at 256, 384 and 512 px, 2026-12-05): float32 4085 B/px, mixed_bfloat16 3080 B/px,
#: 0.754 of float32's, so 2 x (1 - 0.754) = 0.49 of float32's bytes went to 16 bits.
SIXTEEN_BIT_SHARE = 0.49
_SHARE = "halved share measured on TensorFlow's CPU kernels, bench/precision_bench.py"
DEFAULT_MODELS: dict[str, MemoryModel] = {
    "float32": MemoryModel(3_812.0, 120e6, _XLA_CPU),
    "mixed_bfloat16": MemoryModel(4_038.0, 178e6, _XLA_CPU),
    "mixed_float16": MemoryModel(3_556.0, 179e6, _XLA_CPU),
}


def default_model(precision: str, two_bytes: bool = True) -> MemoryModel:
    """The provisional model of a job at `precision` (see `DEFAULT_MODELS`).

    `two_bytes`: the device keeps 16-bit activations in 2 bytes (a GPU; TensorFlow's CPU
    kernels). Then a mixed precision's job needs float32's bytes with the activations' share
    halved (`SIXTEEN_BIT_SHARE`); otherwise (XLA on a CPU widens them) the measured XLA figures.
    """
    if precision == "float32" or not two_bytes:
        return DEFAULT_MODELS[precision]
    base = DEFAULT_MODELS["float32"]
    per_pixel = base.per_pixel * (1.0 - SIXTEEN_BIT_SHARE / 2.0)
    return MemoryModel(per_pixel, base.fixed, f"float32's with 2-byte activations ({_SHARE})")


def job_pixels(
    content: tuple[int, int],
    styles: Sequence[tuple[int, int]],
    size: int,
    style_scale: float,
    shape_step: int = 1,
) -> int:
    """Pixels of the largest pass of a job: its output (longest side `size`, content's aspect)
    or a style image resized as the engine resizes it (`geometry.style_size`), each as the
    network may run it, padded to `geometry.padded_size(..., shape_step)`. Defined for every
    size (no minimum side), so the largest size that fits can be searched for."""
    out_h, out_w = geometry.fit_longest(content[0], content[1], size)
    shapes = [(out_h, out_w)]
    for height, width in styles:
        shapes.append(geometry.style_size(height, width, (out_h, out_w), style_scale))
    return max(h * w for h, w in (geometry.padded_size(*shape, shape_step) for shape in shapes))


def largest_size(fits: Callable[[int], bool], upper: int) -> int:
    """Largest size in [MIN_SIZE, upper] for which `fits(size)` (monotonic), 0 when none does."""
    low, high = MIN_SIZE, upper
    if not fits(low):
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


class MemoryBudget:
    """The device memory the running jobs of one device are predicted to use.

    `capacity` None (unknown, e.g. a CPU) turns every check off. Otherwise jobs share
    `capacity * HEADROOM - model.fixed` bytes. Each call may name the job's own `model` (jobs
    of one device may run at different precisions); `model` is the default.
    """

    def __init__(self, model: MemoryModel, capacity: int | None, device: str = "") -> None:
        self.model = model
        self.capacity = capacity
        self.device = device
        self._cond = threading.Condition()
        self._reserved = 0

    @property
    def usable(self) -> float | None:
        """Bytes jobs may plan on (None: unlimited)."""
        if self.capacity is None:
            return None
        return self.capacity * HEADROOM

    @property
    def reserved(self) -> int:
        with self._cond:
            return self._reserved

    def fits(self, pixels: int, model: MemoryModel | None = None) -> bool:
        """Whether a job of `pixels` fits on this device when it runs alone."""
        model = model or self.model
        usable = self.usable
        return usable is None or model.fixed + model.job_bytes(pixels) <= usable

    def check(
        self,
        pixels: int,
        largest: Callable[[Callable[[int], bool]], int],
        model: MemoryModel | None = None,
    ) -> None:
        """DeviceMemoryExceeded when a job of `pixels` cannot fit alone; `largest(fits)` gives
        the largest output size that would (for the message)."""
        model = model or self.model
        if self.fits(pixels, model):
            return
        usable = self.usable
        assert usable is not None
        raise DeviceMemoryExceeded(
            needed=model.fixed + model.job_bytes(pixels),
            available=usable,
            device=self.device,
            max_size=largest(lambda p: self.fits(p, model)),
        )

    @contextlib.contextmanager
    def reserve(
        self,
        pixels: int,
        should_stop: StopCallback | None = None,
        model: MemoryModel | None = None,
    ) -> Iterator[None]:
        """Hold a job's predicted bytes while the block runs; waits while running jobs leave
        too little (polling `should_stop`). The caller checks `fits` first: a job that cannot
        fit alone would wait for ever, so it is admitted alone instead."""
        usable = self.usable
        if usable is None:
            yield
            return
        model = model or self.model
        wanted = model.job_bytes(pixels)
        room = usable - self.model.fixed
        with self._cond:
            while self._reserved > 0 and self._reserved + wanted > room:
                if should_stop is not None and should_stop():
                    raise Cancelled("stylization cancelled while waiting for device memory")
                self._cond.wait(WAIT_POLL_SECONDS)
            self._reserved += wanted
        try:
            yield
        finally:
            with self._cond:
                self._reserved -= wanted
                self._cond.notify_all()


__all__ = [
    "DEFAULT_MODELS",
    "GIB",
    "HEADROOM",
    "MemoryBudget",
    "MemoryModel",
    "default_model",
    "job_pixels",
    "largest_size",
]
