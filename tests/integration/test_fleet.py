"""Replicas sharing one job store, in one process (the in-memory store shared by two servers):
a call on one replica runs where a worker is free, any replica answers for any key (Stylize
re-attach, GetJob, WatchJob resumed by event id, CancelJob), and a store that does not answer
refuses calls with STORE_UNAVAILABLE and turns readiness NOT_SERVING.

The same paths against a real Redis and killed server processes: tests/e2e/test_fleet_chaos.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.ops.app import StyletxServer
from styletx_server.ops.config import ServerConfig
from styletx_server.store.memory import MemoryStore
from styletx_server.store.protocol import (
    Created,
    JobState,
    JobStore,
    StoreConfig,
    StoreError,
    StoreUnavailable,
)
from tests.integration.conftest import (
    WAIT,
    Consumer,
    GatedStylizer,
    channel_to,
    collect,
    has_retry_info,
    make_request,
    png,
    reason_of,
    wait_for,
)

LONG = pb.StyleOptions(size=48, max_evaluations=1000, seed=1)
LARGE_WAIT = 10 * WAIT


class FlakyStore:
    """A store whose calls (those named in `only`, else every one) fail with `error` while
    `down` is set; `failed` counts the failures by call."""

    def __init__(
        self,
        inner: JobStore,
        *,
        error: type[StoreError] = StoreUnavailable,
        only: frozenset[str] | None = None,
    ) -> None:
        self.inner = inner
        self.down = threading.Event()
        self.error = error
        self.only = only
        self.failed: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name == "config" or not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down.is_set() and (self.only is None or name in self.only):
                self.failed[name] += 1
                raise self.error(f"{name}: store down (test)")
            return await attribute(*args, **kwargs)

        return call


Fleet = Callable[..., list[StyletxServer]]


@pytest.fixture
def fleet(stylizer: Stylizer) -> Iterator[Fleet]:
    """`fleet(n, store=..., engines=...)`: n ready replicas sharing one store."""
    started: list[StyletxServer] = []

    def start(
        count: int = 2,
        *,
        store: JobStore | None = None,
        engines: list[Any] | None = None,
        **config: Any,
    ) -> list[StyletxServer]:
        shared = store or MemoryStore(StoreConfig(lease_seconds=1.0, result_ttl=60.0))
        base = ServerConfig(
            address="127.0.0.1:0",
            metrics_port=0,
            workers=1,
            queue_size=8,
            warmup=False,
            grace_period=5.0,
        )
        replicas = []
        for index in range(count):
            engine = stylizer if engines is None else engines[index]
            server = StyletxServer(
                replace(base, **config),
                stylizer=engine,
                registry=CollectorRegistry(),
                store=shared,
            )
            started.append(server)
            server.start()
            assert server.wait_until_ready(WAIT)
            replicas.append(server)
        return replicas

    yield start
    for server in started:
        server.stop()


def stub_of(server: StyletxServer) -> pb_grpc.StyleTransferServiceStub:
    return pb_grpc.StyleTransferServiceStub(channel_to(server))


def evaluations(server: StyletxServer) -> float:
    value = server.metrics.registry.get_sample_value(
        "styletx_lbfgs_evaluations_total", {"tenant": "default"}
    )
    return value or 0.0


def test_a_keyed_job_is_served_by_every_replica_and_computed_once(fleet: Fleet) -> None:
    one, two = fleet(2)
    request = make_request(request_key="shared-1")
    first = collect(stub_of(one), request)
    assert first[-1].HasField("result")
    ran_events = [e for e in first if e.HasField("started") or e.HasField("progress")]
    assert ran_events and all(e.event_id > 0 for e in ran_events)  # numbered: resumable
    ran = evaluations(one) + evaluations(two)

    again = collect(stub_of(two), request)  # attaches to the stored result on the other replica
    assert again[-1].result.image.data == first[-1].result.image.data
    assert evaluations(one) + evaluations(two) == ran  # not computed again

    view = stub_of(two).GetJob(pb.GetJobRequest(request_key="shared-1"), timeout=WAIT)
    assert view.state == pb.JOB_STATE_DONE
    assert view.request_key == "shared-1"
    assert view.result.image.data == first[-1].result.image.data

    other = make_request(request_key="shared-1", options=pb.StyleOptions(size=48, seed=9))
    with pytest.raises(grpc.RpcError) as refused:
        collect(stub_of(two), other)
    assert refused.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(refused.value) == "KEY_REUSED"


def test_work_goes_to_the_replica_with_a_free_worker(fleet: Fleet, stylizer: Stylizer) -> None:
    store = MemoryStore(StoreConfig(lease_seconds=1.0))
    gated = GatedStylizer(stylizer)
    (one,) = fleet(1, store=store, engines=[gated])
    # Every call reaches replica one; its only worker is held by the first job.
    held_options = pb.StyleOptions(size=48, max_evaluations=20, seed=1)
    held = Consumer(stub_of(one), make_request(options=held_options))
    assert gated.paused.wait(WAIT)
    (two,) = fleet(1, store=store)

    def fleet_running() -> float | None:
        labels = {"state": "running", "tenant": "default"}
        return two.metrics.registry.get_sample_value("styletx_fleet_jobs", labels)

    wait_for(lambda: fleet_running() == 1)  # the fleet's count, read from the store by two
    quick = [pb.StyleOptions(size=48, seed=seed, max_evaluations=4) for seed in range(3)]
    results = [collect(stub_of(one), make_request(options=options)) for options in quick]
    assert all(r[-1].HasField("result") for r in results)
    assert evaluations(two) >= 3 * 4  # replica two ran them while one was busy
    assert gated.calls == 1
    gated.release()
    assert held.code() is grpc.StatusCode.OK


def test_cancel_and_watch_from_another_replica(fleet: Fleet, stylizer: Stylizer) -> None:
    gated = GatedStylizer(stylizer)
    one, two = fleet(2, engines=[gated, gated])
    stream = Consumer(stub_of(one), make_request(request_key="long-1", options=LONG))
    assert gated.paused.wait(WAIT)
    wait_for(lambda: any(e.HasField("started") for e in stream.events))

    wait_for(lambda: any(e.HasField("progress") for e in stream.events))
    view = stub_of(two).GetJob(pb.GetJobRequest(request_key="long-1"), timeout=WAIT)
    assert view.state == pb.JOB_STATE_RUNNING
    # As a replica on its own says it: the resolved options and the latest progress.
    assert view.options.size == LONG.size and view.started.options.size == LONG.size
    assert view.progress.iteration >= 1 and not view.progress.HasField("preview")

    watch = stub_of(two).WatchJob(pb.WatchJobRequest(request_key="long-1"), timeout=WAIT)
    cancelled = stub_of(two).CancelJob(pb.CancelJobRequest(request_key="long-1"), timeout=WAIT)
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    assert stream.code() is grpc.StatusCode.CANCELLED
    with pytest.raises(grpc.RpcError) as ended:
        list(watch)
    assert ended.value.code() is grpc.StatusCode.CANCELLED
    view = stub_of(one).GetJob(pb.GetJobRequest(request_key="long-1"), timeout=WAIT)
    assert view.state == pb.JOB_STATE_CANCELLED


def test_watch_resumes_after_the_last_event_seen(fleet: Fleet) -> None:
    one, two = fleet(2)
    events = collect(stub_of(one), make_request(request_key="resume-1"))
    ids = [e.event_id for e in events if e.event_id]  # started and progress events
    assert ids == sorted(ids) and len(ids) >= 3
    middle = ids[len(ids) // 2]
    rest = list(
        stub_of(two).WatchJob(
            pb.WatchJobRequest(request_key="resume-1", after_event_id=middle), timeout=WAIT
        )
    )
    assert [e.event_id for e in rest[:-1]] == [i for i in ids if i > middle]
    assert rest[-1].HasField("result")
    assert rest[-1].result.image.data == events[-1].result.image.data


def test_a_store_that_does_not_answer_refuses_calls_and_readiness(fleet: Fleet) -> None:
    store = FlakyStore(MemoryStore(StoreConfig(lease_seconds=0.6)))
    (one,) = fleet(1, store=store)
    health = health_pb2_grpc.HealthStub(channel_to(one))
    store.down.set()
    with pytest.raises(grpc.RpcError) as refused:
        collect(stub_of(one), make_request())
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert reason_of(refused.value) == "STORE_UNAVAILABLE"
    assert has_retry_info(refused.value)

    def status() -> int:
        return int(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)

    wait_for(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=10)
    store.down.clear()
    wait_for(lambda: status() == health_pb2.HealthCheckResponse.SERVING, timeout=10)
    assert collect(stub_of(one), make_request())[-1].HasField("result")


def test_after_every_ttl_the_store_holds_nothing(fleet: Fleet) -> None:
    store = MemoryStore(StoreConfig(lease_seconds=0.5, result_ttl=0.5))
    one, two = fleet(2, store=store)
    for index, server in enumerate([one, two, one]):
        collect(stub_of(server), make_request(request_key=f"ttl-{index}"))
    collect(stub_of(two), make_request())
    one.stop()
    two.stop()
    # Records, events, results, keys and the replicas' liveness marks all expire.
    wait_for(lambda: asyncio.run(store.footprint()) == 0, timeout=10)


def test_a_result_over_a_megabyte_is_stored_in_chunks_and_read_whole_elsewhere(
    fleet: Fleet,
) -> None:
    store = MemoryStore(StoreConfig(lease_seconds=1.0, chunk_bytes=256 * 1024))
    one, two = fleet(2, store=store)
    # A noisy content image at 768 px: its PNG result is over 1 MB (4 chunks and more).
    request = make_request(
        request_key="large-1",
        content_image=png(576, 768, 3),
        options=pb.StyleOptions(size=768, max_evaluations=1, seed=2),
    )
    # A 768 px evaluation (and its first trace) takes seconds on a quiet CPU, far more on a slow
    # one running other tests: a deadline of its own.
    events = list(stub_of(one).Stylize(request, timeout=LARGE_WAIT))
    data = events[-1].result.image.data
    assert len(data) > 1024 * 1024
    again = list(stub_of(two).Stylize(request, timeout=LARGE_WAIT))
    assert again[-1].result.image.data == data
    view = stub_of(two).GetJob(pb.GetJobRequest(request_key="large-1"), timeout=LARGE_WAIT)
    assert view.result.image.data == data


def test_a_replica_whose_store_is_down_at_start_is_not_ready_until_it_answers(
    fleet: Fleet,
) -> None:
    store = FlakyStore(MemoryStore(StoreConfig(lease_seconds=0.6)))
    store.down.set()
    (one,) = fleet(1, store=store)  # the model loads; the store does not answer
    health = health_pb2_grpc.HealthStub(channel_to(one))

    def status() -> int:
        return int(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)

    wait_for(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=10)
    time.sleep(1.0)  # and it stays so: nothing turns it SERVING while the store fails
    assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
    store.down.clear()
    wait_for(lambda: status() == health_pb2.HealthCheckResponse.SERVING, timeout=10)
    assert collect(stub_of(one), make_request())[-1].HasField("result")


class SlowAdmission(FlakyStore):
    """A store whose `admit` answers after `delay` seconds; it keeps what it filed."""

    def __init__(self, inner: JobStore, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.filed: list[str] = []

    async def admit(self, request: Any) -> Any:
        await asyncio.sleep(self.delay)
        admitted = await self.inner.admit(request)
        if isinstance(admitted, Created):
            self.filed.append(admitted.record.job_id)
        return admitted


def test_a_caller_gone_during_admission_leaves_no_unkeyed_job_behind(fleet: Fleet) -> None:
    memory = MemoryStore(StoreConfig(lease_seconds=0.6))
    store = SlowAdmission(memory, delay=0.5)
    (one,) = fleet(1, store=store)
    with pytest.raises(grpc.RpcError) as gone:  # the caller's deadline passes while admitting
        list(stub_of(one).Stylize(make_request(options=LONG), timeout=0.2))
    assert gone.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: len(store.filed) == 1, timeout=10)  # the store filed it all the same

    def state() -> JobState | None:
        record = asyncio.run(memory.get(store.filed[0]))
        return None if record is None else record.state

    wait_for(lambda: state() is JobState.CANCELLED, timeout=10)  # and it was taken back


class CountingStore:
    """A store that counts its `result` reads."""

    def __init__(self, inner: JobStore) -> None:
        self.inner = inner
        self.result_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def result(self, job_id: str) -> bytes | None:
        self.result_reads += 1
        return await self.inner.result(job_id)


def test_the_replica_that_ran_a_job_sends_its_result_without_reading_it_back(
    fleet: Fleet,
) -> None:
    store = CountingStore(MemoryStore(StoreConfig(lease_seconds=1.0, result_ttl=60.0)))
    (alone,) = fleet(1, store=store)  # type: ignore[arg-type]
    first = collect(stub_of(alone), make_request(request_key="local-1"))
    assert first[-1].HasField("result")
    assert store.result_reads == 0  # committed here a moment ago: sent from this replica

    # The same bytes as the store holds, which a caller elsewhere (here: GetJob) reads.
    view = stub_of(alone).GetJob(pb.GetJobRequest(request_key="local-1"), timeout=WAIT)
    assert store.result_reads == 1
    assert view.result.image.data == first[-1].result.image.data


@pytest.mark.parametrize("finished", [False, True], ids=["running", "stored"])
@pytest.mark.parametrize(
    "delivery",
    [
        {"output_format": pb.IMAGE_FORMAT_JPEG},
        {"output_format": pb.IMAGE_FORMAT_WEBP, "output_quality": 40},
    ],
    ids=["format", "format_and_quality"],
)
def test_a_key_resent_with_another_encoding_gets_its_own_on_every_replica(
    fleet: Fleet, stylizer: Stylizer, finished: bool, delivery: dict[str, Any]
) -> None:
    """As on one replica (tests/integration/test_server_keys.py): output format and quality do
    not define the work, so a call that changes only them attaches, on the replica that ran the
    job or on another, and gets the picture in the encoding it asked for."""
    from styletx.images import decode_image, encode_image

    gated = GatedStylizer(stylizer)
    one, two = fleet(2, engines=[gated, gated])
    request = make_request(request_key="encoded-1")
    first = Consumer(stub_of(one), request)
    assert gated.paused.wait(WAIT)
    if finished:
        gated.release()
        assert first.code() == grpc.StatusCode.OK
    resent = make_request(request_key="encoded-1", **delivery)
    others = [Consumer(stub_of(server), resent) for server in (one, two)]
    gated.release()
    assert first.code() == grpc.StatusCode.OK
    for other in others:
        assert other.code() == grpc.StatusCode.OK, other.error
    assert gated.calls == 1
    mine = first.events[-1].result.image
    pixels = decode_image(mine.data)  # the first caller's default: lossless PNG
    fmt = pb.ImageFormat.Name(delivery["output_format"]).removeprefix("IMAGE_FORMAT_").lower()
    wanted = encode_image(pixels, fmt, quality=delivery.get("output_quality", 90))
    for other in others:
        theirs = other.events[-1].result.image
        assert theirs.format == delivery["output_format"]
        assert theirs.data == wanted
    # And a caller back with the job's own encoding gets its bytes, not a re-encoding.
    assert collect(stub_of(two), request)[-1].result.image.data == mine.data


def faulty_on(operation: str) -> FlakyStore:
    """A memory store whose `operation` fails with a plain StoreError (neither a result nor
    "unavailable") until its `down` is cleared."""
    flaky = FlakyStore(
        MemoryStore(StoreConfig(lease_seconds=1.0, result_ttl=60.0)),
        error=StoreError,
        only=frozenset({operation}),
    )
    flaky.down.set()
    return flaky


def test_a_replica_goes_on_claiming_after_a_store_error_of_any_kind(fleet: Fleet) -> None:
    """A store answer that is neither a result nor "unavailable" (a fault of the store's setup,
    say) fails that claim, logged and counted; the replica claims again at its next poll, and
    the job waiting meanwhile runs once the store answers right."""
    flaky = faulty_on("claim")
    (one,) = fleet(1, store=flaky)
    call = Consumer(stub_of(one), make_request(request_key="after-a-fault"))
    wait_for(lambda: flaky.failed["claim"] >= 3, WAIT)
    flaky.down.clear()
    assert call.code() == grpc.StatusCode.OK, call.error
    assert call.events[-1].HasField("result")
    errors = one.metrics.registry.get_sample_value(
        "styletx_store_errors_total", {"operation": "claim"}
    )
    assert errors is not None and errors >= 3


def test_a_store_fault_on_a_jobs_events_does_not_leave_it_held_forever(fleet: Fleet) -> None:
    """Events are best effort: a store fault while appending one (not "unavailable") loses
    that event, not the job. Its publisher stays alive, commits the outcome and the caller
    gets the result, instead of a dead publisher whose lease the heartbeat renews forever."""
    flaky = faulty_on("append")
    (one,) = fleet(1, store=flaky)
    call = Consumer(stub_of(one), make_request(request_key="event-fault"))
    assert call.code() == grpc.StatusCode.OK, call.error
    assert call.events[-1].HasField("result")
    assert flaky.failed["append"] >= 1
