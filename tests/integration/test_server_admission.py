"""Queue positions, queue-full refusals, cancellation and deadlines on a real server."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from tests.integration.conftest import (
    WAIT,
    Consumer,
    GatedStylizer,
    ServerFactory,
    collect,
    make_request,
    wait_for,
)

#: A budget no test lets run to the end: jobs that must be stopped would take minutes.
HUGE_BUDGET = 1000


def long_request() -> pb.StylizeRequest:
    return make_request(options=pb.StyleOptions(size=48, max_evaluations=HUGE_BUDGET, seed=1))


def test_cancel_stops_the_job_within_one_evaluation_and_frees_the_worker(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    stub = stub_for(server)
    consumer = Consumer(stub, long_request(), timeout=WAIT)
    assert gated.paused.wait(WAIT)
    wait_for(lambda: "progress" in consumer.kinds())
    consumer.call.cancel()
    assert consumer.code() == grpc.StatusCode.CANCELLED
    wait_for(lambda: server.admission.running == 0)
    assert gated.evaluations_at_pause is not None
    assert stylizer.evaluations_total - gated.evaluations_at_pause <= 1
    # The worker is free: the next job runs to completion.
    gated.release()
    assert collect(stub, make_request())[-1].HasField("result")


def test_deadline_stops_the_job_within_one_evaluation(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    stub = stub_for(server)
    consumer = Consumer(stub, long_request(), timeout=2.0)
    assert consumer.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "started" in consumer.kinds()
    wait_for(lambda: server.admission.running == 0)
    assert gated.evaluations_at_pause is not None
    assert stylizer.evaluations_total - gated.evaluations_at_pause <= 1
    gated.release()
    assert collect(stub, make_request())[-1].HasField("result")


def test_job_whose_deadline_passes_in_the_queue_never_starts(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, queue_size=1)
    stub = stub_for(server)
    busy = Consumer(stub, make_request(), timeout=WAIT)
    assert gated.paused.wait(WAIT)
    late = Consumer(stub, make_request(), timeout=1.0)
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert late.kinds() == ["queued"]
    # Its slot is free again at once: the single queue slot accepts another job.
    wait_for(lambda: server.admission.waiting == 0)
    waiting = Consumer(stub, make_request(), timeout=WAIT)
    wait_for(lambda: server.admission.waiting == 1)
    gated.release()
    assert busy.code() == grpc.StatusCode.OK
    assert waiting.code() == grpc.StatusCode.OK
    assert gated.calls == 2  # the late job never reached the engine


def test_cancelled_while_queued_never_starts(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, queue_size=2)
    stub = stub_for(server)
    busy = Consumer(stub, make_request(), timeout=WAIT)
    assert gated.paused.wait(WAIT)
    queued = Consumer(stub, make_request(), timeout=WAIT)
    wait_for(lambda: queued.kinds() == ["queued"])
    queued.call.cancel()
    assert queued.code() == grpc.StatusCode.CANCELLED
    wait_for(lambda: server.admission.waiting == 0)
    gated.release()
    assert busy.code() == grpc.StatusCode.OK
    assert gated.calls == 1


def test_full_queue_refuses_at_once_with_retry_info(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, queue_size=1)
    stub = stub_for(server)
    running = Consumer(stub, make_request(), timeout=WAIT)
    assert gated.paused.wait(WAIT)
    waiting = Consumer(stub, make_request(), timeout=WAIT)
    wait_for(lambda: server.admission.waiting == 1)
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request())
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details)
    assert retry.retry_delay.ToTimedelta().total_seconds() >= 1
    gated.release()
    assert running.code() == grpc.StatusCode.OK
    assert waiting.code() == grpc.StatusCode.OK


def test_queued_callers_are_told_when_their_position_changes(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, queue_size=3)
    stub = stub_for(server)
    running = Consumer(stub, make_request(), timeout=WAIT)
    assert gated.paused.wait(WAIT)
    second = Consumer(stub, make_request(), timeout=WAIT)
    wait_for(lambda: server.admission.waiting == 1)
    third = Consumer(stub, make_request(), timeout=WAIT)
    wait_for(lambda: server.admission.waiting == 2)
    gated.release()
    for consumer in (running, second, third):
        assert consumer.code() == grpc.StatusCode.OK
    positions = [e.queued.position for e in third.events if e.HasField("queued")]
    assert positions == [2, 1]
    assert third.kinds()[len(positions)] == "started"
    assert [e.queued.position for e in second.events if e.HasField("queued")] == [1]
