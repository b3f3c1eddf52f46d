"""Engines for server tests: a stub that runs nothing, and a wrapper around the real engine.

Both implement `styletx.protocol.Engine` in full, so the server sees what it would in production;
tests subclass them and change only the member they are about.
"""

from __future__ import annotations

from collections.abc import Sequence

from styletx.batcher import BatchStats
from styletx.engine import Stylizer
from styletx.options import StyleOptions
from styletx.protocol import ProgressCallback, StopCallback
from styletx.result import Image, Result


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
    """The real engine with every member passed through; subclasses change one of them."""

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
        return self.engine.stylize(content, styles, options, on_progress, should_stop)
