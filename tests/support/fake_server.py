"""In-process fakes of StyleTransferService for the client SDK tests (no tests here).

`FakeStyleTransfer` runs the next script per call (the last one repeats), so a test can say
"UNAVAILABLE, then success" or "two events, then INVALID_ARGUMENT with field violations".
`FakeJobs` emulates the server's job registry keyed by `request_key`: a known key attaches to its
job (current state, then the rest; or the stored result at once), the same key with another
payload is refused with KEY_REUSED, and scripted `Break`s end a stream mid-way while the job
lives on, so re-attaching can be tested against a counter of computations.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

# google.rpc ships .pyi files without a py.typed marker (see errors.py).
import google.rpc.error_details_pb2 as error_details_pb2  # type: ignore[import-untyped,unused-ignore]
import google.rpc.status_pb2 as status_pb2  # type: ignore[import-untyped,unused-ignore]
import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc

Script = Callable[[pb.StylizeRequest, grpc.ServicerContext], Iterator[pb.StylizeResponse]]
SERVER_MESSAGE_BYTES = 64 * 1024 * 1024


def png_bytes(
    width: int = 8, height: int = 6, color: tuple[int, int, int] = (200, 40, 40)
) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def losses(total: float = 10.0) -> pb.Losses:
    return pb.Losses(total=total, content=total * 0.1, style=total * 0.7, tv=total * 0.2)


def queued(position: int, request_id: str = "rid") -> pb.StylizeResponse:
    return pb.StylizeResponse(queued=pb.QueuedEvent(position=position, request_id=request_id))


def started(
    width: int = 8, height: int = 6, max_evaluations: int = 4, request_id: str = "rid"
) -> pb.StylizeResponse:
    event = pb.StartedEvent(
        width=width, height=height, request_id=request_id, precision="mixed_bfloat16"
    )
    event.options.size = max(width, height)
    event.options.max_evaluations = max_evaluations
    event.options.init = pb.INIT_METHOD_CONTENT
    event.options.style_layers.extend(["block1_conv2", "block2_conv2"])
    event.queue_time.FromTimedelta(timedelta(milliseconds=250))
    return pb.StylizeResponse(started=event)


def progress(
    iteration: int, evaluations: int, max_evaluations: int = 4, preview: bytes | None = None
) -> pb.StylizeResponse:
    event = pb.ProgressEvent(
        iteration=iteration,
        evaluations=evaluations,
        max_evaluations=max_evaluations,
        losses=losses(100.0 / iteration),
    )
    event.elapsed.FromTimedelta(timedelta(seconds=0.5 * iteration))
    if preview is not None:
        event.preview.CopyFrom(
            pb.EncodedImage(data=preview, format=pb.IMAGE_FORMAT_PNG, width=8, height=6)
        )
    return pb.StylizeResponse(progress=event)


def result(
    data: bytes | None = None, width: int = 8, height: int = 6, request_id: str = "rid"
) -> pb.StylizeResponse:
    event = pb.ResultEvent(
        image=pb.EncodedImage(
            data=data if data is not None else png_bytes(width, height),
            format=pb.IMAGE_FORMAT_PNG,
            width=width,
            height=height,
        ),
        losses=losses(5.0),
        iterations=3,
        evaluations=4,
        request_id=request_id,
    )
    event.queue_time.FromTimedelta(timedelta(milliseconds=250))
    event.compute_time.FromTimedelta(timedelta(seconds=1.5))
    return pb.StylizeResponse(result=event)


def happy_events() -> list[pb.StylizeResponse]:
    """A complete successful stream: queued twice, started, two iterations, result."""
    return [queued(2), queued(1), started(), progress(1, 2), progress(2, 4), result()]


def respond(*messages: pb.StylizeResponse) -> Script:
    def run(
        request: pb.StylizeRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StylizeResponse]:
        yield from messages

    return run


class _Status(grpc.Status):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, str | bytes]]
    ):
        self.code = code
        self.details = details
        self.trailing_metadata = tuple(trailing)


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromTimedelta(timedelta(seconds=seconds))
    return info


def bad_request(*violations: tuple[str, str]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )


ERROR_DOMAIN = "styletx.v1"


def error_info(reason: str, domain: str = ERROR_DOMAIN) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=domain)


def abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    *details: Message,
    request_id: str | None = None,
) -> None:
    """End the call with `code` and google.rpc details in the trailers (raises)."""
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    trailing: list[tuple[str, str | bytes]] = [
        ("grpc-status-details-bin", status.SerializeToString())
    ]
    if request_id is not None:
        trailing.append(("x-request-id", request_id))
    context.abort_with_status(_Status(code, message, trailing))


def fail(
    code: grpc.StatusCode,
    message: str,
    *details: Message,
    before: Sequence[pb.StylizeResponse] = (),
    request_id: str | None = None,
) -> Script:
    """Send `before`, then end the stream with `code` and google.rpc details in the trailers."""

    def run(
        request: pb.StylizeRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StylizeResponse]:
        yield from before
        abort(context, code, message, *details, request_id=request_id)

    return run


def slow(interval: float = 0.02, limit: float = 30.0) -> Script:
    """Started, then progress every `interval` until the client goes away (or `limit` passes)."""

    def run(
        request: pb.StylizeRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StylizeResponse]:
        yield started(max_evaluations=1_000_000)
        deadline = time.monotonic() + limit
        iteration = 0
        while context.is_active() and time.monotonic() < deadline:
            iteration += 1
            yield progress(iteration, iteration, 1_000_000)
            time.sleep(interval)

    return run


@dataclass
class CallRecord:
    """What the fake saw of one call."""

    request: pb.StylizeRequest
    metadata: dict[str, str]
    time_remaining: float | None
    ended: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)


class FakeStyleTransfer(pb_grpc.StyleTransferServiceServicer):
    """Runs one script per call, in order; records every call."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts) or [respond(*happy_events())]
        self.calls: list[CallRecord] = []
        self._lock = threading.Lock()

    def Stylize(  # noqa: N802 (generated name)
        self, request: pb.StylizeRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StylizeResponse]:
        remaining = context.time_remaining()
        record = CallRecord(
            request=request,
            metadata={k: v for k, v in context.invocation_metadata() if isinstance(v, str)},
            time_remaining=remaining if remaining is not None and remaining < 1e6 else None,
        )

        def on_done() -> None:
            if context.is_active() is False and not record.ended.is_set():
                record.cancelled.set()

        context.add_callback(on_done)
        with self._lock:
            self.calls.append(record)
            script = self.scripts[min(len(self.calls), len(self.scripts)) - 1]
        try:
            yield from script(request, context)
        finally:
            if not context.is_active():
                record.cancelled.set()
            record.ended.set()


def long_events(iterations: int = 6) -> list[pb.StylizeResponse]:
    """A successful stream with many progress events: queued, started, `iterations`, result."""
    steps = [progress(i, 2 * i, 2 * iterations) for i in range(1, iterations + 1)]
    return [queued(1), started(max_evaluations=2 * iterations), *steps, result()]


@dataclass
class Break:
    """End a job's stream once the job has produced `after` events; the job lives on.

    `code` None holds the stream open, producing nothing, until the client goes away (so a test
    can cut the connection); otherwise the call ends with `code` and an ErrorInfo of `reason`.
    """

    after: int
    code: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE
    reason: str | None = None
    reached: threading.Event = field(default_factory=threading.Event)


@dataclass
class FakeJob:
    """One job of `FakeJobs`: the request it computes and the events produced so far."""

    key: str
    payload: bytes
    produced: list[pb.StylizeResponse] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return bool(self.produced) and self.produced[-1].HasField("result")

    def current_state(self) -> list[pb.StylizeResponse]:
        """What an attaching call gets first: the stored result, or the latest of each kind."""
        if self.done:
            return [self.produced[-1]]
        latest: dict[str, pb.StylizeResponse] = {}
        for message in self.produced:
            latest[message.WhichOneof("event") or ""] = message
        if "started" in latest:
            return [latest[k] for k in ("started", "progress") if k in latest]
        return [latest[k] for k in ("queued",) if k in latest]


def _payload(request: pb.StylizeRequest) -> bytes:
    copy = pb.StylizeRequest()
    copy.CopyFrom(request)
    copy.request_key = ""
    return bytes(copy.SerializeToString(deterministic=True))


class FakeJobs(pb_grpc.StyleTransferServiceServicer):
    """A servicer with the server's job registry keyed by request key (see the module doc)."""

    def __init__(
        self,
        events: Sequence[pb.StylizeResponse] | None = None,
        *,
        breaks: Sequence[Break] = (),
        name: str = "fake",
    ) -> None:
        self.events = list(events) if events is not None else long_events()
        self.breaks = list(breaks)
        self.name = name
        self.jobs: dict[str, FakeJob] = {}
        self.computations = 0
        """Jobs started: what a real server's evaluation counter would show."""
        self.calls: list[CallRecord] = []
        self.attached = 0
        self._lock = threading.Lock()

    def Stylize(  # noqa: N802 (generated name)
        self, request: pb.StylizeRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StylizeResponse]:
        record = CallRecord(
            request=request,
            metadata={k: v for k, v in context.invocation_metadata() if isinstance(v, str)},
            time_remaining=None,
        )
        with self._lock:
            self.calls.append(record)
            job = self.jobs.get(request.request_key) if request.request_key else None
            if job is not None and job.payload != _payload(request):
                job = None
                reused = True
            else:
                reused = False
            if job is None and not reused:
                self.computations += 1
                job = FakeJob(request.request_key, _payload(request))
                if request.request_key:
                    self.jobs[request.request_key] = job
            elif job is not None:
                self.attached += 1
        if reused or job is None:
            abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                "request_key is bound to a different request",
                error_info("KEY_REUSED"),
            )
            return
        try:
            yield from job.current_state()
            while not job.done:
                pending = self._break_due(job)
                if pending is not None:
                    pending.reached.set()
                    self._break(pending, context)
                    return
                message = self.events[len(job.produced)]
                with self._lock:
                    job.produced.append(message)
                yield message
        finally:
            record.ended.set()

    def _break_due(self, job: FakeJob) -> Break | None:
        with self._lock:
            for pending in self.breaks:
                if len(job.produced) >= pending.after:
                    self.breaks.remove(pending)
                    return pending
        return None

    def _break(self, pending: Break, context: grpc.ServicerContext) -> None:
        if pending.code is None:
            while context.is_active():
                time.sleep(0.01)
            return
        details = [error_info(pending.reason)] if pending.reason else []
        abort(context, pending.code, f"stream broken by the test ({pending.reason})", *details)


@dataclass
class FakeServer:
    address: str
    servicer: FakeStyleTransfer | FakeJobs
    health: health.HealthServicer
    server: grpc.Server


class RequireToken(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Rejects calls without `authorization: Bearer <token>`, as the real server's --auth-token."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}"

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata)
        if handler is None or metadata.get("authorization") == self._expected:
            return handler

        def deny(request: object, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

        factory = (
            grpc.unary_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        return factory(
            deny,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@contextmanager
def serve(
    servicer: FakeStyleTransfer | FakeJobs | None = None,
    *,
    credentials: grpc.ServerCredentials | None = None,
    token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[FakeServer]:
    """Run the fake on a free loopback port; yields its address and parts."""
    servicer = servicer or FakeStyleTransfer()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        interceptors=[RequireToken(token)] if token else None,
        options=[
            ("grpc.max_send_message_length", SERVER_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", SERVER_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_StyleTransferServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("styletx.v1.StyleTransferService", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if credentials is None:
        port = server.add_insecure_port(f"{host}:{port}")
    else:
        port = server.add_secure_port(f"{host}:{port}", credentials)
    server.start()
    try:
        yield FakeServer(f"{host}:{port}", servicer, health_servicer, server)
    finally:
        server.stop(grace=None)


def closed_port_address() -> str:
    """A loopback address nobody listens on (the port was free a moment ago)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"
