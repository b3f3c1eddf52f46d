"""`StylizerPool` (one `Stylizer` per device) and `load_stylizer`, which picks one or the other."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from styletx import backends
from styletx.batcher import BatchStats
from styletx.engine import Stylizer
from styletx.errors import Cancelled
from styletx.options import StyleOptions
from styletx.protocol import ProgressCallback, StopCallback
from styletx.result import Image, Losses, Result

#: How often a job waiting for a free device polls its `should_stop`.
WAIT_POLL_SECONDS = 0.05


class StylizerPool:
    """One `Stylizer` per device (e.g. each GPU), lent to `jobs_per_device` jobs at a time.

    Worker threads share the pool as they would share one Stylizer; a job runs on whichever
    device has a free slot, so N workers over N GPUs keep every GPU busy instead of all using
    GPU:0, and several jobs per device let its batcher put their evaluations in one batch. A job
    waiting for a device still honours its `should_stop`. Other keyword arguments (precision,
    batch_window, memory_capacity, ...) go to every member's `Stylizer`.
    """

    def __init__(
        self,
        weights: str | Path | None,
        devices: Sequence[str],
        *,
        backend: str | None = None,
        poll_seconds: float = WAIT_POLL_SECONDS,
        jobs_per_device: int = 1,
        **stylizer_options: Any,
    ) -> None:
        if not devices:
            raise ValueError("a StylizerPool needs at least one device")
        if jobs_per_device < 1:
            raise ValueError(f"jobs_per_device must be >= 1, got {jobs_per_device}")
        self.members = [
            Stylizer(weights, device=d, backend=backend, **stylizer_options) for d in devices
        ]
        self.weights = self.members[0].weights
        self.jobs_per_device = jobs_per_device
        self._poll_seconds = poll_seconds
        self._free: queue.SimpleQueue[Stylizer] = queue.SimpleQueue()
        for _ in range(jobs_per_device):
            for member in self.members:
                self._free.put(member)

    output_size = staticmethod(Stylizer.output_size)

    @property
    def backend(self) -> str:
        """Keras backend of every member."""
        return self.members[0].backend

    @property
    def precision(self) -> str:
        """Activation dtype of every member."""
        return self.members[0].precision

    def precision_for(self, options: StyleOptions) -> str:
        """The precision a job with `options` runs at (the first member's answer: a pool's
        devices are alike; the job's `Result.precision` is the one it ran at)."""
        return self.members[0].precision_for(options)

    @property
    def device(self) -> str:
        """The members' devices, comma-separated ("GPU:0,GPU:1")."""
        return ",".join(m.device for m in self.members)

    @property
    def batch_window(self) -> float:
        """Every member's batching window (seconds; 0: off)."""
        return self.members[0].batch_window

    @property
    def batch_stats(self) -> BatchStats:
        """Batched step calls of every member together."""
        stats = [m.batch_stats for m in self.members]
        return BatchStats(
            sum(s.batches for s in stats),
            sum(s.evaluations for s in stats),
            max(s.largest for s in stats),
        )

    def memory_info(self) -> dict[str, int]:
        """Bytes in use per accelerator, every member's together; empty on CPUs."""
        out: dict[str, int] = {}
        for member in self.members:
            out.update(member.memory_info())
        return out

    def memory_capacity(self) -> dict[str, int]:
        """Bytes jobs may use per accelerator whose capacity is known."""
        out: dict[str, int] = {}
        for member in self.members:
            out.update(member.memory_capacity())
        return out

    def check_fits(
        self,
        content: tuple[int, int],
        styles: Sequence[tuple[int, int]],
        options: StyleOptions,
    ) -> int:
        """`Stylizer.check_fits` on every member: a job must fit whichever device runs it."""
        return max(m.check_fits(content, styles, options) for m in self.members)

    @property
    def evaluations_total(self) -> int:
        """Evaluations of every member together."""
        return sum(m.evaluations_total for m in self.members)

    @contextlib.contextmanager
    def _borrow(self, should_stop: StopCallback | None = None) -> Iterator[Stylizer]:
        while True:
            if should_stop is not None and should_stop():
                raise Cancelled("stylization cancelled while waiting for a free device")
            try:
                member = self._free.get(timeout=self._poll_seconds)
            except queue.Empty:
                continue
            break
        try:
            yield member
        finally:
            self._free.put(member)

    def warmup(self, size: int = 64) -> None:
        """Warm every device up."""
        for member in self.members:
            member.warmup(size)

    def stylize(
        self,
        content: Image,
        styles: Sequence[Image],
        options: StyleOptions | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Result:
        """`Stylizer.stylize` on a free device (waits while every device is busy, polling
        `should_stop`)."""
        with self._borrow(should_stop) as member:
            return member.stylize(content, styles, options, on_progress, should_stop)

    def evaluate(
        self,
        content: Image,
        styles: Sequence[Image],
        image: Image,
        options: StyleOptions | None = None,
    ) -> Losses:
        """`Stylizer.evaluate` on a free device."""
        with self._borrow() as member:
            return member.evaluate(content, styles, image, options)


def load_stylizer(
    weights: str | Path | None = None,
    *,
    workers: int = 1,
    backend: str | None = None,
    jobs_per_device: int = 1,
    **stylizer_options: Any,
) -> Stylizer | StylizerPool:
    """A Stylizer, or a pool of one per accelerator when several serve several workers.

    `backend` selects the Keras backend (None: the one Keras runs, `KERAS_BACKEND`). `workers`
    jobs run at once, `jobs_per_device` of them on each accelerator (so workers /
    jobs_per_device accelerators are used). Other keyword arguments go to each `Stylizer`.
    """
    found = backends.load(backend)
    found.configure()
    accelerators = found.accelerators()
    devices = max(1, -(-workers // max(1, jobs_per_device)))
    if devices > 1 and len(accelerators) > 1:
        return StylizerPool(
            weights,
            accelerators[:devices],
            backend=backend,
            jobs_per_device=jobs_per_device,
            **stylizer_options,
        )
    return Stylizer(weights, backend=backend, **stylizer_options)


__all__ = ["WAIT_POLL_SECONDS", "StylizerPool", "load_stylizer"]
