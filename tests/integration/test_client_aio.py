"""AsyncStyleTransferClient: the same surface on grpc.aio, against the scripted fake server."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from styletx_client import (
    AsyncStyleTransferClient,
    Event,
    InvalidRequestError,
    Progress,
    Queued,
    Result,
    RetryPolicy,
    ServerBusyError,
    ServiceError,
    ServingStatus,
    Started,
    UnavailableError,
)
from tests.support.fake_server import (
    FakeStyleTransfer,
    bad_request,
    fail,
    happy_events,
    progress,
    respond,
    retry_info,
    serve,
    slow,
    started,
)

CANCEL_WAIT = 10.0


def test_stream_and_stylize() -> None:
    async def run(address: str) -> tuple[list[Event], Result]:
        async with AsyncStyleTransferClient(address, token="tok") as client:
            events = [e async for e in client.stream(b"c", b"s", size=32)]
            out = await client.stylize(b"c", b"s")
        return events, out

    with serve() as fake:
        events, out = asyncio.run(run(fake.address))
    assert [type(e) for e in events] == [Queued, Queued, Started, Progress, Progress, Result]
    assert out == events[-1]
    assert fake.servicer.calls[0].request.options.size == 32
    assert fake.servicer.calls[0].metadata["authorization"] == "Bearer tok"


def test_on_event_sees_every_event() -> None:
    seen: list[object] = []

    async def run(address: str) -> Result:
        async with AsyncStyleTransferClient(address) as client:
            return await client.stylize(b"c", b"s", on_event=seen.append)

    with serve() as fake:
        out = asyncio.run(run(fake.address))
    assert len(seen) == len(happy_events())
    assert seen[-1] == out


def test_errors_are_mapped_from_none() -> None:
    fake = FakeStyleTransfer(
        fail(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad",
            bad_request(("content_image", "not an image")),
        )
    )

    async def run(address: str) -> None:
        async with AsyncStyleTransferClient(address) as client:
            await client.stylize(b"c", b"s")

    with serve(fake) as server, pytest.raises(InvalidRequestError) as info:
        asyncio.run(run(server.address))
    assert info.value.field_violations[0].field == "content_image"
    assert info.value.__suppress_context__ is True


def test_retries_await_the_injected_sleep_and_stop_mid_stream() -> None:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    retried = FakeStyleTransfer(
        fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", retry_info(1.5)),
        respond(*happy_events()),
    )
    mid_stream = FakeStyleTransfer(
        fail(grpc.StatusCode.UNAVAILABLE, "lost", before=[started(), progress(1, 1)]),
    )

    async def run(address: str, key: str | None = None) -> Result:
        async with AsyncStyleTransferClient(
            address, sleep=fake_sleep, rng=random.Random(1)
        ) as client:
            return await client.stylize(b"c", b"s", request_key=key)

    with serve(retried) as server:
        assert isinstance(asyncio.run(run(server.address)), Result)
    assert len(waits) == 1
    assert 1.5 <= waits[0] <= 2.25  # RetryInfo, jittered up by at most half
    assert len(retried.calls) == 2
    # Without a request key a broken stream is not retried (it would start the job over).
    with serve(mid_stream) as server, pytest.raises(UnavailableError):
        asyncio.run(run(server.address, key=""))
    assert len(mid_stream.calls) == 1
    assert len(waits) == 1


def test_bounded_attempts() -> None:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    fake = FakeStyleTransfer(fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", retry_info(1)))

    async def run(address: str) -> None:
        async with AsyncStyleTransferClient(
            address, sleep=fake_sleep, retry=RetryPolicy(max_attempts=2)
        ) as client:
            await client.stylize(b"c", b"s")

    with serve(fake) as server, pytest.raises(ServerBusyError):
        asyncio.run(run(server.address))
    assert len(fake.calls) == 2
    assert len(waits) == 1
    assert 1.0 <= waits[0] <= 1.5


def test_aclose_cancels_the_call() -> None:
    fake = FakeStyleTransfer(slow())

    async def run(address: str) -> None:
        async with AsyncStyleTransferClient(address) as client:
            stream = client.stream(b"c", b"s")
            async with stream:
                async for event in stream:
                    if isinstance(event, Progress):
                        break
            assert await asyncio.to_thread(fake.calls[0].cancelled.wait, CANCEL_WAIT)

    with serve(fake) as server:
        asyncio.run(run(server.address))


def test_cancelling_the_task_cancels_the_call() -> None:
    fake = FakeStyleTransfer(slow())

    async def run(address: str) -> None:
        async with AsyncStyleTransferClient(address) as client:
            task = asyncio.create_task(client.stylize(b"c", b"s"))
            while not fake.calls:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(fake.calls[0].cancelled.wait, CANCEL_WAIT)

    with serve(fake) as server:
        asyncio.run(run(server.address))


def test_deadline() -> None:
    fake = FakeStyleTransfer(slow())

    async def run(address: str) -> None:
        async with AsyncStyleTransferClient(address, timeout=0.3) as client:
            await client.stylize(b"c", b"s")

    with serve(fake) as server, pytest.raises(ServiceError) as info:
        asyncio.run(run(server.address))
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_health() -> None:
    async def run(address: str) -> list[ServingStatus]:
        async with AsyncStyleTransferClient(address) as client:
            return [
                await client.health(),
                await client.health("styletx.v1.StyleTransferService"),
                await client.health("no.such.Service"),
            ]

    with serve() as fake:
        statuses = asyncio.run(run(fake.address))
    assert statuses == [
        ServingStatus.SERVING,
        ServingStatus.SERVING,
        ServingStatus.SERVICE_UNKNOWN,
    ]
