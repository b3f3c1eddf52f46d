"""Request keys and re-attach, for both clients, against `FakeJobs` (the server's job registry).

A stream broken mid-way re-attaches with the same key: the job is computed once (the fake's
`computations`), and the caller sees every event once, in order.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, Literal

import grpc
import pytest

from styletx_client import (
    NO_RETRY,
    AsyncStyleTransferClient,
    Event,
    OutOfMemoryError,
    Progress,
    Queued,
    Reason,
    RequestKeyReusedError,
    Result,
    RetryPolicy,
    RetryThrottling,
    ServerBusyError,
    Started,
    StyleTransferClient,
    UnavailableError,
)
from tests.support.fake_server import (
    Break,
    FakeJobs,
    FakeServer,
    FakeStyleTransfer,
    error_info,
    fail,
    retry_info,
    serve,
    started,
)
from tests.support.tcp_proxy import tcp_proxy

Kind = Literal["sync", "aio"]
KINDS: list[Kind] = ["sync", "aio"]
EXPECTED = [Queued, Started, *[Progress] * 6, Result]  # long_events(6), each once


def no_sleep(seconds: float) -> None:
    return None


async def no_async_sleep(seconds: float) -> None:
    return None


def run_stream(
    kind: Kind,
    target: str,
    *,
    request_key: str | None = None,
    on_event: Callable[[Event], object] = lambda event: None,
    **client: Any,
) -> tuple[list[Event], str]:
    """Every event of one call with either client, and the request key it sent; `on_event`
    runs in the consuming loop after each event."""
    events: list[Event] = []
    if kind == "sync":
        with StyleTransferClient(target, sleep=no_sleep, **client) as sync_client:
            stream = sync_client.stream(b"content", b"style", request_key=request_key)
            for event in stream:
                events.append(event)
                on_event(event)
            return events, stream.request_key

    async def run() -> tuple[list[Event], str]:
        async with AsyncStyleTransferClient(target, sleep=no_async_sleep, **client) as aclient:
            stream = aclient.stream(b"content", b"style", request_key=request_key)
            async for event in stream:
                events.append(event)
                on_event(event)
            return events, stream.request_key

    return asyncio.run(run())


def iterations(events: list[Event]) -> list[int]:
    return [e.iteration for e in events if isinstance(e, Progress)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_broken_mid_way_reattaches_by_key_and_repeats_nothing(kind: Kind) -> None:
    jobs = FakeJobs(breaks=[Break(after=4)])  # after queued, started, iterations 1 and 2
    with serve(jobs) as server:
        events, key = run_stream(kind, server.address)
    assert [type(e) for e in events] == EXPECTED
    assert iterations(events) == [1, 2, 3, 4, 5, 6]
    assert jobs.computations == 1
    assert jobs.attached == 1
    assert [c.request.request_key for c in jobs.calls] == [key, key]
    assert len({c.metadata["x-request-id"] for c in jobs.calls}) == 1
    # The key rides as a header too, for proxies that hash on it (deploy/README.md).
    assert [c.metadata["x-request-key"] for c in jobs.calls] == [key, key]


@pytest.mark.parametrize("kind", KINDS)
def test_a_reset_connection_reattaches_to_the_running_job(kind: Kind) -> None:
    jobs = FakeJobs(breaks=[Break(after=5, code=None)])  # stalls after iteration 3 until cut
    with serve(jobs) as server, tcp_proxy(server.address) as proxy:

        def cut_after_iteration_3(event: Event) -> None:
            # Cut once iteration 3 has arrived, so nothing was lost in flight: attaching sends
            # the current state and the rest, not events a broken connection swallowed.
            if isinstance(event, Progress) and event.iteration == 3:
                proxy.cut()

        events, _ = run_stream(kind, proxy.address, on_event=cut_after_iteration_3, timeout=60)
    assert [type(e) for e in events] == EXPECTED
    assert jobs.computations == 1
    assert len(jobs.calls) == 2
    assert proxy.accepted >= 2  # a new connection after the reset


@pytest.mark.parametrize("kind", KINDS)
def test_a_finished_job_gives_its_stored_result_to_the_same_key(kind: Kind) -> None:
    jobs = FakeJobs()
    with serve(jobs) as server:
        first, key = run_stream(kind, server.address)
        again, same = run_stream(kind, server.address, request_key=key)
    assert same == key
    assert [type(e) for e in again] == [Result]
    assert again[0] == first[-1]
    assert jobs.computations == 1


def test_a_restarted_client_reattaches_with_its_stored_key() -> None:
    """A caller that lost its process re-sends the request under the key it recorded."""
    jobs = FakeJobs(breaks=[Break(after=5, code=grpc.StatusCode.UNAVAILABLE)])
    key = "order-1234"
    seen: list[Event] = []
    with serve(jobs) as server:
        with (
            StyleTransferClient(server.address, retry=NO_RETRY) as first,
            pytest.raises(UnavailableError),
        ):
            first.stylize(b"content", b"style", request_key=key, on_event=seen.append)
        with StyleTransferClient(server.address) as second:
            result = second.stylize(b"content", b"style", request_key=key)
    assert isinstance(result, Result)
    assert iterations(seen) == [1, 2, 3]
    assert jobs.computations == 1


def test_without_a_key_a_broken_stream_fails_rather_than_computing_twice() -> None:
    jobs = FakeJobs(breaks=[Break(after=4)])
    with serve(jobs) as server, pytest.raises(UnavailableError):
        run_stream("sync", server.address, request_key="")
    assert [c.request.request_key for c in jobs.calls] == [""]
    assert jobs.computations == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_replica_draining_mid_stream_costs_a_re_attach_not_the_call(kind: Kind) -> None:
    key = "job-draining"
    with ExitStack() as stack:
        replicas = [stack.enter_context(serve(FakeJobs(name=f"r{i}"))) for i in range(3)]
        for replica in replicas:
            jobs_of(replica).breaks.append(Break(after=4, reason=Reason.DRAINING))
        events, _ = run_stream(kind, ",".join(r.address for r in replicas), request_key=key)
    # The next attempt goes wherever round robin sends it (each fake replica drains once, like
    # a fleet whose replicas roll one after another); repeated events are not delivered again.
    assert [type(e) for e in events] == EXPECTED
    assert iterations(events) == [1, 2, 3, 4, 5, 6]
    assert sum(len(jobs_of(r).calls) for r in replicas) >= 2


def jobs_of(server: FakeServer) -> FakeJobs:
    assert isinstance(server.servicer, FakeJobs)
    return server.servicer


@pytest.mark.parametrize("kind", KINDS)
def test_reusing_a_key_for_another_request_is_refused_and_not_retried(kind: Kind) -> None:
    jobs = FakeJobs()
    with serve(jobs) as server:
        _, key = run_stream(kind, server.address)
        with StyleTransferClient(server.address) as client, pytest.raises(RequestKeyReusedError):
            client.stylize(b"another content", b"style", request_key=key)
    assert len(jobs.calls) == 2
    assert jobs.computations == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "script",
    [
        fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory", error_info("OUT_OF_MEMORY")),
        fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory (no RetryInfo)"),
        fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory", before=[started()]),
    ],
    ids=["reason", "no-retry-info", "mid-stream"],
)
def test_out_of_memory_is_its_own_error_and_never_retried(kind: Kind, script: Any) -> None:
    fake = FakeStyleTransfer(script)
    with serve(fake) as server, pytest.raises(OutOfMemoryError) as info:
        run_stream(kind, server.address)
    assert len(fake.calls) == 1
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("kind", KINDS)
def test_each_call_sends_a_fresh_uuid4_key_unless_given_one(kind: Kind) -> None:
    jobs = FakeJobs()
    with serve(jobs) as server:
        _, first = run_stream(kind, server.address)
        _, second = run_stream(kind, server.address)
        _, chosen = run_stream(kind, server.address, request_key="my-key")
    assert uuid.UUID(first).version == 4
    assert uuid.UUID(second).version == 4
    assert first != second
    assert chosen == "my-key"
    assert [c.request.request_key for c in jobs.calls] == [first, second, "my-key"]


def test_a_job_broken_again_and_again_completes_while_each_attempt_progresses() -> None:
    """max_attempts bounds failures in a row; an attempt that delivered something resets it."""
    breaks = [Break(after=n) for n in range(3, 9)]  # one new event per attempt, six breaks
    jobs = FakeJobs(breaks=breaks)
    policy = RetryPolicy(max_attempts=2, throttling=None)
    with serve(jobs) as server:
        events, _ = run_stream("sync", server.address, retry=policy)
    assert [type(e) for e in events] == EXPECTED
    assert len(jobs.calls) == 7
    assert jobs.computations == 1


@pytest.mark.parametrize("kind", KINDS)
def test_the_retry_budget_stops_a_retry_storm(kind: Kind) -> None:
    # Refusals a server answered spend tokens (a replica restarting or leaving does not).
    fake = FakeStyleTransfer(fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", retry_info(0.01)))
    policy = RetryPolicy(max_attempts=10, throttling=RetryThrottling(max_tokens=4))

    def attempts(call: Callable[[], object]) -> int:
        before = len(fake.calls)
        with pytest.raises(ServerBusyError):
            call()
        return len(fake.calls) - before

    async def two_async_calls(address: str) -> list[int]:
        async with AsyncStyleTransferClient(address, sleep=no_async_sleep, retry=policy) as aclient:
            counts = []
            for _ in range(2):
                before = len(fake.calls)
                with pytest.raises(ServerBusyError):
                    await aclient.stylize(b"c", b"s")
                counts.append(len(fake.calls) - before)
            return counts

    with serve(fake) as server:
        if kind == "sync":
            with StyleTransferClient(server.address, sleep=no_sleep, retry=policy) as client:
                counts = [attempts(lambda: client.stylize(b"c", b"s")) for _ in range(2)]
        else:
            counts = asyncio.run(two_async_calls(server.address))
    # Tokens 4 -> 3 (retry) -> 2 (half: stop); the client's next call finds the bucket low.
    assert counts == [2, 1]
