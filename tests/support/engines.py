"""Engines for server tests: a stub that runs nothing, and a wrapper around the real engine.

Both implement `styletx.protocol.Engine` in full, so the server sees what it would in production;
tests subclass them and change only the member they are about. A test that changes the jobs of
the real engine overrides one of `WrappedEngine`'s two job hooks, `job_starting` and
`job_progress`, instead of copying `stylize`.
"""

from __future__ import annotations

from collections.abc import Sequence

from styletx.batcher import BatchStats
from styletx.engine import Stylizer
from styletx.options import StyleOptions
from styletx.protocol import ProgressCallback, StopCallback
from styletx.result import Image, Progress, Result


class StubEngine:
    """A CPU-like engine that runs no job: every figure empty or zero."""

    backend = "tensorflow"
    precision = "float32"
    device = "CPU:0"
    batch_window = 0.0

    @property
    def batch_stats(self) -> BatchStats:
        return BatchStats(0, 0, 0)

    def precision_for(self, options: StyleOptions) -> str:
        return self.precision

    def check_fits(
        self, content: tuple[int, int], styles: Sequence[tuple[int, int]], options: StyleOptions
    ) -> int:
        return content[0] * content[1]

    def memory_info(self) -> dict[str, int]:
        return {}

    def memory_capacity(self) -> dict[str, int]:
        return {}

    def warmup(self, size: int = 64) -> None:
        pass

    def stylize(
        self,
        content: Image,
        styles: Sequence[Image],
        options: StyleOptions | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Result:
        raise NotImplementedError("a StubEngine runs no job")


class WrappedEngine:
    """The real engine with every member passed through; subclasses change one of them.

    `stylize` calls two hooks, which pass everything through unless a subclass overrides them:
    `job_starting` as each job starts (it may change the options the engine runs), and
    `job_progress` on each of the job's progress events, after the caller's own callback (it
    may hold the job, or raise to fail it from inside the optimisation).
    """

    def __init__(self, engine: Stylizer) -> None:
        self.engine = engine

    @property
    def backend(self) -> str:
        return self.engine.backend

    @property
    def precision(self) -> str:
        return self.engine.precision

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def batch_window(self) -> float:
        return self.engine.batch_window

    @property
    def batch_stats(self) -> BatchStats:
        return self.engine.batch_stats

    @property
    def evaluations_total(self) -> int:
        return self.engine.evaluations_total

    def precision_for(self, options: StyleOptions) -> str:
        return self.engine.precision_for(options)

    def check_fits(
        self, content: tuple[int, int], styles: Sequence[tuple[int, int]], options: StyleOptions
    ) -> int:
        return self.engine.check_fits(content, styles, options)

    def memory_info(self) -> dict[str, int]:
        return self.engine.memory_info()

    def memory_capacity(self) -> dict[str, int]:
        return self.engine.memory_capacity()

    def warmup(self, size: int = 64) -> None:
        self.engine.warmup(size)

    def stylize(
        self,
        content: Image,
        styles: Sequence[Image],
        options: StyleOptions | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Result:
        options = self.job_starting(options)
        first = True

        def progress(event: Progress) -> None:
            nonlocal first
            if on_progress is not None:
                on_progress(event)
            is_first, first = first, False
            self.job_progress(event, is_first, should_stop)

        return self.engine.stylize(content, styles, options, progress, should_stop)

    def job_starting(self, options: StyleOptions | None) -> StyleOptions | None:
        """Called as each job starts, before the engine sees it: the options it runs with."""
        return options

    def job_progress(self, event: Progress, first: bool, should_stop: StopCallback | None) -> None:
        """Called on each progress event of a job, after the caller's `on_progress`; `first`:
        the job's first event (once the caller's callback returned). An exception raised here
        ends the job as one raised by the engine would; `should_stop` is the job's own."""
