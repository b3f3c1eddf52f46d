"""Request keys: a call with a known key attaches to the running job or gets the stored result;
no second computation (the engine's evaluation counter says so); a reused key is refused."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from tests.integration.conftest import (
    EVALUATIONS,
    WAIT,
    Consumer,
    GatedStylizer,
    ServerFactory,
    collect,
    make_request,
    reason_of,
    wait_for,
)

KEY = "job-7f3a.b~c:d-e_f"


def keyed(**overrides: Any) -> pb.StylizeRequest:
    return make_request(request_key=KEY, **overrides)


def test_a_second_call_with_the_key_attaches_to_the_running_job(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    stub = stub_for(server)
    before = stylizer.evaluations_total
    first = Consumer(stub, keyed())
    assert gated.paused.wait(WAIT)
    wait_for(lambda: "progress" in first.kinds())
    second = Consumer(stub, keyed())
    # The current state first: started, then the latest progress.
    wait_for(lambda: len(second.kinds()) >= 2)
    assert second.kinds()[:2] == ["started", "progress"]
    gated.release()
    assert first.code() == grpc.StatusCode.OK and second.code() == grpc.StatusCode.OK
    assert second.events[-1].result.image.data == first.events[-1].result.image.data
    assert gated.calls == 1
    assert stylizer.evaluations_total - before == EVALUATIONS  # one computation, not two
    assert server.jobs.running == 0


def test_a_finished_job_s_result_is_returned_at_once(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    server = server_factory()
    stub = stub_for(server)
    first = collect(stub, keyed())
    after_first = stylizer.evaluations_total
    again = collect(stub, keyed())
    assert [e.WhichOneof("event") for e in again] == ["result"]
    assert again[0].result == first[-1].result
    assert stylizer.evaluations_total == after_first
    assert server.jobs.stored[0] == 1


def test_a_caller_that_lost_its_stream_re_attaches_within_the_linger(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, linger=WAIT)
    stub = stub_for(server)
    lost = Consumer(stub, keyed())
    assert gated.paused.wait(WAIT)
    wait_for(lambda: "progress" in lost.kinds())
    lost.call.cancel()  # the client died mid-job
    assert lost.code() == grpc.StatusCode.CANCELLED
    assert server.admission.running == 1  # the keyed job keeps running without anyone watching
    back = Consumer(stub, keyed())
    wait_for(lambda: back.kinds()[:1] == ["started"])
    gated.release()
    assert back.code() == grpc.StatusCode.OK
    assert back.events[-1].result.evaluations == EVALUATIONS
    assert gated.calls == 1


def test_a_keyed_job_nobody_comes_back_for_stops_after_the_linger(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, linger=0.3)
    stub = stub_for(server)
    lost = Consumer(stub, keyed(options=pb.StyleOptions(size=48, max_evaluations=1000, seed=1)))
    assert gated.paused.wait(WAIT)
    lost.call.cancel()
    wait_for(lambda: server.admission.running == 0)
    assert gated.evaluations_at_pause is not None
    assert stylizer.evaluations_total - gated.evaluations_at_pause <= 1
    assert server.jobs.running == 0 and server.budget.used == 0
    assert server.jobs.stored[0] == 0  # a stopped job leaves no result behind
    gated.release()
    # The key is free again: the same request computes anew.
    assert collect(stub, keyed())[-1].HasField("result")
    assert gated.calls == 2


def test_an_unkeyed_job_stops_as_soon_as_its_caller_leaves(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, linger=WAIT)
    stub = stub_for(server)
    consumer = Consumer(stub, make_request())
    assert gated.paused.wait(WAIT)
    consumer.call.cancel()
    wait_for(lambda: server.admission.running == 0)


@pytest.mark.parametrize("finished", [False, True], ids=["running", "stored"])
def test_the_same_key_with_another_request_is_refused(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, finished: bool
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    stub = stub_for(server)
    first = Consumer(stub, keyed())
    assert gated.paused.wait(WAIT)
    if finished:
        gated.release()
        assert first.code() == grpc.StatusCode.OK
    other = keyed(options=pb.StyleOptions(size=48, max_evaluations=EVALUATIONS, seed=8))
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, other)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "KEY_REUSED"
    assert KEY in (caught.value.details() or "")
    gated.release()
    assert first.code() == grpc.StatusCode.OK
    assert gated.calls == 1


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "slash/key", "ключ"])
def test_malformed_keys_are_invalid(server_factory: ServerFactory, stub_for: Any, bad: str) -> None:
    stub = stub_for(server_factory())
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request(request_key=bad))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "INVALID_INPUT"
    assert "request_key" in (caught.value.details() or "")


def test_a_failed_keyed_job_can_be_retried_with_the_same_key(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    from tests.integration.test_server_failures import FailOnce

    server = server_factory(engine=FailOnce(stylizer, RuntimeError("transient")))
    stub = stub_for(server)
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, keyed())
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert collect(stub, keyed())[-1].HasField("result")


@pytest.mark.parametrize("finished", [False, True], ids=["running", "stored"])
@pytest.mark.parametrize(
    "delivery",
    [
        {"preview_every": 2},
        {"output_format": pb.IMAGE_FORMAT_JPEG},
        {"output_format": pb.IMAGE_FORMAT_WEBP, "output_quality": 40},
    ],
    ids=["preview_every", "format", "format_and_quality"],
)
def test_a_key_resent_with_only_its_delivery_changed_attaches(
    stylizer: Stylizer,
    server_factory: ServerFactory,
    stub_for: Any,
    finished: bool,
    delivery: dict[str, Any],
) -> None:
    """Preview cadence, output format and quality do not define the work: the job is computed
    once and each caller gets the picture in the encoding it asked for."""
    from styletx.images import decode_image, encode_image

    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    stub = stub_for(server)
    first = Consumer(stub, keyed())
    assert gated.paused.wait(WAIT)
    if finished:
        gated.release()
        assert first.code() == grpc.StatusCode.OK
    second = Consumer(stub, keyed(**delivery))
    gated.release()
    assert first.code() == grpc.StatusCode.OK
    assert second.code() == grpc.StatusCode.OK, second.error
    assert gated.calls == 1
    mine, theirs = first.events[-1].result.image, second.events[-1].result.image
    pixels = decode_image(mine.data)  # the first caller's default: lossless PNG
    wanted = delivery.get("output_format", pb.IMAGE_FORMAT_PNG)
    assert theirs.format == wanted
    if wanted == pb.IMAGE_FORMAT_PNG:
        assert theirs.data == mine.data
    else:
        fmt = pb.ImageFormat.Name(wanted).removeprefix("IMAGE_FORMAT_").lower()
        quality = delivery.get("output_quality", 90)
        assert theirs.data == encode_image(pixels, fmt, quality=quality)
