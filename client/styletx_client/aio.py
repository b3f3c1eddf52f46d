"""The asyncio client on `grpc.aio`: the same surface as `StyleTransferClient`, awaitable.

Only the grpc.aio transport loop lives here; every decision is `_core`'s, shared with `client.py`.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar, Unpack

import grpc
import grpc.aio

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

R = TypeVar("R")
Metadata = tuple[Metadatum, ...]


@dataclass(frozen=True, slots=True)
class _Connection:
    """One grpc.aio channel and the stubs on it."""

    channel: grpc.aio.Channel
    stub: pb_grpc.StyleTransferServiceAsyncStub
    health: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]


def _connect(
    target: str,
    options: list[ChannelOption],
    credentials: grpc.ChannelCredentials | None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> _Connection:
    chain = list(interceptors) or None
    if credentials is None:
        channel = grpc.aio.insecure_channel(target, options=options, interceptors=chain)
    else:
        channel = grpc.aio.secure_channel(target, credentials, options=options, interceptors=chain)
    health: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        _health.CHECK_METHOD, request_serializer=None, response_deserializer=None
    )
    return _Connection(channel, pb_grpc.StyleTransferServiceStub(channel), health)


class AsyncEventStream(AsyncIterator[Event]):
    """Events of one `Stylize` call; `aclose()` (or leaving `async with`) cancels the RPC."""

    def __init__(
        self, events: AsyncGenerator[Event, None], request_id: str, request_key: str
    ) -> None:
        self._events = events
        self.request_id = request_id
        """The x-request-id sent with the call, which the server logs and echoes."""
        self.request_key = request_key
        """The call's idempotency key ("" when none); see `EventStream.request_key`."""

    async def __anext__(self) -> Event:
        return await anext(self._events)

    async def aclose(self) -> None:
        """Cancel the call if it is still running; idempotent."""
        await self._events.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncStyleTransferClient:
    """asyncio client of the styletx service; create it inside a running event loop.

    Arguments mean what they mean for `StyleTransferClient`; `sleep` is awaited between retries,
    and `interceptors` are grpc.aio client interceptors.
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
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
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

    async def stylize(
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
        stream = self.stream(
            content,
            styles,
            timeout=timeout,
            request_id=request_id,
            request_key=request_key,
            **options,
        )
        async with stream:
            async for event in stream:
                if on_event is not None:
                    on_event(event)
                if isinstance(event, Result):
                    result = event
        if result is None:
            raise missing_result(stream.request_id)
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
    ) -> AsyncEventStream:
        """Start a call and return its events (see `StyleTransferClient.stream`)."""
        call = self._core.start(
            content,
            styles,
            options,
            timeout=timeout,
            request_id=request_id,
            request_key=request_key,
        )
        return AsyncEventStream(self._run(call), call.request_id, call.request_key)

    async def get_job(
        self,
        request_key: str,
        *,
        include_image: bool = True,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> JobInfo:
        """Where the job started with `request_key` is (see `StyleTransferClient.get_job`)."""
        request = pb.GetJobRequest(request_key=request_key, omit_image=not include_image)
        response = await self._unary(
            request_key,
            timeout,
            request_id,
            lambda stub, left, metadata: stub.GetJob(request, timeout=left, metadata=metadata),
        )
        return job_from_proto(response)

    def watch_job(
        self, request_key: str, *, timeout: float | None = None, request_id: str | None = None
    ) -> AsyncEventStream:
        """The events of the job started with `request_key`, from now on (see
        `StyleTransferClient.watch_job`)."""
        call = self._core.watch(request_key, timeout=timeout, request_id=request_id)
        return AsyncEventStream(self._run(call), call.request_id, call.request_key)

    async def cancel_job(
        self, request_key: str, *, timeout: float | None = None, request_id: str | None = None
    ) -> JobState:
        """Cancel the job started with `request_key` (see `StyleTransferClient.cancel_job`)."""
        request = pb.CancelJobRequest(request_key=request_key)
        response = await self._unary(
            request_key,
            timeout,
            request_id,
            lambda stub, left, metadata: stub.CancelJob(request, timeout=left, metadata=metadata),
        )
        return job_state(response.state)

    async def _unary(
        self,
        request_key: str,
        timeout: float | None,
        request_id: str | None,
        send: Callable[
            [pb_grpc.StyleTransferServiceAsyncStub, float | None, Metadata], Awaitable[R]
        ],
    ) -> R:
        """One job call on the key's replica, retried while it is unavailable or busy."""
        call = self._core.job_call(request_key, timeout=timeout, request_id=request_id)
        while True:
            connection, left = call.next_attempt()
            try:
                answer = await send(connection.stub, left, call.metadata)
            except grpc.RpcError as error:
                delay = call.fail(error)
            else:
                call.succeed()
                return answer
            await self._sleep(delay)

    async def _run(self, call: StylizeCall[_Connection]) -> AsyncGenerator[Event, None]:
        while True:
            attempt = call.next_attempt()
            try:
                stub = attempt.connection.stub
                rpc: (
                    grpc.aio.UnaryStreamCall[pb.StylizeRequest, pb.StylizeResponse]
                    | grpc.aio.UnaryStreamCall[pb.WatchJobRequest, pb.WatchJobResponse]
                )
                if isinstance(call.request, pb.WatchJobRequest):
                    rpc = stub.WatchJob(
                        call.request, timeout=attempt.timeout, metadata=call.metadata
                    )
                else:
                    rpc = stub.Stylize(
                        call.request, timeout=attempt.timeout, metadata=call.metadata
                    )
                try:
                    async for message in rpc:
                        event = attempt.receive(message)
                        if event is not None:
                            yield event
                finally:
                    # A no-op once the call ended; cancels it when the caller stops early.
                    rpc.cancel()
            except grpc.RpcError as error:
                delay = attempt.fail(error)
            else:
                attempt.succeed()
                return
            await self._sleep(delay)

    async def health(self, service: str = "", *, timeout: float = 10.0) -> _health.ServingStatus:
        """The server's grpc.health.v1 status ("" is the whole server; see SERVICE_NAME)."""
        request_id = uuid.uuid4().hex
        try:
            data = await self._core.connection.health(
                _health.encode_request(service),
                timeout=timeout,
                metadata=self._core.metadata(request_id),
            )
        except grpc.RpcError as error:
            return _health.status_from_error(error, request_id)
        return _health.decode_response(bytes(data))

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; running calls are cancelled (after `grace` seconds if given)."""
        connection = self._core.close()
        if connection is not None:
            await connection.channel.close(grace)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
