"""One Stylize call's bookkeeping: its record (request log line and metrics), how it ended on the
caller's side, and writes that notice a caller who left or stopped reading.

The servicer decides what a call does; this module keeps what is true of every call whatever it
did, so that each call is counted and logged exactly once with the code it really ended with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors import statuses
from styletx_server.errors.refusals import InvalidRequest, Refused
from styletx_server.errors.statuses import ErrorStatus, Reason, StopReason
from styletx_server.jobs.job import StylizeJob
from styletx_server.observe.logs import caller_text, log_event, request_id_from
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.security.tenants import DEFAULT, DEFAULT_NAME, Tenant

log = logging.getLogger(__name__)

#: The gRPC method a record names unless told another (the RPC that starts jobs).
METHOD = "Stylize"
#: A call that ends this close to its deadline ended because of it (clocks differ slightly).
_DEADLINE_SLACK_SECONDS = 0.05
#: A reader slower than this on average is as good as stalled: a message of n bytes gets
#: `--stall-timeout` + n / this seconds to be accepted (a 3 MiB result: 48 s more).
STALL_MIN_BYTES_PER_SECOND = 64 * 1024
#: After a write failed, how long the handler waits for gRPC to cancel it (which it does once it
#: has seen the call end) rather than try to send a status into a call that is gone.
_LET_GO_SECONDS = 5.0

#: Stalled calls' status sends (`end_stalled`), referenced until gRPC lets go of their streams.
_STALLED_STREAMS: set[asyncio.Future[None]] = set()

#: The server side of a Stylize call.
Context = grpc.aio.ServicerContext[pb.StylizeRequest, pb.StylizeResponse]
#: The server side of any call of the service (the job RPCs have their own message types).
AnyContext = grpc.aio.ServicerContext[Any, Any]


@dataclass
class Call:
    """What the request log line and the metrics say about one call."""

    request_id: str
    peer: str
    arrived: float
    code: grpc.StatusCode | None = None
    reason: Reason | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    #: The request line was written (once, whoever writes it first).
    recorded: bool = False
    #: The RPC, as the request line and the `method` label of the metrics name it.
    method: str = METHOD
    #: Whose call it is (the default tenant until the caller is identified).
    tenant: Tenant = DEFAULT

    def ended_by_caller(self, context: AnyContext) -> StopReason:
        """Mark the call as ended on the caller's side (unless it already has a code) and say
        how: its deadline, or a cancellation."""
        reason = ended_by_caller(context)
        if self.code is None:
            self.code, self.reason = _CODES[reason]
        return reason

    def refused(self, refusal: Refused) -> None:
        """Note what the request line says of a refusal beyond its status."""
        if isinstance(refusal, InvalidRequest):
            self.fields["violations"] = [v.field for v in refusal.violations]

    def add_job(self, job: StylizeJob) -> None:
        """Note the job's queue and compute times, sizes and work (the call followed it)."""
        self.fields["queue_seconds"] = round(job.times.queue_seconds, 6)
        self.fields["compute_seconds"] = round(job.times.compute_seconds, 6)
        if job.input_sizes is not None:
            self.fields["content_size"], self.fields["style_sizes"] = job.input_sizes
        if job.stats is not None:
            self.fields["output_size"] = job.stats.output_size
            self.fields["iterations"] = job.stats.iterations
            self.fields["evaluations"] = job.stats.evaluations
        if job.request_id != self.request_id:
            self.fields["job_request_id"] = job.request_id

    def record(self, metrics: ServerMetrics) -> None:
        """Count the call and write its request line, once."""
        if self.recorded:
            return
        self.recorded = True
        code = self.code or grpc.StatusCode.CANCELLED
        reason = statuses.reason_label(code, self.reason)
        elapsed = time.monotonic() - self.arrived
        metrics.requests.labels(
            method=self.method, code=code.name, reason=reason, tenant=self.tenant.name
        ).inc()
        metrics.request_duration.labels(method=self.method, code=code.name).observe(elapsed)
        log_event(
            log,
            "request",
            request_id=self.request_id,
            method=self.method,
            peer=self.peer,
            tenant=self.tenant.name,
            code=code.name,
            reason=reason,
            duration_seconds=round(elapsed, 6),
            **self.fields,
        )


def record_unauthenticated(metrics: ServerMetrics, method: str, metadata: Any) -> None:
    """Count and log a call the auth interceptor refused (it never reaches the servicer); its
    user agent, the caller's text, capped (`logs.caller_text`)."""
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = statuses.reason_label(code, Reason.UNAUTHENTICATED)
    metrics.requests.labels(method=method, code=code.name, reason=reason, tenant=DEFAULT_NAME).inc()
    user_agent = next((caller_text(v) for k, v in metadata or () if k == "user-agent"), "")
    log_event(
        log,
        "request",
        request_id=request_id_from(metadata),
        method=method,
        code=code.name,
        reason=reason,
        user_agent=user_agent,
    )


def ended_by_caller(context: AnyContext) -> StopReason:
    """Why a call ended on the caller's side: its deadline, or a cancellation."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= _DEADLINE_SLACK_SECONDS:
        return StopReason.DEADLINE_EXCEEDED
    return StopReason.CLIENT_CANCELLED


_CODES = {
    StopReason.DEADLINE_EXCEEDED: (grpc.StatusCode.DEADLINE_EXCEEDED, Reason.DEADLINE_EXCEEDED),
    StopReason.CLIENT_CANCELLED: (grpc.StatusCode.CANCELLED, Reason.CANCELLED),
}


class CallerGone(Exception):
    """A write failed because the call is over on the caller's side (cancelled, deadline,
    connection lost): nothing went wrong here."""


class ReaderStalled(Exception):
    """The caller accepted no bytes of a message for `seconds`; `write` is still pending (gRPC
    holds the message until the reader takes it or the stream ends), `end_stalled` ends the call."""

    def __init__(self, write: asyncio.Future[None], seconds: float) -> None:
        super().__init__(f"the reader accepted nothing for {seconds:.1f} s")
        self.write = write
        self.seconds = seconds


async def write(context: AnyContext, message: Message, stall_timeout: float) -> None:
    """Send one message: CallerGone when the call is over on the caller's side, ReaderStalled
    when the reader accepts none of it within `stall_timeout` (0: wait for ever) plus the time
    its size needs at the slowest acceptable rate."""
    pending: asyncio.Future[None] = asyncio.ensure_future(context.write(message))
    pending.add_done_callback(_retrieve)
    try:
        if stall_timeout > 0:
            limit = stall_timeout + message.ByteSize() / STALL_MIN_BYTES_PER_SECOND
            done, _ = await asyncio.wait({pending}, timeout=limit)
            if not done:
                raise ReaderStalled(pending, limit)
        else:
            await asyncio.wait({pending})
        pending.result()
    except asyncio.CancelledError:
        pending.cancel()
        raise
    except grpc.aio.BaseError as exc:  # the call ended under the write
        raise CallerGone(str(exc)) from None


async def abort(
    context: AnyContext, call: Call, status: ErrorStatus, metrics: ServerMetrics
) -> None:
    """End the call with `status` now (raises grpc.aio.AbortError out of the handler),
    recorded first: the caller may act on the status before the handler unwinds."""
    call.code, call.reason = status.code, status.reason
    call.record(metrics)
    # grpc.aio has it (grpc/aio/_base_server.py); the types-grpcio stubs do not list it yet.
    await context.abort_with_status(status)  # type: ignore[attr-defined]


async def end_stalled(
    context: AnyContext, status: ErrorStatus, released: Callable[[], None]
) -> None:
    """End a stalled call from the server's side without waiting for its reader: `status` is
    queued behind the message the reader does not take (a reader that comes back gets both),
    and gRPC counts the call as aborted, so that its handler may return at once and nothing of
    it stays parked. gRPC itself keeps the HTTP/2 stream (and the message) until the status goes
    out or the stream or its connection closes: `released()` is called then."""
    sent = asyncio.ensure_future(_send_status(context, status))
    _STALLED_STREAMS.add(sent)
    sent.add_done_callback(_STALLED_STREAMS.discard)
    sent.add_done_callback(lambda _: released())
    # The abort marks the call aborted before it waits for the status to go out: until then a
    # handler that returned would have gRPC send a status of its own.
    while not context.done() and not sent.done():
        await asyncio.sleep(0)


async def _send_status(context: AnyContext, status: ErrorStatus) -> None:
    # The abort marks the call as ended (context.done()) before it waits for the status to go
    # out; it raises AbortError once it went out, another gRPC error when the stream closed first.
    with contextlib.suppress(grpc.aio.BaseError):
        await context.abort_with_status(status)  # type: ignore[attr-defined]


async def let_go() -> None:
    """Wait (a bounded while) for gRPC to cancel a handler whose call is gone, so that it does
    not try to send a status into a finished call (which gRPC logs with a traceback)."""
    await asyncio.sleep(_LET_GO_SECONDS)


def _retrieve(pending: asyncio.Future[None]) -> None:
    """Consume a write's outcome nobody awaits any more (no "exception never retrieved")."""
    if not pending.cancelled():
        pending.exception()


__all__ = [
    "METHOD",
    "STALL_MIN_BYTES_PER_SECOND",
    "AnyContext",
    "Call",
    "CallerGone",
    "Context",
    "ReaderStalled",
    "abort",
    "end_stalled",
    "ended_by_caller",
    "let_go",
    "record_unauthenticated",
    "write",
]
