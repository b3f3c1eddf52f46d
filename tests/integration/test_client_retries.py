"""Retries over the wire: UNAVAILABLE/RESOURCE_EXHAUSTED before the first event are retried with
the injected sleep, RetryInfo is honoured, nothing is retried mid-stream, attempts are bounded."""

from __future__ import annotations

import random

import grpc
import pytest

from styletx_client import (
    InvalidRequestError,
    Result,
    RetryPolicy,
    ServerBusyError,
    StyleTransferClient,
    UnavailableError,
)
from tests.support.fake_server import (
    FakeStyleTransfer,
    closed_port_address,
    fail,
    happy_events,
    progress,
    respond,
    retry_info,
    serve,
    started,
)


class Sleeps:
    """Records the waits instead of waiting, and moves a fake clock by them."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


class LowerBound(random.Random):
    """uniform(a, b) returns a: RetryInfo delays unjittered, backoffs zero."""

    def uniform(self, a: float, b: float) -> float:
        return a


def client_for(
    address: str, sleeps: Sleeps, rng: random.Random | None = None, **kwargs: object
) -> StyleTransferClient:
    return StyleTransferClient(
        address,
        sleep=sleeps.sleep,
        clock=sleeps.clock,
        rng=rng or random.Random(3),
        **kwargs,  # type: ignore[arg-type]
    )


def test_unavailable_then_success_is_retried_transparently() -> None:
    sleeps = Sleeps()
    fake = FakeStyleTransfer(
        fail(grpc.StatusCode.UNAVAILABLE, "draining"),
        fail(grpc.StatusCode.UNAVAILABLE, "draining"),
        respond(*happy_events()),
    )
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.5, multiplier=2.0, max_backoff=10.0)
    with serve(fake) as server, client_for(server.address, sleeps, retry=policy) as client:
        out = client.stylize(b"c", b"s")
    assert isinstance(out, Result)
    assert len(fake.calls) == 3
    assert len(sleeps.calls) == 2
    assert 0.0 <= sleeps.calls[0] <= 0.5
    assert 0.0 <= sleeps.calls[1] <= 1.0
    # All attempts are one logical call: same request id.
    assert len({c.metadata["x-request-id"] for c in fake.calls}) == 1


def test_queue_full_waits_as_long_as_retry_info_says() -> None:
    sleeps = Sleeps()
    fake = FakeStyleTransfer(
        fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_info(2.5)),
        respond(*happy_events()),
    )
    with serve(fake) as server, client_for(server.address, sleeps) as client:
        client.stylize(b"c", b"s")
    # At least the server's delay, jittered by up to half again.
    assert len(sleeps.calls) == 1
    assert 2.5 <= sleeps.calls[0] <= 3.75
    assert len(fake.calls) == 2


def test_without_a_request_key_no_retry_once_an_event_has_arrived() -> None:
    sleeps = Sleeps()
    fake = FakeStyleTransfer(
        fail(grpc.StatusCode.UNAVAILABLE, "worker lost", before=[started(), progress(1, 1)]),
        respond(*happy_events()),
    )
    with (
        serve(fake) as server,
        client_for(server.address, sleeps) as client,
        pytest.raises(UnavailableError, match="worker lost"),
    ):
        client.stylize(b"c", b"s", request_key="")
    assert len(fake.calls) == 1
    assert sleeps.calls == []


def test_invalid_argument_is_never_retried() -> None:
    sleeps = Sleeps()
    fake = FakeStyleTransfer(fail(grpc.StatusCode.INVALID_ARGUMENT, "bad"))
    with (
        serve(fake) as server,
        client_for(server.address, sleeps) as client,
        pytest.raises(InvalidRequestError),
    ):
        client.stylize(b"c", b"s")
    assert len(fake.calls) == 1
    assert sleeps.calls == []


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    sleeps = Sleeps()
    fake = FakeStyleTransfer(fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_info(1)))
    with (
        serve(fake) as server,
        client_for(server.address, sleeps, retry=RetryPolicy(max_attempts=3)) as client,
        pytest.raises(ServerBusyError, match="queue full") as info,
    ):
        client.stylize(b"c", b"s")
    assert len(fake.calls) == 3
    assert len(sleeps.calls) == 2
    assert all(1.0 <= s <= 1.5 for s in sleeps.calls)
    assert info.value.__suppress_context__ is True


def test_total_deadline_spans_attempts() -> None:
    sleeps = Sleeps()
    fake = FakeStyleTransfer(fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_info(4)))
    with (
        serve(fake) as server,
        client_for(server.address, sleeps, LowerBound(), timeout=10.0) as client,
        pytest.raises(ServerBusyError),
    ):
        client.stylize(b"c", b"s")
    # Unjittered (LowerBound) waits of 4 s at t=0 and t=4; a third wait would end at t=12,
    # past the 10 s deadline.
    assert sleeps.calls == [4.0, 4.0]
    assert len(fake.calls) == 3
    remaining = [c.time_remaining for c in fake.calls]
    assert remaining[0] is not None and remaining[0] > 9.0
    assert remaining[2] is not None and remaining[2] <= 3.0


def test_unreachable_server_is_retried_then_reported_unavailable() -> None:
    sleeps = Sleeps()
    with (
        client_for(
            closed_port_address(), sleeps, retry=RetryPolicy(max_attempts=3, ride_out=0)
        ) as client,
        pytest.raises(UnavailableError),
    ):
        client.stylize(b"c", b"s")
    assert len(sleeps.calls) == 2


def test_an_unreachable_server_is_retried_for_the_whole_ride_out_window() -> None:
    """The default policy keeps trying a server that is down (a restart) for 30 s, however many
    attempts that takes, and then reports it unavailable."""
    sleeps = Sleeps()
    with (
        client_for(closed_port_address(), sleeps) as client,
        pytest.raises(UnavailableError),
    ):
        client.stylize(b"c", b"s")
    assert sum(sleeps.calls) >= RetryPolicy().ride_out
    assert len(sleeps.calls) > RetryPolicy().max_attempts


def test_real_sleep_is_used_by_default() -> None:
    fake = FakeStyleTransfer(fail(grpc.StatusCode.UNAVAILABLE, "x"), respond(*happy_events()))
    policy = RetryPolicy(initial_backoff=0.01, max_backoff=0.01)
    with serve(fake) as server, StyleTransferClient(server.address, retry=policy) as client:
        assert isinstance(client.stylize(b"c", b"s"), Result)
    assert len(fake.calls) == 2
