"""What the sync and asyncio clients share: request building, the channel, event conversion, and
the retry and re-attach decisions of a Stylize call.

`StyleTransferClient` (grpc) and `AsyncStyleTransferClient` (grpc.aio) keep only their transport
loops, the way googleapis clients share a core and differ in transport:

    call = core.start(...)
    while True:
        attempt = call.next_attempt()          # the deadline left
        open attempt.connection's Stylize stream
        for each message: event = attempt.receive(message); deliver it unless None
        on grpc.RpcError: delay = attempt.fail(error)  # raises the SDK error when final
        on a clean end: attempt.succeed(); stop
        sleep(delay)

WatchJob runs the same loop (`core.watch(key)`); GetJob and CancelJob are one message each way
(`core.job_call(key)`), retried while the service is unavailable or busy.

There is one channel per client. Several replicas are reached through gRPC's own `round_robin`
over a `dns:` name or an address list (`_channel.channel_options`): in a fleet every replica
answers for every key, so a retry or a re-attach may land on any of them, and gRPC's balancer
moves it off a replica that is down or has closed its connections.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

import grpc

from styletx_api.v1 import style_transfer_pb2 as pb

from ._channel import ChannelOption, ClientSettings, call_metadata
from ._convert import build_request, event_from_proto
from ._propagation import Metadatum
from ._retry import AttemptBudget, Clock, RetryThrottle, is_retryable
from .errors import CancelledError, ServiceError, UnavailableError, from_rpc_error
from .events import Event, Progress, Queued, Result, Started
from .options import ImageInput, Styles, StylizeOptions

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connect = Callable[[str, list[ChannelOption], grpc.ChannelCredentials | None], T]
"""A transport's way to open one channel (and its stubs): target, channel arguments, creds."""


def new_request_key() -> str:
    """A fresh idempotency key: one random UUID4 per logical call."""
    return str(uuid.uuid4())


def checked_key(request_key: str) -> str:
    """`request_key` when it can name a job (a non-empty str); the server checks the rest."""
    if not isinstance(request_key, str):
        raise TypeError(f"request_key must be a str, not {type(request_key).__name__}")
    if not request_key:
        raise ValueError("request_key is empty: a job is named by the key it was started with")
    return request_key


class ClientCore(Generic[T]):
    """State one client shares across its calls: settings, the channel, the retry budget."""

    def __init__(
        self,
        settings: ClientSettings,
        connect: Connect[T],
        *,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._rng = rng
        self.throttle = RetryThrottle(settings.retry.throttling)
        self._connection: T | None = connect(
            settings.target, settings.channel_options(), settings.credentials
        )

    @property
    def connection(self) -> T:
        """The client's channel (and stubs); CancelledError once the client is closed."""
        if self._connection is None:
            raise CancelledError("the client was closed")
        return self._connection

    def close(self) -> T | None:
        """The channel, for the transport to close (None when it was closed before)."""
        connection, self._connection = self._connection, None
        return connection

    def start(
        self,
        content: ImageInput,
        styles: Styles,
        options: StylizeOptions,
        *,
        timeout: float | None,
        request_id: str | None,
        request_key: str | None,
    ) -> StylizeCall[T]:
        """A new logical call; inputs are read and validated now (TypeError/ValueError/OSError).

        `request_key` None draws a fresh key; "" sends none (no idempotency, no re-attach).
        """
        request = build_request(content, styles, options)
        key = new_request_key() if request_key is None else request_key
        if not isinstance(key, str):
            raise TypeError(f"request_key must be a str, not {type(key).__name__}")
        request.request_key = key
        request_id = request_id or uuid.uuid4().hex
        budget = AttemptBudget(
            self.settings.retry,
            timeout if timeout is not None else self.settings.timeout,
            self._clock,
            self._rng,
            request_id,
        )
        return StylizeCall(self, request, request_id, budget)

    def watch(
        self, request_key: str, *, timeout: float | None, request_id: str | None
    ) -> StylizeCall[T]:
        """A WatchJob call of the job with `request_key`: re-watched when its stream breaks."""
        request = pb.WatchJobRequest(request_key=checked_key(request_key))
        request_id = request_id or uuid.uuid4().hex
        return StylizeCall(self, request, request_id, self._budget(timeout, request_id))

    def job_call(
        self, request_key: str, *, timeout: float | None, request_id: str | None
    ) -> JobCall[T]:
        """A GetJob or CancelJob call of the job with `request_key`."""
        request_id = request_id or uuid.uuid4().hex
        key = checked_key(request_key)
        return JobCall(self, key, request_id, self._budget(timeout, request_id))

    def _budget(self, timeout: float | None, request_id: str) -> AttemptBudget:
        return AttemptBudget(
            self.settings.retry,
            timeout if timeout is not None else self.settings.timeout,
            self._clock,
            self._rng,
            request_id,
        )

    def metadata(self, request_id: str, request_key: str = "") -> tuple[Metadatum, ...]:
        return call_metadata(self.settings.token, request_id, request_key, self.settings.metadata)


class _Delivered:
    """What the caller has seen, so a re-attached stream repeats none of it.

    A re-attach receives the job's current state and then the rest: a second Started, Queued
    after Started, and progress at or before the last iteration delivered are dropped.
    """

    def __init__(self) -> None:
        self.started = False
        self.result = False
        self.last_iteration = 0

    def admit(self, event: Event) -> bool:
        if self.result:
            return False
        if isinstance(event, Queued):
            return not self.started
        if isinstance(event, Started):
            first = not self.started
            self.started = True
            return first
        if isinstance(event, Progress):
            if event.iteration <= self.last_iteration:
                return False
            self.last_iteration = event.iteration
            return True
        assert isinstance(event, Result)
        self.result = True
        return True


class StylizeCall(Generic[T]):
    """One logical Stylize (or WatchJob) call across its attempts: retries and re-attaches."""

    def __init__(
        self,
        core: ClientCore[T],
        request: pb.StylizeRequest | pb.WatchJobRequest,
        request_id: str,
        budget: AttemptBudget,
    ) -> None:
        self._core = core
        self.request = request
        self.request_id = request_id
        """The x-request-id of every attempt, which the server logs."""
        self.metadata = core.metadata(request_id, request.request_key)
        self._budget = budget
        self._delivered = _Delivered()

    @property
    def request_key(self) -> str:
        """The idempotency key sent in the request ("" when none)."""
        return self.request.request_key

    def next_attempt(self) -> Attempt[T]:
        """Start an attempt: count it against the deadline."""
        try:
            timeout = self._budget.start_attempt()
        except ServiceError as error:
            raise self._final(error) from None
        return Attempt(self, self._core.connection, timeout)

    def _receive(
        self, attempt: Attempt[T], message: pb.StylizeResponse | pb.WatchJobResponse
    ) -> Event | None:
        attempt.received = True
        event = event_from_proto(message)
        if event is None or not self._delivered.admit(event):
            return None
        self._budget.progressed()
        return event

    def _succeed(self) -> None:
        if self._delivered.result:
            self._core.throttle.succeeded()

    def _final(self, error: ServiceError) -> ServiceError:
        """`error`, labelled with this call's key so that the caller can re-attach later."""
        error.request_key = self.request_key or None
        return error

    def _fail(self, attempt: Attempt[T], error: ServiceError) -> float:
        """The wait before the next attempt, or raise `error` when it is final."""
        self._final(error)
        # A replica that refused the connection or said it is leaving needs no steering here:
        # gRPC's round_robin sends the next attempt to the next ready address.
        if attempt.received and not (self.request_key and isinstance(error, UnavailableError)):
            # Broken mid-way without a key (a retry would start the job over), or a final status.
            raise error from None
        if not is_retryable(error):
            raise error from None
        # UNAVAILABLE (a replica restarting, loading, leaving or unreachable) cost no server any
        # work: it spends no token (the ride-out window and the deadline bound those retries).
        if not isinstance(error, UnavailableError) and not self._core.throttle.take_token():
            logger.warning("retry budget spent; not retrying %s", error)
            raise error from None
        delay = self._budget.retry_delay(error)
        if delay is None:
            raise error from None
        action = "re-attaching to" if self._delivered.started or attempt.received else "retrying"
        logger.info(
            "%s request %s in %.2fs after %s (attempt %d)",
            action,
            self.request_key or self.request_id,
            delay,
            error,
            self._budget.attempt,
        )
        return delay


class Attempt(Generic[T]):
    """One RPC of a logical call."""

    def __init__(self, call: StylizeCall[T], connection: T, timeout: float | None):
        self._call = call
        self.connection = connection
        self.timeout = timeout
        """The gRPC timeout of this attempt: what is left of the call's deadline (None: none)."""
        self.received = False

    def receive(self, message: pb.StylizeResponse | pb.WatchJobResponse) -> Event | None:
        """The event to deliver for `message`, or None (unknown kind, or already delivered)."""
        return self._call._receive(self, message)

    def fail(self, error: grpc.RpcError) -> float:
        """Seconds to wait before the next attempt; raises the SDK error when it is final."""
        return self._call._fail(self, from_rpc_error(error, self._call.request_id))

    def succeed(self) -> None:
        """The stream ended with OK."""
        self._call._succeed()


class JobCall(Generic[T]):
    """One GetJob or CancelJob call across its attempts, retried while unavailable or busy."""

    def __init__(
        self, core: ClientCore[T], request_key: str, request_id: str, budget: AttemptBudget
    ) -> None:
        self._core = core
        self.request_key = request_key
        self.request_id = request_id
        self.metadata = core.metadata(request_id, request_key)
        self._budget = budget

    def next_attempt(self) -> tuple[T, float | None]:
        """The connection of the next attempt and its gRPC timeout (what is left of the
        deadline)."""
        try:
            timeout = self._budget.start_attempt()
        except ServiceError as error:
            error.request_key = self.request_key
            raise
        return self._core.connection, timeout

    def fail(self, rpc_error: grpc.RpcError) -> float:
        """Seconds to wait before the next attempt; raises the SDK error when it is final."""
        error = from_rpc_error(rpc_error, self.request_id)
        error.request_key = self.request_key
        if not is_retryable(error):
            raise error from None
        if not isinstance(error, UnavailableError) and not self._core.throttle.take_token():
            raise error from None
        delay = self._budget.retry_delay(error)
        if delay is None:
            raise error from None
        logger.info("retrying a job call of %s in %.2fs after %s", self.request_key, delay, error)
        return delay

    def succeed(self) -> None:
        self._core.throttle.succeeded()
