"""Retry policy: jittered backoff, the server's RetryInfo, a per-client retry budget, a deadline.

Done in the SDK rather than by gRPC's service-config retries, which cannot honour RetryInfo, and
cannot re-attach a stream broken mid-way (gRPC never retries once a response has arrived).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import DeadlineExceededError, ServerBusyError, ServiceError, UnavailableError

Clock = Callable[[], float]

RETRY_INFO_JITTER = (1.0, 1.5)
"""A server's RetryInfo delay is multiplied by a uniformly random factor in this range: never
earlier than the server asked, and spread so that callers refused together do not return
together."""


@dataclass(frozen=True, slots=True)
class RetryThrottling:
    """A per-client retry budget, as gRPC's `retryThrottling`: a bucket of `max_tokens` tokens.

    Every failed attempt that could be retried takes one token, every call that succeeds puts
    `token_ratio` back; retries stop while the bucket holds half or less. A fleet in trouble thus
    sees at most a bounded share of retries on top of its real traffic, not a retry storm.
    """

    max_tokens: float = 10.0
    token_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.max_tokens <= 0 or self.token_ratio <= 0:
            raise ValueError("max_tokens and token_ratio must be > 0")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often a call is tried again: before its first event, or to re-attach.

    UNAVAILABLE and a busy RESOURCE_EXHAUSTED are retried before the first event; a stream broken
    mid-way (UNAVAILABLE) is re-attached by its request key. The n-th consecutive retry waits a
    uniformly random time in [0, min(max_backoff, initial_backoff * multiplier**(n-1))] ("full
    jitter"), or the server's RetryInfo delay times a random factor in [1, 1.5].
    `max_attempts` bounds the attempts in a row that deliver no new event, except that UNAVAILABLE
    (a replica restarting, loading, draining or unreachable) is retried for at least `ride_out`
    seconds from the first failure in a row, so a restart or rollout of that long is ridden out
    (`max_attempts=1` turns every retry off, the ride-out included);
    `throttling` (None: off) bounds the retries of server refusals across all calls of a client;
    the call's timeout bounds everything.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.25
    max_backoff: float = 5.0
    multiplier: float = 2.0
    throttling: RetryThrottling | None = field(default_factory=RetryThrottling)
    ride_out: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")
        if self.ride_out < 0:
            raise ValueError("ride_out must be >= 0 seconds")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Jittered wait before the `retry`-th retry in a row (1-based)."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return rng.uniform(0.0, cap)


NO_RETRY = RetryPolicy(max_attempts=1, ride_out=0.0)


def retry_info_delay(seconds: float, rng: random.Random) -> float:
    """The wait for a server's RetryInfo delay, jittered by RETRY_INFO_JITTER."""
    return seconds * rng.uniform(*RETRY_INFO_JITTER)


def is_retryable(error: ServiceError) -> bool:
    """Only overload and unreachability are worth retrying; everything else would fail again."""
    return isinstance(error, ServerBusyError | UnavailableError)


class RetryThrottle:
    """The token bucket of `RetryThrottling`, shared by every call of one client (thread-safe)."""

    def __init__(self, config: RetryThrottling | None) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._tokens = config.max_tokens if config else 0.0

    @property
    def tokens(self) -> float:
        return self._tokens

    def take_token(self) -> bool:
        """Take a token for a retryable failure; True while retries are still allowed."""
        if self._config is None:
            return True
        with self._lock:
            self._tokens = max(0.0, self._tokens - 1.0)
            return self._tokens > self._config.max_tokens / 2

    def succeeded(self) -> None:
        """Give back a fraction of a token for a call that completed."""
        if self._config is None:
            return
        with self._lock:
            self._tokens = min(self._config.max_tokens, self._tokens + self._config.token_ratio)


class AttemptBudget:
    """Tracks the attempts and the total deadline of one logical call across its retries."""

    def __init__(
        self,
        policy: RetryPolicy,
        timeout: float | None,
        clock: Clock,
        rng: random.Random,
        request_id: str,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._rng = rng
        self._request_id = request_id
        self._deadline = None if timeout is None else clock() + timeout
        self.attempt = 0
        """Attempts started so far (all of them)."""
        self._in_a_row = 0
        self._failing_since: float | None = None

    def start_attempt(self) -> float | None:
        """Count one attempt; return the gRPC timeout it may use (the time left, or None)."""
        self.attempt += 1
        self._in_a_row += 1
        if self._deadline is None:
            return None
        left = self._deadline - self._clock()
        if left <= 0:
            raise DeadlineExceededError(
                "the call's deadline passed while retrying", request_id=self._request_id
            )
        return left

    def progressed(self) -> None:
        """The current attempt delivered a new event: the next failure starts a fresh series
        (a job that outlives several broken connections is not cut off by max_attempts)."""
        self._in_a_row = 1
        self._failing_since = None

    def retry_delay(self, error: ServiceError) -> float | None:
        """Seconds to wait before trying again, or None when attempts or the deadline are spent.

        Only busy and unavailable errors are ever retried; the caller narrows that further (a
        stream broken mid-way is re-attached only on UNAVAILABLE, and only with a request key).
        """
        if not is_retryable(error):
            return None
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        riding_out = (
            isinstance(error, UnavailableError)
            and self._policy.max_attempts > 1
            and now - self._failing_since < self._policy.ride_out
        )
        if self._in_a_row >= self._policy.max_attempts and not riding_out:
            return None
        if error.retry_after is not None:
            delay = retry_info_delay(error.retry_after, self._rng)
        else:
            delay = self._policy.backoff(self._in_a_row, self._rng)
        if self._deadline is not None and now + delay >= self._deadline:
            return None  # waiting would use up the deadline: report the real cause instead
        return delay
