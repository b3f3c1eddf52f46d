"""The StyleTransferService implementation: validate, admit, relay the job's events, record.

Concurrency model: grpcio's synchronous server. Each call keeps one handler thread while it waits
in the queue and while it runs, relaying events a worker thread puts on the job's queue. The
engine is blocking, CPU/GPU-bound code driven through callbacks from the thread that runs it, so
threads hand over work with plain blocking queues; grpc.aio would only add an event-loop bridge
(call_soon_threadsafe for every progress event) without saving anything, because the number of
live Stylize calls is already bounded by admission (queue size + workers) and the handler pool is
sized for exactly that (see app.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from styletx.engine import Engine
from styletx_client.proto import style_transfer_pb2 as pb
from styletx_client.proto import style_transfer_pb2_grpc as pb_grpc
from styletx_server import statuses
from styletx_server.admission import AdmissionQueue, QueueClosedError, QueueFullError
from styletx_server.convert import InvalidRequestError, Limits, parse_request
from styletx_server.job import Failed, Finished, Send, Stopped, StylizeJob
from styletx_server.logs import REQUEST_ID_KEY, log_event, request_id_from
from styletx_server.metrics import ServerMetrics

log = logging.getLogger(__name__)

METHOD = "Stylize"
#: How often a waiting handler re-checks its call when no event arrives (a safety net: the
#: RPC-termination callback normally wakes it at once).
_POLL_SECONDS = 0.25


class Lifecycle:
    """Server-wide state the handlers and jobs consult."""

    def __init__(self) -> None:
        #: Set by the server once the model is loaded and warm.
        self.stylizer: Engine | None = None
        #: New calls are refused with UNAVAILABLE; admitted ones continue.
        self.draining = threading.Event()
        #: Every job still running or waiting must stop now (grace period over).
        self.shutting_down = threading.Event()


@dataclass
class _Outcome:
    """What the request log line and the metrics say about one call."""

    request_id: str
    peer: str
    code: grpc.StatusCode | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


class StyleTransferServicer(pb_grpc.StyleTransferServiceServicer):
    """styletx.v1.StyleTransferService on the admission queue."""

    def __init__(
        self,
        limits: Limits,
        admission: AdmissionQueue,
        metrics: ServerMetrics,
        lifecycle: Lifecycle,
    ) -> None:
        self._limits = limits
        self._admission = admission
        self._metrics = metrics
        self._lifecycle = lifecycle

    def Stylize(  # noqa: N802 (the gRPC method name)
        self, request: pb.StylizeRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StylizeResponse]:
        arrived = time.monotonic()
        request_id = request_id_from(context.invocation_metadata())
        context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        outcome = _Outcome(request_id=request_id, peer=context.peer())
        try:
            yield from self._stylize(request, context, outcome, arrived)
        finally:
            # A generator closed by grpc (the caller went away) never set a code itself.
            self._record(outcome, outcome.code or grpc.StatusCode.CANCELLED, arrived)

    def _abort(self, context: grpc.ServicerContext, outcome: _Outcome, status: grpc.Status) -> None:
        outcome.code = status.code
        if context.is_active():
            context.abort_with_status(status)

    def _stylize(
        self,
        request: pb.StylizeRequest,
        context: grpc.ServicerContext,
        outcome: _Outcome,
        arrived: float,
    ) -> Iterator[pb.StylizeResponse]:
        stylizer = self._lifecycle.stylizer
        if self._lifecycle.draining.is_set():
            self._abort(context, outcome, statuses.unavailable("server is draining"))
            return
        if stylizer is None:
            self._abort(context, outcome, statuses.unavailable("model is loading"))
            return
        try:
            spec = parse_request(request, self._limits)
        except InvalidRequestError as exc:
            outcome.fields["violations"] = [v.field for v in exc.violations]
            self._abort(context, outcome, statuses.invalid_argument(exc.violations))
            return
        self._observe_inputs(spec.content.shape, [s.shape for s in spec.styles], outcome)
        remaining = context.time_remaining()
        job = StylizeJob(
            spec,
            stylizer,
            outcome.request_id,
            self._metrics,
            deadline=None if remaining is None else time.monotonic() + remaining,
            shutting_down=self._lifecycle.shutting_down.is_set,
        )
        if not context.add_callback(lambda: self._on_call_end(job)):
            outcome.code = grpc.StatusCode.CANCELLED
            return
        try:
            self._admission.submit(job)
        except QueueFullError as exc:
            self._abort(
                context,
                outcome,
                statuses.resource_exhausted(
                    f"server busy: all {exc.capacity} queue slots taken; retry later",
                    exc.retry_after,
                ),
            )
            return
        except QueueClosedError:
            self._abort(context, outcome, statuses.unavailable("server is draining"))
            return
        first_progress = True
        while True:
            try:
                event = job.events.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                # Normally the termination callback withdraws a dead call's job; this covers
                # a deadline that passes without one.
                if job.should_stop():
                    self._admission.withdraw(job)
                continue
            if isinstance(event, Send):
                if first_progress and event.response.HasField("progress"):
                    first_progress = False
                    self._metrics.time_to_first_progress.observe(time.monotonic() - arrived)
                yield event.response
            elif isinstance(event, Finished):
                self._job_fields(job, outcome)
                yield event.response
                outcome.code = grpc.StatusCode.OK
                return
            elif isinstance(event, Stopped):
                self._job_fields(job, outcome)
                outcome.fields["stopped"] = event.reason.value
                outcome.fields["started"] = event.started
                self._abort(context, outcome, statuses.for_stop(event.reason))
                return
            elif isinstance(event, Failed):
                self._job_fields(job, outcome)
                status = statuses.for_exception(event.error, outcome.request_id)
                log_event(
                    log,
                    "job_failed",
                    level=logging.ERROR,
                    exc_info=event.error,
                    request_id=outcome.request_id,
                    code=status.code.name,
                )
                self._abort(context, outcome, status)
                return

    def _on_call_end(self, job: StylizeJob) -> None:
        """The RPC terminated (done, cancelled or deadline): stop or withdraw its job."""
        job.cancel()
        self._admission.withdraw(job)

    def _observe_inputs(
        self,
        content: tuple[int, ...],
        styles: list[tuple[int, ...]],
        outcome: _Outcome,
    ) -> None:
        pixels = self._metrics.image_pixels
        pixels.labels(role="content").observe(content[0] * content[1])
        for shape in styles:
            pixels.labels(role="style").observe(shape[0] * shape[1])
        outcome.fields["content_size"] = _size(content)
        outcome.fields["style_sizes"] = [_size(s) for s in styles]

    @staticmethod
    def _job_fields(job: StylizeJob, outcome: _Outcome) -> None:
        outcome.fields["queue_seconds"] = round(job.times.queue_seconds, 6)
        outcome.fields["compute_seconds"] = round(job.times.compute_seconds, 6)
        if job.result is not None:
            outcome.fields["output_size"] = _size(job.result.image.shape)
            outcome.fields["iterations"] = job.result.iterations
            outcome.fields["evaluations"] = job.result.evaluations

    def _record(self, outcome: _Outcome, code: grpc.StatusCode, arrived: float) -> None:
        elapsed = time.monotonic() - arrived
        self._metrics.requests.labels(method=METHOD, code=code.name).inc()
        self._metrics.request_duration.labels(method=METHOD).observe(elapsed)
        log_event(
            log,
            "request",
            request_id=outcome.request_id,
            method=METHOD,
            peer=outcome.peer,
            code=code.name,
            duration_seconds=round(elapsed, 6),
            **outcome.fields,
        )


__all__ = ["METHOD", "Lifecycle", "StyleTransferServicer"]
