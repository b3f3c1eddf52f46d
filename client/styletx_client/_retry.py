"""Retry policy: exponential backoff with full jitter, the server's RetryInfo, one total deadline.

Done in the SDK rather than by gRPC's service-config retries, which cannot honour RetryInfo and
cannot tell "before the first response" from "mid-stream" the way a streaming caller needs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .errors import DeadlineExceededError, ServerBusyError, ServiceError, UnavailableError

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often a call that failed before its first response is tried again.

    Only UNAVAILABLE and RESOURCE_EXHAUSTED (queue full) are retried. The n-th retry waits a
    uniformly random time in [0, min(max_backoff, initial_backoff * multiplier**(n-1))] ("full
    jitter"), unless the server sent google.rpc.RetryInfo, whose delay is used as given.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.25
    max_backoff: float = 10.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Jittered wait before the `retry`-th retry (1-based)."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return rng.uniform(0.0, cap)


NO_RETRY = RetryPolicy(max_attempts=1)


def is_retryable(error: ServiceError) -> bool:
    """Only overload and unreachability are worth retrying; everything else would fail again."""
    return isinstance(error, ServerBusyError | UnavailableError)


class AttemptBudget:
    """Tracks attempts and the total deadline of one logical call across its retries."""

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

    def start_attempt(self) -> float | None:
        """Count one attempt; return the gRPC timeout it may use (the time left, or None)."""
        self.attempt += 1
        if self._deadline is None:
            return None
        left = self._deadline - self._clock()
        if left <= 0:
            raise DeadlineExceededError(
                "the call's deadline passed while retrying", request_id=self._request_id
            )
        return left

    def retry_delay(self, error: ServiceError) -> float | None:
        """Seconds to wait before trying again, or None when `error` is final."""
        if not is_retryable(error) or self.attempt >= self._policy.max_attempts:
            return None
        if error.retry_after is not None:
            delay = error.retry_after
        else:
            delay = self._policy.backoff(self.attempt, self._rng)
        if self._deadline is not None and self._clock() + delay >= self._deadline:
            return None  # waiting would use up the deadline: report the real cause instead
        return delay
