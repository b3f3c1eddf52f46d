"""One unit of work that streams subscribe to: runs the engine on a worker, fans events out.

The worker never touches an RPC: it publishes events to the job, which keeps the current state
(queue position, started, latest progress, final outcome) and copies each event into every
subscriber's coalescing mailbox. A subscriber that joins late gets the current state first. The
engine polls `should_stop` before every evaluation, so a stop takes effect within one evaluation.
Every path out of a job (result, failure, stop, drop) goes through `_complete`, once: it releases
the pixel reservation and reports the job done, so nothing leaks whatever raises where.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from styletx import Progress
from styletx.errors import Cancelled
from styletx.geometry import output_size
from styletx.images import encode_image
from styletx.protocol import Engine
from styletx.tracing import child
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors import statuses
from styletx_server.errors.statuses import ErrorStatus, StopReason
from styletx_server.intake.convert import (
    duration,
    format_to_proto,
    losses_to_proto,
    options_to_proto,
)
from styletx_server.intake.decode import JobSpec
from styletx_server.intake.inspection import Inspection
from styletx_server.jobs.mailbox import Final, Mailbox
from styletx_server.observe.logs import log_event
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.observe.tracing import JobTrace
from styletx_server.scheduling.admission import Throughput
from styletx_server.scheduling.budget import Reservation
from styletx_server.security.tenants import DEFAULT, Tenant

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class JobSnapshot:
    """A job's latest events and outcome, read together (what GetJob describes)."""

    queued: pb.StylizeResponse | None
    started: pb.StylizeResponse | None
    progress: pb.StylizeResponse | None
    final: Final | None
    stop: StopReason | None


class StylizeJob:
    """Implements admission.Job; created by the first call of a request, attached to by others."""

    def __init__(
        self,
        *,
        request_id: str,
        key: str | None,
        digest: bytes | None,
        inspection: Inspection,
        reservation: Reservation,
        engine: Engine,
        metrics: ServerMetrics,
        throughput: Throughput,
        shutting_down: Callable[[], bool] = lambda: False,
        on_done: Callable[[StylizeJob, Final], None],
        tenant: Tenant = DEFAULT,
    ) -> None:
        self.request_id = request_id
        self.key = key
        #: Whose job it is (admission.Job): its share of the queue, and who may see it by key.
        self.tenant = tenant
        #: The key the registry files it under: keys are per tenant.
        self.registry_key = None if key is None else scoped_key(tenant.name, key)
        self.digest = digest
        self.inspection = inspection
        self.times = JobTimes()
        #: The creating call's trace context and the job's queue_wait span.
        self.trace = JobTrace()
        self.stats: JobStats | None = None
        self.spec: JobSpec | None = None
        #: ("WxH" of the content, ["WxH" of each style]) once decoded, for the request log.
        self.input_sizes: tuple[str, list[str]] | None = None
        self._shutting_down = shutting_down
        self._reservation = reservation
        self._engine = engine
        self._metrics = metrics
        self._throughput = throughput
        self._on_done = on_done
        self._lock = threading.Lock()
        self._subscribers: list[Mailbox] = []
        self._queued: pb.StylizeResponse | None = None
        self._started: pb.StylizeResponse | None = None
        self._progress: pb.StylizeResponse | None = None
        self._final: Final | None = None
        self._stop: StopReason | None = None
        self._evaluations = 0
        # Progress counters already added to the metrics (progress is cumulative per job).
        self._counted_iterations = 0
        self._counted_evaluations = 0
        #: The precision the job runs at, known when it starts (a label of its metrics).
        self._precision = ""
        #: Timer that cancels a keyed job nobody watches any more (owned by the servicer).
        self.linger: asyncio.TimerHandle | None = None

    # -- subscribers -------------------------------------------------------------------------

    def subscribe(self, mailbox: Mailbox) -> None:
        """Add a stream: it first gets the current state (or the outcome), then what follows."""
        with self._lock:
            if self._final is not None:
                mailbox.put(self._final)
                return
            if self._started is None:
                if self._queued is not None:
                    mailbox.put(self._queued)
            else:
                mailbox.put(self._started)
                if self._progress is not None:
                    mailbox.put(self._progress)
            self._subscribers.append(mailbox)

    def unsubscribe(self, mailbox: Mailbox) -> int:
        """Remove a stream; returns how many are left."""
        with self._lock:
            if mailbox in self._subscribers:
                self._subscribers.remove(mailbox)
            return len(self._subscribers)

    def snapshot(self) -> JobSnapshot:
        """The latest queue position, start, progress and outcome, consistent with each other."""
        with self._lock:
            return JobSnapshot(self._queued, self._started, self._progress, self._final, self._stop)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def _publish(self, response: pb.StylizeResponse) -> None:
        with self._lock:
            if self._final is not None:
                return
            kind = response.WhichOneof("event")
            if kind == "queued":
                self._queued = response
            elif kind == "started":
                self._started = response
            elif kind == "progress":
                self._progress = response
            for mailbox in self._subscribers:
                mailbox.put(response)

    def _complete(self, final: Final) -> bool:
        """End the job with `final` (first call wins): release everything, file it, then tell
        every stream, so that a caller told of the end finds the job filed and its pixels free.
        A stream that subscribes meanwhile sees `_final` and gets it from `subscribe`."""
        with self._lock:
            if self._final is not None:
                return False
            self._final = final
            subscribers, self._subscribers = self._subscribers, []
        self.spec = None  # the decoded images are no longer needed
        self.trace.dequeued()
        self._reservation.release()
        try:
            self._on_done(self, final)
        except Exception as exc:  # bookkeeping must not keep the job from ending
            log_event(log, "job_done_hook_failed", level=logging.ERROR, exc_info=exc)
        for mailbox in subscribers:
            mailbox.put(final)
        return True

    @property
    def final(self) -> Final | None:
        with self._lock:
            return self._final

    # -- stopping ------------------------------------------------------------------------------

    def stop(self, reason: StopReason) -> None:
        """Ask the job to stop (the first reason wins); the engine sees it within one evaluation."""
        with self._lock:
            if self._stop is None:
                self._stop = reason

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the job must stop, or None to carry on (a hurried shutdown stops every job)."""
        if self._stop is None and self._shutting_down():
            return StopReason.SHUTDOWN
        return self._stop

    def should_stop(self) -> bool:
        """The engine's cancellation hook, polled before every evaluation."""
        return self.stop_reason is not None

    def fail(self, status: ErrorStatus) -> bool:
        """End the job with an error status (before it ran: decode failure, drain refusal)."""
        return self._complete(Final(status=status))

    # -- admission.Job ---------------------------------------------------------------------------

    @property
    def abandoned(self) -> bool:
        return self.stop_reason is not None or self._final is not None

    @property
    def ready(self) -> bool:
        return self.spec is not None

    def set_spec(self, spec: JobSpec) -> None:
        """The decoded request: the job can run."""
        self.spec = spec

    def on_position(self, position: int) -> None:
        self._publish(
            pb.StylizeResponse(queued=pb.QueuedEvent(position=position, request_id=self.request_id))
        )

    def on_dropped(self) -> None:
        self._complete(Final(status=statuses.for_stop(self.stop_reason or StopReason.SHUTDOWN)))

    # -- estimates (drain planning) ---------------------------------------------------------------

    def estimated_seconds(self) -> float:
        """Predicted duration of the whole job from the server's measured throughput."""
        options = self.inspection.options
        return self._throughput.estimate(options.max_evaluations, self.inspection.output_pixels)

    def remaining_seconds(self) -> float:
        """Predicted time left of a running job, from its own pace when it has one."""
        started = self.times.started
        evaluations = self._evaluations
        total = self.inspection.options.max_evaluations
        if started is None or evaluations <= 0:
            return self.estimated_seconds()
        elapsed = time.monotonic() - started
        return elapsed / evaluations * max(0, total - evaluations)

    # -- the work, on a worker thread -----------------------------------------------------------

    def run(self) -> None:
        with self.trace.running():
            self._guarded()

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # anything at all: the streams still end, with INTERNAL
            self._finish_compute()
            status = statuses.for_exception(exc, self.request_id)
            if status.reason is statuses.Reason.INTERNAL:
                log_event(
                    log,
                    "job_failed",
                    level=logging.ERROR,
                    exc_info=exc,
                    request_id=self.request_id,
                    code=status.code.name,
                )
            self._complete(Final(status=status))

    def _run(self) -> None:
        spec = self.spec
        if spec is None or self.stop_reason is not None:
            self._complete(Final(status=statuses.for_stop(self.stop_reason or StopReason.SHUTDOWN)))
            return
        times = self.times
        times.started = time.monotonic()
        times.queue_seconds = times.started - times.admitted
        self._metrics.queue_wait.observe(times.queue_seconds)
        height, width = output_size(spec.content.shape[0], spec.content.shape[1], spec.options.size)
        backend, device = self._engine.backend, self._engine.device
        # `auto` resolves per device and job.
        precision = self._precision = self._engine.precision_for(spec.options)
        self._publish(
            pb.StylizeResponse(
                started=pb.StartedEvent(
                    options=options_to_proto(spec.options),
                    width=width,
                    height=height,
                    queue_time=duration(times.queue_seconds),
                    request_id=self.request_id,
                    backend=backend,
                    precision=precision,
                    device=device,
                )
            )
        )
        try:
            result = self._engine.stylize(
                spec.content,
                spec.styles,
                spec.options,
                on_progress=self._on_progress,
                should_stop=self.should_stop,
            )
        except Cancelled:
            self._finish_compute()
            self._complete(Final(status=statuses.for_stop(self.stop_reason or StopReason.SHUTDOWN)))
            return
        with child("encode"):
            data = encode_image(result.image, spec.output_format, quality=spec.output_quality)
        self._finish_compute()
        self._count(result.iterations, result.evaluations)
        out_h, out_w = result.image.shape[:2]
        self._metrics.image_pixels.labels(role="output").observe(out_h * out_w)
        self.stats = JobStats(f"{out_w}x{out_h}", result.iterations, result.evaluations)
        response = pb.StylizeResponse(
            result=pb.ResultEvent(
                image=pb.EncodedImage(
                    data=data, format=format_to_proto(spec.output_format), width=out_w, height=out_h
                ),
                losses=losses_to_proto(result.losses),
                iterations=result.iterations,
                evaluations=result.evaluations,
                queue_time=duration(times.queue_seconds),
                compute_time=duration(times.compute_seconds),
                request_id=self.request_id,
            )
        )
        self._complete(
            Final(
                response=response,
                pixels=result.image,
                encoding=(spec.output_format, spec.output_quality),
            )
        )

    def _finish_compute(self) -> None:
        if self.times.started is None or self.times.compute_seconds:
            return
        self.times.compute_seconds = time.monotonic() - self.times.started
        self._metrics.compute_duration.observe(self.times.compute_seconds)

    def _count(self, iterations: int, evaluations: int) -> None:
        self._metrics.lbfgs_iterations.inc(max(0, iterations - self._counted_iterations))
        self._metrics.lbfgs_evaluations.labels(tenant=self.tenant.name).inc(
            max(0, evaluations - self._counted_evaluations)
        )
        self._counted_iterations = max(self._counted_iterations, iterations)
        self._counted_evaluations = max(self._counted_evaluations, evaluations)

    def _on_progress(self, progress: Progress) -> None:
        spec = self.spec
        assert spec is not None
        self._evaluations = progress.evaluations
        self._count(progress.iteration, progress.evaluations)
        pixels = self.inspection.output_pixels
        for seconds in progress.evaluation_seconds:
            self._metrics.evaluation_duration.labels(precision=self._precision).observe(seconds)
            self._throughput.observe(seconds, pixels)
        event = pb.ProgressEvent(
            iteration=progress.iteration,
            evaluations=progress.evaluations,
            max_evaluations=spec.options.max_evaluations,
            losses=losses_to_proto(progress.losses),
            elapsed=duration(progress.elapsed_seconds),
            scale=progress.scale,
        )
        if progress.preview is not None:
            h, w = progress.preview.shape[:2]
            event.preview.CopyFrom(
                pb.EncodedImage(
                    data=encode_image(
                        progress.preview, spec.output_format, quality=spec.output_quality
                    ),
                    format=format_to_proto(spec.output_format),
                    width=w,
                    height=h,
                )
            )
        self._publish(pb.StylizeResponse(progress=event))


def scoped_key(tenant: str, key: str) -> str:
    """A request key as the registry files it: tenant names hold no `/`, keys hold none either,
    so two tenants' equal keys never meet."""
    return f"{tenant}/{key}"


__all__ = ["JobSnapshot", "JobStats", "JobTimes", "StylizeJob", "scoped_key"]
