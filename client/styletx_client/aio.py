"""The asyncio client on `grpc.aio`: the same surface as `StyleTransferClient`, awaitable."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Self, Unpack

import grpc
import grpc.aio

from . import health as _health
from ._channel import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ChannelOption,
    ClientSettings,
    TlsConfig,
    call_metadata,
    make_settings,
)
from ._convert import build_request, event_from_proto
from ._retry import AttemptBudget, RetryPolicy
from .errors import from_rpc_error, missing_result
from .events import Event, Result
from .options import ImageInput, Styles, StylizeOptions
from .proto import style_transfer_pb2 as pb
from .proto import style_transfer_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)


class AsyncEventStream(AsyncIterator[Event]):
    """Events of one `Stylize` call; `aclose()` (or leaving `async with`) cancels the RPC."""

    def __init__(self, events: AsyncGenerator[Event, None], request_id: str) -> None:
        self._events = events
        self.request_id = request_id
        """The x-request-id sent with the call, which the server logs and echoes."""

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

    Arguments mean what they mean for `StyleTransferClient`; `sleep` is awaited between retries.
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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._settings: ClientSettings = make_settings(
            target,
            credentials=credentials,
            tls=tls,
            token=token,
            timeout=timeout,
            retry=retry,
            lb_policy=lb_policy,
            max_message_bytes=max_message_bytes,
            options=options,
        )
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        settings = self._settings
        if settings.credentials is None:
            self._channel = grpc.aio.insecure_channel(settings.target, options=settings.options)
        else:
            self._channel = grpc.aio.secure_channel(
                settings.target, settings.credentials, options=settings.options
            )
        self._stub = pb_grpc.StyleTransferServiceStub(self._channel)
        self._health_check = self._channel.unary_unary(
            _health.CHECK_METHOD, request_serializer=None, response_deserializer=None
        )

    @property
    def target(self) -> str:
        """The gRPC target the channel connects to (after normalisation)."""
        return self._settings.target

    async def stylize(
        self,
        content: ImageInput,
        styles: Styles,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        on_event: Callable[[Event], None] | None = None,
        **options: Unpack[StylizeOptions],
    ) -> Result:
        """Stylize `content` after `styles` and return the result; `on_event` sees every event."""
        result: Result | None = None
        stream = self.stream(content, styles, timeout=timeout, request_id=request_id, **options)
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
        **options: Unpack[StylizeOptions],
    ) -> AsyncEventStream:
        """Start a call and return its events (see `StyleTransferClient.stream`)."""
        request = build_request(content, styles, options)
        request_id = request_id or uuid.uuid4().hex
        budget = AttemptBudget(
            self._settings.retry,
            timeout if timeout is not None else self._settings.timeout,
            self._clock,
            self._rng,
            request_id,
        )
        return AsyncEventStream(self._run(request, request_id, budget), request_id)

    async def _run(
        self, request: pb.StylizeRequest, request_id: str, budget: AttemptBudget
    ) -> AsyncGenerator[Event, None]:
        metadata = call_metadata(self._settings.token, request_id)
        while True:
            call = self._stub.Stylize(request, timeout=budget.start_attempt(), metadata=metadata)
            received = False
            try:
                async for message in call:
                    received = True
                    event = event_from_proto(message)
                    if event is not None:
                        yield event
                return
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error, request_id)
            finally:
                # A no-op once the call ended; cancels it when the caller stops early.
                call.cancel()
            # Once an event arrived the server has begun work: retrying could run the job twice.
            delay = None if received else budget.retry_delay(error)
            if delay is None:
                raise error from None
            logger.info("retrying in %.2fs after %s (attempt %d)", delay, error, budget.attempt)
            await self._sleep(delay)

    async def health(self, service: str = "", *, timeout: float = 10.0) -> _health.ServingStatus:
        """The server's grpc.health.v1 status ("" is the whole server; see SERVICE_NAME)."""
        request_id = uuid.uuid4().hex
        try:
            data = await self._health_check(
                _health.encode_request(service),
                timeout=timeout,
                metadata=call_metadata(self._settings.token, request_id),
            )
        except grpc.RpcError as rpc_error:
            error = from_rpc_error(rpc_error, request_id)
            status = _health.status_for_error(error.code)
            if status is None:
                raise error from None
            return status
        return _health.decode_response(bytes(data))

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; calls still running are cancelled (after `grace` seconds if given)."""
        await self._channel.close(grace)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
