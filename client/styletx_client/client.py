"""The synchronous client: `StyleTransferClient` and the `EventStream` its `stream` returns."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from types import TracebackType
from typing import Self, Unpack

import grpc

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


class EventStream(Iterator[Event]):
    """Events of one `Stylize` call. Closing it (or leaving its `with` block) cancels the RPC."""

    def __init__(self, events: Generator[Event, None, None], request_id: str) -> None:
        self._events = events
        self.request_id = request_id
        """The x-request-id sent with the call, which the server logs and echoes."""

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
    addresses; the last two balance calls round robin. `timeout` is the default total deadline of
    a call, retries included. The client is thread-safe; share one per process.
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
        sleep: Callable[[float], None] = time.sleep,
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
            self._channel = grpc.insecure_channel(settings.target, options=settings.options)
        else:
            self._channel = grpc.secure_channel(
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

    def stylize(
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
        with self.stream(content, styles, timeout=timeout, request_id=request_id, **options) as it:
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
        **options: Unpack[StylizeOptions],
    ) -> EventStream:
        """Start a call and return its events: Queued..., Started, Progress..., Result.

        Inputs are read and validated now (TypeError/ValueError/OSError); the call starts on the
        first `next()`. Retryable failures before the first event are retried transparently.
        """
        request = build_request(content, styles, options)
        request_id = request_id or uuid.uuid4().hex
        budget = AttemptBudget(
            self._settings.retry,
            timeout if timeout is not None else self._settings.timeout,
            self._clock,
            self._rng,
            request_id,
        )
        return EventStream(self._run(request, request_id, budget), request_id)

    def _run(
        self, request: pb.StylizeRequest, request_id: str, budget: AttemptBudget
    ) -> Generator[Event, None, None]:
        metadata = call_metadata(self._settings.token, request_id)
        while True:
            call = self._stub.Stylize(request, timeout=budget.start_attempt(), metadata=metadata)
            received = False
            try:
                for message in call:
                    received = True
                    event = event_from_proto(message)
                    if event is not None:
                        yield event
                return
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error, request_id)
            finally:
                # A no-op once the call ended; cancels it when the caller stops early.
                call.cancel()  # type: ignore[no-untyped-call,unused-ignore]
            # Once an event arrived the server has begun work: retrying could run the job twice.
            delay = None if received else budget.retry_delay(error)
            if delay is None:
                raise error from None
            logger.info("retrying in %.2fs after %s (attempt %d)", delay, error, budget.attempt)
            self._sleep(delay)

    def health(self, service: str = "", *, timeout: float = 10.0) -> _health.ServingStatus:
        """The server's grpc.health.v1 status ("" is the whole server; see SERVICE_NAME)."""
        request_id = uuid.uuid4().hex
        try:
            data = self._health_check(
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

    def close(self) -> None:
        """Close the channel, cancelling every call still running on it."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
