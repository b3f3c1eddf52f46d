"""The synchronous client: `StyleTransferClient` and the `EventStream` its `stream` returns.

Only the grpc transport loop lives here; every decision is `_core`'s, shared with `aio.py`.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar, Unpack

import grpc

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc

from . import health as _health
from ._channel import DEFAULT_MAX_MESSAGE_BYTES, ChannelOption, TlsConfig, make_settings
from ._convert import job_from_proto, job_state
from ._core import ClientCore, StylizeCall
from ._propagation import Metadatum
from ._retry import RetryPolicy
from .errors import missing_result
from .events import Event, Result
from .jobs import JobInfo, JobState
from .options import ImageInput, Styles, StylizeOptions

if TYPE_CHECKING:
    from ._propagation import ClientInterceptor

R = TypeVar("R")
Metadata = tuple[Metadatum, ...]


@dataclass(frozen=True, slots=True)
class _Connection:
    """One channel and the stubs on it."""

    channel: grpc.Channel
    stub: pb_grpc.StyleTransferServiceStub
    health: grpc.UnaryUnaryMultiCallable[bytes, bytes]


def _connect(
    target: str,
    options: list[ChannelOption],
    credentials: grpc.ChannelCredentials | None,
    interceptors: Sequence[ClientInterceptor] = (),
) -> _Connection:
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    if interceptors:
        channel = grpc.intercept_channel(channel, *interceptors)
    health: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        _health.CHECK_METHOD, request_serializer=None, response_deserializer=None
    )
    return _Connection(channel, pb_grpc.StyleTransferServiceStub(channel), health)


class EventStream(Iterator[Event]):
    """Events of one `Stylize` call. Closing it (or leaving its `with` block) cancels the RPC."""

    def __init__(
        self, events: Generator[Event, None, None], request_id: str, request_key: str
    ) -> None:
        self._events = events
        self.request_id = request_id
        """The x-request-id sent with the call, which the server logs and echoes."""
        self.request_key = request_key
        """The call's idempotency key ("" when none): a call with the same key and request
        attaches to the job while the server holds it (running, or finished recently)."""

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        """Cancel the call if it is still running; idempotent."""
        self._events.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class StyleTransferClient:
    """Client of the styletx `StyleTransferService`; use it as a context manager.

    `target` is `host:port`, a gRPC URI (`dns:///styletx:50051`) or a comma-separated list of IP
    addresses; the last two spread calls over every address with gRPC's `round_robin` (a fleet's
    replicas all serve every key), unless `lb_policy` names another gRPC policy. `timeout` is the
    default total deadline of a call, retries and re-attaches included. The client is
    thread-safe; share one per process.

    `metadata` goes with every call; `interceptors` wrap every channel (grpc.intercept_channel).
    The OpenTelemetry context current when a call starts goes with it (W3C `traceparent`).
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        tls: bool | TlsConfig = False,
        token: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        lb_policy: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: Sequence[ChannelOption] = (),
        metadata: Sequence[Metadatum] = (),
        interceptors: Sequence[ClientInterceptor] = (),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        settings = make_settings(
            target,
            credentials=credentials,
            tls=tls,
            token=token,
            timeout=timeout,
            retry=retry,
            lb_policy=lb_policy,
            max_message_bytes=max_message_bytes,
            options=options,
            metadata=metadata,
        )
        self._sleep = sleep
        self._core: ClientCore[_Connection] = ClientCore(
            settings,
            functools.partial(_connect, interceptors=tuple(interceptors)),
            clock=clock,
            rng=rng or random.Random(),
        )

    @property
    def target(self) -> str:
        """The gRPC target the client connects to (after normalisation)."""
        return self._core.settings.target

    def stylize(
        self,
        content: ImageInput,
        styles: Styles,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        request_key: str | None = None,
        on_event: Callable[[Event], None] | None = None,
        **options: Unpack[StylizeOptions],
    ) -> Result:
        """Stylize `content` after `styles` and return the result; `on_event` sees every event."""
        result: Result | None = None
        with self.stream(
            content,
            styles,
            timeout=timeout,
            request_id=request_id,
            request_key=request_key,
            **options,
        ) as it:
            for event in it:
                if on_event is not None:
                    on_event(event)
                if isinstance(event, Result):
                    result = event
        if result is None:
            raise missing_result(it.request_id)
        return result

    def stream(
        self,
        content: ImageInput,
        styles: Styles,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        request_key: str | None = None,
        **options: Unpack[StylizeOptions],
    ) -> EventStream:
        """Start a call and return its events: Queued..., Started, Progress..., Result.

        Inputs are read and validated now (TypeError/ValueError/OSError); the call starts on the
        first `next()`. A busy or unreachable server is retried before the first event; a stream
        broken mid-way re-attaches to its job by `request_key` (default: a fresh UUID4; "" sends
        none and turns re-attaching off), and no event is delivered twice.
        """
        call = self._core.start(
            content,
            styles,
            options,
            timeout=timeout,
            request_id=request_id,
            request_key=request_key,
        )
        return EventStream(self._run(call), call.request_id, call.request_key)

    def get_job(
        self,
        request_key: str,
        *,
        include_image: bool = True,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> JobInfo:
        """Where the job started with `request_key` is: queued, running, done (with its result;
        `include_image=False` leaves the image data out), failed or cancelled (with its error).

        JobNotFoundError when the server does not hold the key (never started there, or ended
        longer ago than it keeps outcomes).
        """
        request = pb.GetJobRequest(request_key=request_key, omit_image=not include_image)
        response = self._unary(
            request_key,
            timeout,
            request_id,
            lambda stub, left, metadata: stub.GetJob(request, timeout=left, metadata=metadata),
        )
        return job_from_proto(response)

    def watch_job(
        self, request_key: str, *, timeout: float | None = None, request_id: str | None = None
    ) -> EventStream:
        """The events of the job started with `request_key`, from now on: its current state
        first (Queued, or Started and the latest Progress), then each new event, then its
        Result; the stream raises the job's error when it failed or was cancelled (a
        CancelledError). Nothing is uploaded again; a broken stream is watched again."""
        call = self._core.watch(request_key, timeout=timeout, request_id=request_id)
        return EventStream(self._run(call), call.request_id, call.request_key)

    def cancel_job(
        self, request_key: str, *, timeout: float | None = None, request_id: str | None = None
    ) -> JobState:
        """Cancel the job started with `request_key` and return its state afterwards:
        "cancelled" once its worker is free, or "done"/"failed" when it had ended before.
        Idempotent; every stream of the job ends with CancelledError."""
        request = pb.CancelJobRequest(request_key=request_key)
        response = self._unary(
            request_key,
            timeout,
            request_id,
            lambda stub, left, metadata: stub.CancelJob(request, timeout=left, metadata=metadata),
        )
        return job_state(response.state)

    def _unary(
        self,
        request_key: str,
        timeout: float | None,
        request_id: str | None,
        send: Callable[[pb_grpc.StyleTransferServiceStub, float | None, Metadata], R],
    ) -> R:
        """One job call on the key's replica, retried while it is unavailable or busy."""
        call = self._core.job_call(request_key, timeout=timeout, request_id=request_id)
        while True:
            connection, left = call.next_attempt()
            try:
                answer = send(connection.stub, left, call.metadata)
            except grpc.RpcError as error:
                delay = call.fail(error)
            else:
                call.succeed()
                return answer
            self._sleep(delay)

    def _run(self, call: StylizeCall[_Connection]) -> Generator[Event, None, None]:
        while True:
            attempt = call.next_attempt()
            try:
                stub = attempt.connection.stub
                rpc: grpc.CallIterator[pb.StylizeResponse] | grpc.CallIterator[pb.WatchJobResponse]
                if isinstance(call.request, pb.WatchJobRequest):
                    rpc = stub.WatchJob(
                        call.request, timeout=attempt.timeout, metadata=call.metadata
                    )
                else:
                    rpc = stub.Stylize(
                        call.request, timeout=attempt.timeout, metadata=call.metadata
                    )
                try:
                    for message in rpc:
                        event = attempt.receive(message)
                        if event is not None:
                            yield event
                finally:
                    # A no-op once the call ended; cancels it when the caller stops early.
                    rpc.cancel()  # type: ignore[no-untyped-call,unused-ignore]
            except grpc.RpcError as error:
                delay = attempt.fail(error)
            else:
                attempt.succeed()
                return
            self._sleep(delay)

    def health(self, service: str = "", *, timeout: float = 10.0) -> _health.ServingStatus:
        """The server's grpc.health.v1 status ("" is the whole server; see SERVICE_NAME).

        Behind several addresses, one of them answers (round robin).
        """
        request_id = uuid.uuid4().hex
        try:
            data = self._core.connection.health(
                _health.encode_request(service),
                timeout=timeout,
                metadata=self._core.metadata(request_id),
            )
        except grpc.RpcError as error:
            return _health.status_from_error(error, request_id)
        return _health.decode_response(bytes(data))

    def close(self) -> None:
        """Close the channel, cancelling every call still running on it."""
        connection = self._core.close()
        if connection is not None:
            connection.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
