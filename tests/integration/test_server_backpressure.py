"""Streams cost no thread: readers that never read hold nothing up, excess calls are refused with
a status (counted and logged), and health checks answer while Stylize calls pile up."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from tests.integration.conftest import (
    WAIT,
    Consumer,
    GatedStylizer,
    ServerFactory,
    channel_to,
    collect,
    has_retry_info,
    make_request,
    reason_of,
    wait_for,
)


def health_check(server: Any) -> int:
    with channel_to(server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def test_calls_beyond_max_calls_are_refused_counted_and_logged(
    stylizer: Stylizer,
    server_factory: ServerFactory,
    stub_for: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gated = GatedStylizer(stylizer)
    # One client here: no per-caller share below the server's limit.
    server = server_factory(engine=gated, max_calls=3, queue_size=4, max_peer_share=1.0)
    stub = stub_for(server)
    held = [Consumer(stub, make_request()) for _ in range(3)]
    wait_for(lambda: server.admission.running + server.admission.waiting == 3)
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(caught.value) == "TOO_MANY_CALLS" and has_retry_info(caught.value)
    labels = {"method": "Stylize", "code": "RESOURCE_EXHAUSTED", "reason": "too_many_calls"}
    assert server.metrics.registry.get_sample_value("styletx_requests_total", labels) == 1
    logged = [r for r in caplog.records if r.getMessage() == "request"]
    assert any(getattr(r, "styletx_fields", {}).get("reason") == "too_many_calls" for r in logged)
    assert health_check(server) == health_pb2.HealthCheckResponse.SERVING
    gated.release()
    for consumer in held:
        assert consumer.code() == grpc.StatusCode.OK


def test_readers_that_never_read_block_neither_workers_nor_other_calls(
    server_factory: ServerFactory, stub_for: Any
) -> None:
    """Many streams whose callers do not read until their jobs are done, each sending far more
    than the flow-control window (a preview every iteration): every job still finishes, health
    answers, a normal call runs. (With the stall timeout off: these readers come back late.)"""
    streams = 6
    server = server_factory(
        queue_size=streams, max_calls=streams + 2, max_peer_share=1.0, stall_timeout=0
    )
    stub = stub_for(server)
    heavy = make_request(
        preview_every=1, options=pb.StyleOptions(size=64, max_evaluations=40, seed=1)
    )
    # A small, fixed flow-control window: the server's writes really stall on these streams.
    stalled = grpc.insecure_channel(
        f"127.0.0.1:{server.port}",
        options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
    )
    unread_stub = pb_grpc.StyleTransferServiceStub(stalled)
    unread = [unread_stub.Stylize(heavy, timeout=WAIT * 4) for _ in range(streams)]
    # Every job runs to its end though nobody reads: the worker never waits on a stream.
    wait_for(lambda: len(server.servicer.live_jobs()) > 0)
    wait_for(lambda: not server.servicer.live_jobs(), timeout=WAIT * 3)
    # A worker counts its job out a moment after the job ended (and told its streams).
    wait_for(lambda: server.admission.running == 0)
    assert server.budget.used == 0
    assert health_check(server) == health_pb2.HealthCheckResponse.SERVING
    assert collect(stub, make_request())[-1].HasField("result")
    # A stalled reader got a coalesced stream: still ending with the result.
    events = list(unread[0])
    assert events[-1].HasField("result")
    iterations = events[-1].result.iterations
    progress = [e for e in events if e.HasField("progress")]
    assert 0 < len(progress) < iterations  # the latest progress replaced older ones
    for call in unread[1:]:
        call.cancel()
    stalled.close()
