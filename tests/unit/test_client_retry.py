"""RetryPolicy and AttemptBudget: full-jitter backoff, RetryInfo, bounded attempts, one deadline."""

from __future__ import annotations

import random

import grpc
import pytest

from styletx_client import (
    DeadlineExceededError,
    InvalidRequestError,
    RetryPolicy,
    ServerBusyError,
    ServiceError,
    UnavailableError,
)
from styletx_client._retry import AttemptBudget, is_retryable


class UpperBound(random.Random):
    """An rng whose uniform(a, b) returns b, exposing the backoff cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


class LowerBound(random.Random):
    """An rng whose uniform(a, b) returns a."""

    def uniform(self, a: float, b: float) -> float:
        return a


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_cap_grows_exponentially_up_to_max() -> None:
    policy = RetryPolicy(initial_backoff=0.5, multiplier=3.0, max_backoff=5.0)
    caps = [policy.backoff(n, UpperBound()) for n in range(1, 6)]
    assert caps == pytest.approx([0.5, 1.5, 4.5, 5.0, 5.0])


def test_backoff_is_full_jitter_between_zero_and_cap() -> None:
    policy = RetryPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=8.0)
    rng = random.Random(7)
    samples = [policy.backoff(3, rng) for _ in range(500)]
    assert all(0.0 <= s <= 4.0 for s in samples)
    # Full jitter spreads over the whole range rather than clustering at the cap.
    assert min(samples) < 0.5
    assert max(samples) > 3.5


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"initial_backoff": -1.0}, {"max_backoff": -1.0}, {"multiplier": 0.5}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (UnavailableError("down"), True),
        (ServerBusyError("full"), True),
        (InvalidRequestError("bad"), False),
        (DeadlineExceededError("late"), False),
        (ServiceError("x", code=grpc.StatusCode.INTERNAL), False),
    ],
)
def test_only_unavailable_and_busy_are_retryable(error: ServiceError, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def budget(
    policy: RetryPolicy, timeout: float | None, clock: FakeClock | None = None
) -> AttemptBudget:
    return AttemptBudget(policy, timeout, clock or FakeClock(), UpperBound(), "rid")


def test_attempts_are_bounded() -> None:
    b = budget(RetryPolicy(max_attempts=3, initial_backoff=1.0, ride_out=0), None)
    delays = []
    for _ in range(5):
        b.start_attempt()
        delay = b.retry_delay(UnavailableError("down"))
        if delay is None:
            break
        delays.append(delay)
    assert b.attempt == 3
    assert delays == pytest.approx([1.0, 2.0])


def test_non_retryable_error_is_final_at_once() -> None:
    b = budget(RetryPolicy(), None)
    b.start_attempt()
    assert b.retry_delay(InvalidRequestError("bad")) is None


def test_server_retry_info_overrides_the_backoff_jittered_up_to_half_again() -> None:
    b = budget(RetryPolicy(initial_backoff=0.1, max_backoff=0.2), None)
    b.start_attempt()
    assert b.retry_delay(ServerBusyError("full", retry_after=3.0)) == pytest.approx(4.5)
    low = AttemptBudget(RetryPolicy(), None, FakeClock(), LowerBound(), "rid")
    low.start_attempt()
    assert low.retry_delay(ServerBusyError("full", retry_after=3.0)) == pytest.approx(3.0)


def test_retry_info_delays_are_spread_never_below_the_servers() -> None:
    rng = random.Random(5)
    delays = []
    for _ in range(200):
        b = AttemptBudget(RetryPolicy(), None, FakeClock(), rng, "rid")
        b.start_attempt()
        delay = b.retry_delay(ServerBusyError("full", retry_after=2.0))
        assert delay is not None
        delays.append(delay)
    assert all(2.0 <= d <= 3.0 for d in delays)
    assert max(delays) - min(delays) > 0.8  # callers refused together do not return together


def test_each_attempt_gets_the_time_left_of_one_total_deadline() -> None:
    clock = FakeClock()
    b = budget(RetryPolicy(), 10.0, clock)
    assert b.start_attempt() == pytest.approx(10.0)
    clock.now += 4.0
    assert b.start_attempt() == pytest.approx(6.0)


def test_no_retry_when_waiting_would_pass_the_deadline() -> None:
    clock = FakeClock()
    b = budget(RetryPolicy(), 5.0, clock)
    b.start_attempt()
    clock.now += 3.0
    # RetryInfo 1 s, jittered to 1.5 s by UpperBound: ends at t=4.5, inside the 5 s deadline.
    assert b.retry_delay(ServerBusyError("full", retry_after=1.0)) == pytest.approx(1.5)
    assert b.retry_delay(ServerBusyError("full", retry_after=2.5)) is None


def test_starting_an_attempt_after_the_deadline_raises() -> None:
    clock = FakeClock()
    b = budget(RetryPolicy(), 1.0, clock)
    b.start_attempt()
    clock.now += 2.0
    with pytest.raises(DeadlineExceededError) as info:
        b.start_attempt()
    assert info.value.request_id == "rid"
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_without_timeout_attempts_have_no_deadline() -> None:
    b = budget(RetryPolicy(), None)
    assert b.start_attempt() is None


def test_unavailable_is_ridden_out_for_the_window_whatever_max_attempts_says() -> None:
    """A restart of up to `ride_out` seconds: attempts go on past max_attempts until the window
    since the first failure in a row is over (then max_attempts bounds them again)."""
    clock = FakeClock()
    b = budget(RetryPolicy(max_attempts=2, initial_backoff=1.0, max_backoff=4.0), None, clock)
    waited = 0.0
    while True:
        b.start_attempt()
        delay = b.retry_delay(UnavailableError("connection refused"))
        if delay is None:
            break
        clock.now += delay
        waited += delay
    assert waited >= RetryPolicy().ride_out == 30.0
    assert b.attempt > 2
    # A busy server is not an outage: max_attempts alone bounds it.
    busy = budget(RetryPolicy(max_attempts=2), None, FakeClock())
    busy.start_attempt()
    assert busy.retry_delay(ServerBusyError("queue full")) is not None
    busy.start_attempt()
    assert busy.retry_delay(ServerBusyError("queue full")) is None


def test_progress_starts_a_new_ride_out_window() -> None:
    clock = FakeClock()
    b = budget(RetryPolicy(max_attempts=2, ride_out=10.0), None, clock)
    b.start_attempt()
    assert b.retry_delay(UnavailableError("down")) is not None
    clock.now += 20.0
    b.start_attempt()
    assert b.retry_delay(UnavailableError("down")) is None  # 2 attempts, 20 s into the outage
    b.progressed()  # it came back and delivered an event; then broke again
    b.start_attempt()
    assert b.retry_delay(UnavailableError("down")) is not None


def test_the_ride_out_is_bounded_by_the_deadline() -> None:
    clock = FakeClock()
    b = budget(RetryPolicy(max_attempts=2), 3.0, clock)
    b.start_attempt()
    clock.now += 2.9
    assert b.retry_delay(UnavailableError("down")) is None  # any wait would pass the deadline


def test_one_attempt_means_no_retry_not_even_a_ride_out() -> None:
    b = budget(RetryPolicy(max_attempts=1), None)
    b.start_attempt()
    assert b.retry_delay(UnavailableError("down")) is None
