"""One admitted Stylize call as a queue job: runs the engine on a worker, streams events back.

The worker never touches the RPC: it puts ready-to-send messages (or the outcome) on the job's
own queue, and the call's handler thread sends them. `should_stop` is polled by the engine before
every evaluation, so cancellation, deadlines and shutdown stop the job within one evaluation.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from styletx import Progress, Result
from styletx.engine import Engine, Stylizer
from styletx.errors import Cancelled
from styletx.images import encode_image
from styletx_client.proto import style_transfer_pb2 as pb
from styletx_server.convert import (
    JobSpec,
    duration,
    format_to_proto,
    losses_to_proto,
    options_to_proto,
)
from styletx_server.metrics import ServerMetrics
from styletx_server.statuses import StopReason

log = logging.getLogger(__name__)

#: A call cancelled this close to its deadline counts as having hit the deadline (the server's
#: clock read the deadline slightly after the client's).
_DEADLINE_SLACK_SECONDS = 0.05


@dataclass(frozen=True)
class Send:
    """A message for the caller (queued/started/progress)."""

    response: pb.StylizeResponse


@dataclass(frozen=True)
class Finished:
    """The job succeeded; `response` carries the result event."""

    response: pb.StylizeResponse
    result: Result


@dataclass(frozen=True)
class Stopped:
    """The job stopped early (or never started) for `reason`."""

    reason: StopReason
    started: bool


@dataclass(frozen=True)
class Failed:
    """The engine or the encoder raised `error`."""

    error: Exception


@dataclass(frozen=True)
class Wake:
    """Nothing to send: the call's state changed (e.g. it was cancelled)."""


JobEvent = Send | Finished | Stopped | Failed | Wake


@dataclass
class JobTimes:
    """Monotonic timestamps and durations of one job, for the result, metrics and logs."""

    admitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    queue_seconds: float = 0.0
    compute_seconds: float = 0.0


class StylizeJob:
    """Implements admission.Job for one Stylize call."""

    def __init__(
        self,
        spec: JobSpec,
        stylizer: Engine,
        request_id: str,
        metrics: ServerMetrics,
        *,
        deadline: float | None,
        shutting_down: Callable[[], bool],
    ) -> None:
        self.spec = spec
        self.request_id = request_id
        self.events: queue.Queue[JobEvent] = queue.Queue()
        self.times = JobTimes()
        self.result: Result | None = None
        self._stylizer = stylizer
        self._metrics = metrics
        self._deadline = deadline
        self._shutting_down = shutting_down
        self._cancelled = threading.Event()
        self._last_position = 0
        # Progress counters already added to the metrics (progress is cumulative per job).
        self._counted_iterations = 0
        self._counted_evaluations = 0

    # -- state seen by the queue, the engine and the handler ---------------------------------

    def cancel(self) -> None:
        """The call ended (cancelled by the caller, deadline, or done): stop working for it."""
        self._cancelled.set()
        self.events.put(Wake())

    def stop_reason(self) -> StopReason | None:
        """Why the job must stop now, or None to carry on."""
        if self._deadline is not None:
            late = time.monotonic() - self._deadline
            if late >= 0 or (self._cancelled.is_set() and late >= -_DEADLINE_SLACK_SECONDS):
                return StopReason.DEADLINE_EXCEEDED
        if self._cancelled.is_set():
            return StopReason.CLIENT_CANCELLED
        if self._shutting_down():
            return StopReason.SHUTDOWN
        return None

    def should_stop(self) -> bool:
        """The engine's cancellation hook, polled before every evaluation."""
        return self.stop_reason() is not None

    @property
    def abandoned(self) -> bool:
        return self.should_stop()

    def seconds_to_deadline(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    # -- queue callbacks -----------------------------------------------------------------------

    def on_position(self, position: int) -> None:
        if position != self._last_position:
            self._last_position = position
            self.events.put(Send(self._queued(position)))

    def _queued(self, position: int) -> pb.StylizeResponse:
        return pb.StylizeResponse(
            queued=pb.QueuedEvent(position=position, request_id=self.request_id)
        )

    def on_dropped(self) -> None:
        self.events.put(Stopped(self.stop_reason() or StopReason.SHUTDOWN, started=False))

    # -- the work, on a worker thread ---------------------------------------------------------

    def run(self) -> None:
        times = self.times
        times.started = time.monotonic()
        times.queue_seconds = times.started - times.admitted
        self._metrics.queue_wait.observe(times.queue_seconds)
        spec = self.spec
        height, width = Stylizer.output_size(
            spec.content.shape[0], spec.content.shape[1], spec.options.size
        )
        self.events.put(
            Send(
                pb.StylizeResponse(
                    started=pb.StartedEvent(
                        options=options_to_proto(spec.options),
                        width=width,
                        height=height,
                        queue_time=duration(times.queue_seconds),
                        request_id=self.request_id,
                    )
                )
            )
        )
        try:
            result = self._stylizer.stylize(
                spec.content,
                spec.styles,
                spec.options,
                on_progress=self._on_progress,
                should_stop=self.should_stop,
            )
            data = encode_image(result.image, spec.output_format, quality=spec.output_quality)
        except Cancelled:
            self._finish_compute()
            self.events.put(Stopped(self.stop_reason() or StopReason.SHUTDOWN, started=True))
            return
        except Exception as exc:  # mapped to a status by the handler; the worker lives on
            self._finish_compute()
            self.events.put(Failed(exc))
            return
        self._finish_compute()
        self.result = result
        self._count(result.iterations, result.evaluations)
        if result.evaluations:
            per_evaluation = result.optimize_seconds / result.evaluations
            for _ in range(result.evaluations):
                self._metrics.evaluation_duration.observe(per_evaluation)
        out_h, out_w = result.image.shape[:2]
        self._metrics.image_pixels.labels(role="output").observe(out_h * out_w)
        self.events.put(
            Finished(
                pb.StylizeResponse(
                    result=pb.ResultEvent(
                        image=pb.EncodedImage(
                            data=data,
                            format=format_to_proto(spec.output_format),
                            width=out_w,
                            height=out_h,
                        ),
                        losses=losses_to_proto(result.losses),
                        iterations=result.iterations,
                        evaluations=result.evaluations,
                        queue_time=duration(times.queue_seconds),
                        compute_time=duration(times.compute_seconds),
                        request_id=self.request_id,
                    )
                ),
                result,
            )
        )

    def _finish_compute(self) -> None:
        assert self.times.started is not None
        self.times.compute_seconds = time.monotonic() - self.times.started
        self._metrics.compute_duration.observe(self.times.compute_seconds)

    def _count(self, iterations: int, evaluations: int) -> None:
        self._metrics.lbfgs_iterations.inc(max(0, iterations - self._counted_iterations))
        self._metrics.lbfgs_evaluations.inc(max(0, evaluations - self._counted_evaluations))
        self._counted_iterations = max(self._counted_iterations, iterations)
        self._counted_evaluations = max(self._counted_evaluations, evaluations)

    def _on_progress(self, progress: Progress) -> None:
        self._count(progress.iteration, progress.evaluations)
        event = pb.ProgressEvent(
            iteration=progress.iteration,
            evaluations=progress.evaluations,
            max_evaluations=self.spec.options.max_evaluations,
            losses=losses_to_proto(progress.losses),
            elapsed=duration(progress.elapsed_seconds),
            scale=progress.scale,
        )
        if progress.preview is not None:
            h, w = progress.preview.shape[:2]
            event.preview.CopyFrom(
                pb.EncodedImage(
                    data=encode_image(
                        progress.preview, self.spec.output_format, quality=self.spec.output_quality
                    ),
                    format=format_to_proto(self.spec.output_format),
                    width=w,
                    height=h,
                )
            )
        self.events.put(Send(pb.StylizeResponse(progress=event)))


__all__ = ["Failed", "Finished", "JobEvent", "JobTimes", "Send", "Stopped", "StylizeJob", "Wake"]
