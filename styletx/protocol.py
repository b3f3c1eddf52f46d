"""`Engine`: what the server asks of an engine, which `Stylizer` and `StylizerPool` both are."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from styletx.batcher import BatchStats
from styletx.options import StyleOptions
from styletx.result import Image, Progress, Result

#: Called with each progress event of a job.
ProgressCallback = Callable[[Progress], None]
#: Polled before every evaluation; True ends the job with `Cancelled`.
StopCallback = Callable[[], bool]


@runtime_checkable
class Engine(Protocol):
    """One loaded model (or one per device) that runs jobs; the server is typed against this.

    Runtime-checkable, so a test can tell that a class still has every member.
    """

    @property
    def backend(self) -> str:
        """Keras backend computing the loss and gradient ("tensorflow", "jax")."""
        ...

    @property
    def precision(self) -> str:
        """Keras dtype policy of the engine's jobs, `auto` resolved for its device."""
        ...

    @property
    def device(self) -> str:
        """Device (or comma-separated devices) the jobs run on ("CPU:0", "GPU:0,GPU:1")."""
        ...

    @property
    def batch_window(self) -> float:
        """Seconds a forming cross-job batch waits for other jobs; 0: batching off."""
        ...

    @property
    def batch_stats(self) -> BatchStats:
        """Batched step calls and the evaluations they carried, for the metrics."""
        ...

    def precision_for(self, options: StyleOptions) -> str:
        """The precision a job with `options` runs at."""
        ...

    def check_fits(
        self,
        content: tuple[int, int],
        styles: Sequence[tuple[int, int]],
        options: StyleOptions,
    ) -> int:
        """The pixels of the job's largest pass; DeviceMemoryExceeded when it cannot fit the
        device even alone (sizes are (height, width), read from image headers)."""
        ...

    def memory_info(self) -> dict[str, int]:
        """{device: bytes} the framework holds now; empty on CPUs."""
        ...

    def memory_capacity(self) -> dict[str, int]:
        """{device: bytes} jobs are planned against; empty where unknown."""
        ...

    def warmup(self, size: int = 64) -> None:
        """Compile and load what the first request would otherwise wait for."""
        ...

    def stylize(
        self,
        content: Image,
        styles: Sequence[Image],
        options: StyleOptions | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Result:
        """Run one job; `should_stop` ends it with `Cancelled`."""
        ...


__all__ = ["Engine", "ProgressCallback", "StopCallback"]
