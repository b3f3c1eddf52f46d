"""Health transitions, reflection, and graceful drain of an in-process server."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client import CollectorRegistry

from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.ops.app import StyletxServer
from styletx_server.ops.config import ServerConfig
from styletx_server.ops.health import API_SERVICE
from tests.integration.conftest import (
    WAIT,
    Consumer,
    GatedStylizer,
    ServerFactory,
    channel_to,
    collect,
    make_request,
    reason_of,
    wait_for,
)
from tests.support.engines import WrappedEngine

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class SlowWarmup(WrappedEngine):
    """The real engine whose warm-up waits for the test, to observe the loading state."""

    def __init__(self, engine: Stylizer) -> None:
        super().__init__(engine)
        self.release = threading.Event()

    def warmup(self, size: int = 64) -> None:
        assert self.release.wait(WAIT)


def statuses(server: StyletxServer) -> tuple[int, int]:
    with channel_to(server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT)
        api = health.Check(health_pb2.HealthCheckRequest(service=API_SERVICE), timeout=WAIT)
    return overall.status, api.status


def check_code(server: StyletxServer) -> grpc.StatusCode:
    """The code of a health Check on a new connection (UNAVAILABLE once the port is closed)."""
    try:
        statuses(server)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def stylize_code(server: StyletxServer) -> grpc.StatusCode:
    with channel_to(server) as channel:
        try:
            collect(pb_grpc.StyleTransferServiceStub(channel), make_request())
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_not_serving_until_warm_then_serving_then_not_serving_when_draining(
    stylizer: Stylizer, server_factory: ServerFactory
) -> None:
    engine = SlowWarmup(stylizer)
    server = server_factory(engine=engine, ready=False, warmup=True)
    assert statuses(server) == (NOT_SERVING, NOT_SERVING)
    assert stylize_code(server) == grpc.StatusCode.UNAVAILABLE
    engine.release.set()
    assert server.wait_until_ready(WAIT)
    assert statuses(server) == (SERVING, SERVING)
    assert stylize_code(server) == grpc.StatusCode.OK
    assert server.drain(grace=1.0)
    # Drained: probes say NOT_SERVING (the pod leaves the Service) and calls are refused with a
    # reason, until stop() closes the port.
    assert statuses(server) == (NOT_SERVING, NOT_SERVING)
    assert stylize_code(server) == grpc.StatusCode.UNAVAILABLE
    server.stop()
    assert check_code(server) == grpc.StatusCode.UNAVAILABLE


def test_watch_streams_the_transitions(stylizer: Stylizer, server_factory: ServerFactory) -> None:
    engine = SlowWarmup(stylizer)
    server = server_factory(engine=engine, ready=False, warmup=True)
    with channel_to(server) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=API_SERVICE), timeout=WAIT
        )
        seen = [next(watch).status]
        engine.release.set()
        seen.append(next(watch).status)
        server.drain(grace=0.5)
        seen.append(next(watch).status)
        watch.cancel()
    assert seen == [NOT_SERVING, SERVING, NOT_SERVING]


def test_a_model_that_fails_to_load_never_serves(tmp_path: Path) -> None:
    config = ServerConfig(
        address="127.0.0.1:0", metrics_port=0, workers=1, weights=tmp_path / "missing.weights.h5"
    )
    broken = StyletxServer(config, registry=CollectorRegistry())
    broken.start()
    try:
        assert not broken.wait_until_ready(WAIT)
        assert broken.failure is not None
        assert statuses(broken) == (NOT_SERVING, NOT_SERVING)
        assert stylize_code(broken) == grpc.StatusCode.UNAVAILABLE
    finally:
        broken.stop()


def test_reflection_lists_and_describes_the_service(server: StyletxServer) -> None:
    with channel_to(server) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {API_SERVICE, "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName(API_SERVICE)
        method = service.FindMethodByName("Stylize")
        assert method.input_type.full_name == "styletx.v1.StylizeRequest"
        assert method.server_streaming


def test_drain_lets_the_running_job_finish_and_refuses_new_calls(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    stub = stub_for(server)
    with channel_to(server) as watcher:
        watch = health_pb2_grpc.HealthStub(watcher).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=WAIT
        )
        assert next(watch).status == SERVING
        results: list[Any] = []
        running = threading.Thread(target=lambda: results.append(collect(stub, make_request())))
        running.start()
        assert gated.paused.wait(WAIT)
        drained: list[bool] = []
        drainer = threading.Thread(target=lambda: drained.append(server.drain(grace=WAIT)))
        drainer.start()
        wait_for(lambda: server.lifecycle.draining.is_set())
        assert next(watch).status == NOT_SERVING  # an open stream hears it at once
        watch.cancel()
    # Until the running job is done, a new call, on the running call's own connection or on a
    # new one, is told why (DRAINING: the client moves on at once), not "failed to connect".
    for channel_stub in (stub, stub_for(server)):
        with pytest.raises(grpc.RpcError) as caught:
            collect(channel_stub, make_request())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(caught.value) == "DRAINING"
    assert statuses(server) == (NOT_SERVING, NOT_SERVING)
    gated.release()
    running.join(WAIT)
    drainer.join(WAIT)
    assert results and results[0][-1].HasField("result")
    assert drained == [True]


def test_drain_refuses_queued_jobs_that_cannot_finish_in_time_at_once(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    """Queued work that would outlive the grace period is refused when the drain starts (so its
    caller retries elsewhere now); queued work that fits still runs."""
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, queue_size=3)
    stub = stub_for(server)
    running = Consumer(stub, make_request())
    assert gated.paused.wait(WAIT)
    small = Consumer(stub, make_request())
    long = Consumer(
        stub, make_request(options=pb.StyleOptions(size=48, max_evaluations=1000, seed=1))
    )
    wait_for(lambda: server.admission.waiting == 2)
    drained: list[bool] = []
    drainer = threading.Thread(target=lambda: drained.append(server.drain(grace=8.0)))
    drainer.start()
    # Refused at once, long before the grace period could end, while the worker is still held.
    assert long.code(timeout=4.0) == grpc.StatusCode.UNAVAILABLE
    assert reason_of(long.error) == "DRAINING"
    assert running.thread.is_alive()
    gated.release()
    assert running.code() == grpc.StatusCode.OK
    assert small.code() == grpc.StatusCode.OK
    drainer.join(WAIT)
    assert drained == [True]
    assert gated.calls == 2


def test_drain_cancels_jobs_still_running_after_the_grace_period(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)  # never released: the job outlives the grace period
    server = server_factory(engine=gated)
    stub = stub_for(server)
    errors: list[grpc.RpcError] = []

    def call() -> None:
        try:
            collect(stub, make_request())
        except grpc.RpcError as exc:
            errors.append(exc)

    running = threading.Thread(target=call)
    running.start()
    assert gated.paused.wait(WAIT)
    assert server.drain(grace=0.3) is False
    running.join(WAIT)
    assert errors and errors[0].code() == grpc.StatusCode.UNAVAILABLE
    assert gated.evaluations_at_pause is not None
    assert stylizer.evaluations_total - gated.evaluations_at_pause <= 1
    wait_for(lambda: server.admission.running == 0)
