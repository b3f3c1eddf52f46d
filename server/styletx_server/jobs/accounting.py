"""A job's accounting: its times, what it computed, the metrics it adds, and how long it is
expected to take (for drain planning and retry hints)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from styletx import Progress
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.scheduling.admission import Throughput


@dataclass
class JobTimes:
    """Monotonic timestamps and durations of one job, for the result, metrics and logs."""

    admitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    queue_seconds: float = 0.0
    compute_seconds: float = 0.0


@dataclass(frozen=True)
class JobStats:
    """What the request log says about a finished job."""

    output_size: str
    iterations: int
    evaluations: int


class JobAccounting:
    """Times, counters and estimates of one job; its metrics are added once each, as the job
    goes (progress is cumulative, so only the increase since the last report counts)."""

    def __init__(
        self,
        metrics: ServerMetrics,
        throughput: Throughput,
        *,
        tenant: str,
        max_evaluations: int,
        output_pixels: int,
    ) -> None:
        self.times = JobTimes()
        self.stats: JobStats | None = None
        #: ("WxH" of the content, ["WxH" of each style]) once decoded, for the request log.
        self.input_sizes: tuple[str, list[str]] | None = None
        #: The precision the job runs at, known when it starts (a label of its metrics).
        self.precision = ""
        self._metrics = metrics
        self._throughput = throughput
        self._tenant = tenant
        self._max_evaluations = max_evaluations
        self._output_pixels = output_pixels
        self._evaluations = 0
        self._counted_iterations = 0
        self._counted_evaluations = 0

    def decoded(self, content: tuple[int, ...], styles: list[tuple[int, ...]]) -> None:
        """The request's images are decoded: their sizes, for the log and the pixel histogram."""
        pixels = self._metrics.image_pixels
        pixels.labels(role="content").observe(content[0] * content[1])
        for style in styles:
            pixels.labels(role="style").observe(style[0] * style[1])
        self.input_sizes = (_size(content), [_size(style) for style in styles])

    def started(self) -> float:
        """The job leaves the queue for a worker; returns its queue time."""
        times = self.times
        times.started = time.monotonic()
        times.queue_seconds = times.started - times.admitted
        self._metrics.queue_wait.observe(times.queue_seconds)
        return times.queue_seconds

    def progressed(self, progress: Progress) -> None:
        self._evaluations = progress.evaluations
        self._count(progress.iteration, progress.evaluations)
        for seconds in progress.evaluation_seconds:
            self._metrics.evaluation_duration.labels(precision=self.precision).observe(seconds)
            self._throughput.observe(seconds, self._output_pixels)

    def computed(self) -> None:
        """The engine returned (or raised): the compute time, once."""
        if self.times.started is None or self.times.compute_seconds:
            return
        self.times.compute_seconds = time.monotonic() - self.times.started
        self._metrics.compute_duration.observe(self.times.compute_seconds)

    def finished(self, height: int, width: int, iterations: int, evaluations: int) -> None:
        """The result is encoded: its size and work."""
        self._count(iterations, evaluations)
        self._metrics.image_pixels.labels(role="output").observe(height * width)
        self.stats = JobStats(f"{width}x{height}", iterations, evaluations)

    def _count(self, iterations: int, evaluations: int) -> None:
        self._metrics.lbfgs_iterations.inc(max(0, iterations - self._counted_iterations))
        self._metrics.lbfgs_evaluations.labels(tenant=self._tenant).inc(
            max(0, evaluations - self._counted_evaluations)
        )
        self._counted_iterations = max(self._counted_iterations, iterations)
        self._counted_evaluations = max(self._counted_evaluations, evaluations)

    def estimated_seconds(self) -> float:
        """Predicted duration of the whole job from the server's measured throughput."""
        return self._throughput.estimate(self._max_evaluations, self._output_pixels)

    def remaining_seconds(self) -> float:
        """Predicted time left of a running job, from its own pace when it has one."""
        started = self.times.started
        evaluations = self._evaluations
        if started is None or evaluations <= 0:
            return self.estimated_seconds()
        elapsed = time.monotonic() - started
        return elapsed / evaluations * max(0, self._max_evaluations - evaluations)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


__all__ = ["JobAccounting", "JobStats", "JobTimes"]
