"""Jobs by request key through the real server and the SDK: GetJob's states (queued with its
position, running with progress, done with and without the image, failed, cancelled), WatchJob,
CancelJob (idempotent, frees the worker within one evaluation, ends every stream of the job with
CANCELLED), NOT_FOUND after the result TTL, key checks, auth and the request metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import numpy as np
import pytest

from styletx import Progress as EngineProgress
from styletx import Result as EngineResult
from styletx import StyleOptions
from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_client import (
    AsyncStyleTransferClient,
    AuthenticationError,
    CancelledError,
    InvalidRequestError,
    JobNotFoundError,
    OutOfMemoryError,
    Progress,
    Queued,
    Reason,
    Result,
    Started,
    StyleTransferClient,
)
from styletx_server.ops.app import StyletxServer
from tests.integration.conftest import (
    EVALUATIONS,
    SIZE,
    WAIT,
    Consumer,
    GatedStylizer,
    ServerFactory,
    collect,
    make_request,
    reason_of,
    wait_for,
)
from tests.support.engines import StubEngine

#: A job long enough that it is still running whenever a test looks at it.
LONG = pb.StyleOptions(size=SIZE, max_evaluations=1000, seed=1)


def keyed(key: str, **overrides: Any) -> pb.StylizeRequest:
    return make_request(request_key=key, **overrides)


@pytest.fixture
def client_for() -> Iterator[Callable[..., StyleTransferClient]]:
    """SDK clients of a server; closed after the test."""
    clients: list[StyleTransferClient] = []

    def make(server: StyletxServer, **kwargs: Any) -> StyleTransferClient:
        client = StyleTransferClient(f"127.0.0.1:{server.port}", timeout=WAIT, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


class FailingStylizer(StubEngine):
    """An engine that runs out of memory on every job."""

    def stylize(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        options: StyleOptions | None = None,
        on_progress: Callable[[EngineProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> EngineResult:
        raise MemoryError("no room")


def test_get_job_says_queued_with_position_and_running_with_progress(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, client_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    stub = stub_for(server)
    client = client_for(server)
    running = Consumer(stub, keyed("first"))
    assert gated.paused.wait(WAIT)
    # The server's default of 200 evaluations: a deadline that a slow CPU running other tests
    # beside this one also meets.
    waiting = Consumer(
        stub, keyed("second", options=pb.StyleOptions(size=SIZE, seed=3)), timeout=8 * WAIT
    )
    wait_for(lambda: waiting.kinds()[:1] == ["queued"])

    queued = client.get_job("second")
    assert queued.state == "queued" and queued.position == 1 and not queued.ended
    assert queued.started is None and queued.result is None and queued.error is None
    assert queued.options is not None and queued.options.size == SIZE
    assert queued.options.max_evaluations == 200  # resolved: the server default filled in
    assert queued.queue_time > 0
    assert queued.request_id == waiting.events[0].queued.request_id

    wait_for(lambda: "progress" in running.kinds())
    info = client.get_job("first")
    assert info.state == "running" and info.position == 0
    assert info.started is not None and info.started.width == SIZE
    assert info.progress is not None and info.progress.iteration >= 1
    assert info.progress.max_evaluations == EVALUATIONS
    assert info.compute_time > 0 and info.result is None

    gated.release()
    assert running.code() == grpc.StatusCode.OK and waiting.code(8 * WAIT) == grpc.StatusCode.OK


def test_get_job_of_a_done_job_with_and_without_the_image(
    server_factory: ServerFactory, stub_for: Any, client_for: Any
) -> None:
    server = server_factory()
    events = collect(stub_for(server), keyed("done-1"))
    expected = events[-1].result
    client = client_for(server)

    info = client.get_job("done-1")
    assert info.state == "done" and info.ended and info.error is None
    assert info.result is not None and info.result.image_bytes == expected.image.data
    assert info.result.evaluations == EVALUATIONS
    assert info.started is not None and info.options is not None
    assert info.compute_time == pytest.approx(info.result.compute_time)

    bare = client.get_job("done-1", include_image=False)
    assert bare.state == "done" and bare.result is not None
    assert bare.result.image_bytes == b""
    assert (bare.result.width, bare.result.height) == (expected.image.width, expected.image.height)


def test_a_failed_job_says_why_and_watching_it_raises_its_error(
    server_factory: ServerFactory, stub_for: Any, client_for: Any
) -> None:
    server = server_factory(engine=FailingStylizer())
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub_for(server), keyed("oom"))
    assert reason_of(caught.value) == "OUT_OF_MEMORY"
    client = client_for(server)
    info = client.get_job("oom")
    assert info.state == "failed" and info.ended and info.result is None
    assert isinstance(info.error, OutOfMemoryError)
    assert info.error.reason == Reason.OUT_OF_MEMORY and info.error.request_key == "oom"
    with pytest.raises(OutOfMemoryError):
        list(client.watch_job("oom"))


def test_cancel_frees_the_worker_within_one_evaluation_and_ends_every_stream(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, client_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    stub = stub_for(server)
    client = client_for(server)
    original = Consumer(stub, keyed("victim", options=LONG))
    assert gated.paused.wait(WAIT)
    watcher = client_for(server).watch_job("victim")
    first = next(watcher)
    assert isinstance(first, Started)
    waiting = Consumer(stub, keyed("next"))
    wait_for(lambda: waiting.kinds()[:1] == ["queued"])

    assert client.cancel_job("victim") == "cancelled"
    # The worker stopped within one evaluation and took the queued job.
    assert gated.evaluations_at_pause is not None
    assert stylizer.evaluations_total - gated.evaluations_at_pause <= 1
    wait_for(lambda: "started" in waiting.kinds())

    assert original.code() == grpc.StatusCode.CANCELLED
    assert reason_of(original.error) == "CANCELLED"
    assert "CancelJob" in (original.error.details() or "")  # type: ignore[union-attr]
    with pytest.raises(CancelledError) as cancelled:
        list(watcher)
    assert cancelled.value.reason == Reason.CANCELLED

    assert client.cancel_job("victim") == "cancelled"  # idempotent
    info = client.get_job("victim")
    assert info.state == "cancelled" and isinstance(info.error, CancelledError)
    assert info.progress is not None  # where it stopped
    gated.release()
    assert waiting.code() == grpc.StatusCode.OK
    assert client.cancel_job("next") == "done"  # too late: nothing changes
    assert client.get_job("next").state == "done"


def test_cancel_a_queued_job_and_a_lingering_one(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, client_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, linger=WAIT)
    stub = stub_for(server)
    client = client_for(server)
    lingering = Consumer(stub, keyed("left", options=LONG))
    assert gated.paused.wait(WAIT)
    queued = Consumer(stub, keyed("queued"))
    wait_for(lambda: queued.kinds()[:1] == ["queued"])

    assert client.cancel_job("queued") == "cancelled"
    assert queued.code() == grpc.StatusCode.CANCELLED
    assert server.admission.waiting == 0
    assert client.get_job("queued").state == "cancelled"

    lingering.call.cancel()  # its caller left: a keyed job keeps running for --linger
    assert lingering.code() == grpc.StatusCode.CANCELLED
    assert client.get_job("left").state == "running"
    assert client.cancel_job("left") == "cancelled"
    assert server.budget.used == 0  # released before CancelJob answered
    wait_for(lambda: server.admission.running == 0)
    # A cancelled key can be sent again: it starts a new job.
    gated.release()
    assert collect(stub, keyed("queued"))[-1].HasField("result")


def test_watch_job_sends_the_latest_state_first_then_the_result(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, client_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    stub = stub_for(server)
    original = Consumer(stub, keyed("watched"))
    assert gated.paused.wait(WAIT)
    wait_for(lambda: "progress" in original.kinds())
    client = client_for(server)
    with client.watch_job("watched") as events:
        first, second = next(events), next(events)
        assert isinstance(first, Started) and isinstance(second, Progress)
        assert second.iteration == original.events[-1].progress.iteration  # the latest
        gated.release()
        rest = list(events)
    assert isinstance(rest[-1], Result)
    assert original.code() == grpc.StatusCode.OK
    assert rest[-1].image_bytes == original.events[-1].result.image.data
    assert gated.calls == 1  # nothing was computed twice
    # Watching a finished job: its result at once.
    assert [type(e) for e in client.watch_job("watched")] == [Result]


def test_watch_a_queued_job_starts_with_its_position(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, client_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    stub = stub_for(server)
    running = Consumer(stub, keyed("busy"))
    assert gated.paused.wait(WAIT)
    waiting = Consumer(stub, keyed("later"))
    wait_for(lambda: waiting.kinds()[:1] == ["queued"])
    events = client_for(server).watch_job("later")
    first = next(events)
    assert isinstance(first, Queued) and first.position == 1
    gated.release()
    assert isinstance(list(events)[-1], Result)
    assert running.code() == grpc.StatusCode.OK and waiting.code() == grpc.StatusCode.OK


def test_not_found_after_the_result_ttl_and_for_unknown_keys(
    server_factory: ServerFactory, stub_for: Any, client_for: Any
) -> None:
    server = server_factory(result_ttl=0.5)
    stub = stub_for(server)
    collect(stub, keyed("short-lived"))
    client = client_for(server)
    assert client.get_job("short-lived").state == "done"
    time.sleep(0.6)
    for call in (
        lambda: client.get_job("short-lived"),
        lambda: list(client.watch_job("short-lived")),
        lambda: client.cancel_job("short-lived"),
        lambda: client.get_job("never-seen"),
    ):
        with pytest.raises(JobNotFoundError) as caught:
            call()
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert caught.value.reason == Reason.JOB_NOT_FOUND
        assert "--result-ttl" in caught.value.message
    with pytest.raises(grpc.RpcError) as raw:
        stub.GetJob(pb.GetJobRequest(request_key="never-seen"), timeout=WAIT)
    assert raw.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(raw.value) == "JOB_NOT_FOUND"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129])
def test_malformed_keys_are_invalid_like_stylize_s(
    server_factory: ServerFactory, stub_for: Any, bad: str
) -> None:
    stub = stub_for(server_factory())
    calls = (
        lambda: stub.GetJob(pb.GetJobRequest(request_key=bad), timeout=WAIT),
        lambda: list(stub.WatchJob(pb.WatchJobRequest(request_key=bad), timeout=WAIT)),
        lambda: stub.CancelJob(pb.CancelJobRequest(request_key=bad), timeout=WAIT),
    )
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(caught.value) == "INVALID_INPUT"
        assert "request_key" in (caught.value.details() or "")


def test_the_sdk_reports_a_malformed_key_with_its_field(
    server_factory: ServerFactory, client_for: Any
) -> None:
    client = client_for(server_factory())
    with pytest.raises(InvalidRequestError) as caught:
        client.get_job("has space")
    assert [v.field for v in caught.value.field_violations] == ["request_key"]
    with pytest.raises(ValueError, match="empty"):
        client.get_job("")


def test_the_job_rpcs_need_the_token(
    server_factory: ServerFactory, client_for: Any, stub_for: Any
) -> None:
    server = server_factory(auth_token="s3cret")
    for call in (
        lambda c: c.get_job("k"),
        lambda c: list(c.watch_job("k")),
        lambda c: c.cancel_job("k"),
    ):
        with pytest.raises(AuthenticationError):
            call(client_for(server))
    authed = client_for(server, token="s3cret")
    with pytest.raises(JobNotFoundError):
        authed.get_job("k")


def test_job_calls_are_counted_by_method(
    server_factory: ServerFactory, stub_for: Any, client_for: Any
) -> None:
    server = server_factory()
    collect(stub_for(server), keyed("counted"))
    client = client_for(server)
    client.get_job("counted")
    list(client.watch_job("counted"))
    client.cancel_job("counted")
    with pytest.raises(JobNotFoundError):
        client.get_job("unknown")
    registry = server.metrics.registry

    def requests(method: str, code: str, reason: str) -> float | None:
        labels = {"method": method, "code": code, "reason": reason, "tenant": "default"}
        return registry.get_sample_value("styletx_requests_total", labels)

    for method in ("GetJob", "WatchJob", "CancelJob"):
        assert requests(method, "OK", "ok") == 1
    assert requests("GetJob", "NOT_FOUND", "job_not_found") == 1


def test_the_asyncio_client_gets_watches_and_cancels(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    original = Consumer(stub_for(server), keyed("aio", options=LONG))
    assert gated.paused.wait(WAIT)

    async def scenario() -> None:
        async with AsyncStyleTransferClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
            info = await client.get_job("aio")
            assert info.state == "running"
            events = client.watch_job("aio")
            assert isinstance(await anext(events), Started)
            assert await client.cancel_job("aio") == "cancelled"
            with pytest.raises(CancelledError):
                async for _ in events:
                    pass
            assert (await client.get_job("aio")).state == "cancelled"
            with pytest.raises(JobNotFoundError):
                await client.cancel_job("nothing-here")

    asyncio.run(scenario())
    assert original.code() == grpc.StatusCode.CANCELLED
