"""StyleTransferClient against a scripted in-process fake server: events, requests, errors,
cancellation and message sizes."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import grpc
import pytest
from PIL import Image

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_client import (
    NO_RETRY,
    AuthenticationError,
    InvalidRequestError,
    Progress,
    Queued,
    Result,
    ServerBusyError,
    ServiceError,
    Started,
    Style,
    StyleTransferClient,
)
from tests.support.fake_server import (
    FakeStyleTransfer,
    bad_request,
    fail,
    happy_events,
    png_bytes,
    progress,
    respond,
    result,
    retry_info,
    serve,
    slow,
    started,
)

CANCEL_WAIT = 10.0


def test_stream_yields_typed_events_in_order() -> None:
    with serve() as fake, StyleTransferClient(fake.address) as client:
        events = list(client.stream(b"content", b"style"))
    assert [type(e) for e in events] == [Queued, Queued, Started, Progress, Progress, Result]
    first = events[0]
    assert isinstance(first, Queued)
    assert first.position == 2
    last = events[-1]
    assert isinstance(last, Result)
    assert Image.open(io.BytesIO(last.image_bytes)).size == (last.width, last.height)


def test_stylize_returns_the_result_and_reports_every_event(tmp_path: Path) -> None:
    seen: list[object] = []
    with serve() as fake, StyleTransferClient(fake.address) as client:
        out = client.stylize(b"content", b"style", on_event=seen.append)
    assert isinstance(out, Result)
    assert seen[-1] == out
    assert len(seen) == len(happy_events())
    assert out.save(tmp_path / "r.png").read_bytes() == out.image_bytes


def test_request_carries_inputs_options_and_metadata(tmp_path: Path) -> None:
    content = tmp_path / "content.png"
    content.write_bytes(png_bytes(9, 7))
    pil_style = Image.new("RGB", (4, 4), (0, 0, 255))
    with (
        serve() as fake,
        StyleTransferClient(fake.address, token="t0ken") as client,
    ):
        client.stylize(
            content,
            [Style(pil_style, 2.0), b"raw-style"],
            request_id="my-request",
            size=64,
            max_evaluations=5,
            init="content",
            output_format="jpeg",
            quality=80,
        )
    call = fake.servicer.calls[0]
    assert call.request.content_image == content.read_bytes()
    first_style = Image.open(io.BytesIO(call.request.style_images[0].image))
    assert first_style.getpixel((0, 0)) == (0, 0, 255)
    assert call.request.style_images[0].weight == 2.0
    assert call.request.style_images[1].image == b"raw-style"
    assert call.request.options.size == 64
    assert call.request.options.max_evaluations == 5
    assert call.request.options.init == pb.INIT_METHOD_CONTENT
    assert call.request.output_format == pb.IMAGE_FORMAT_JPEG
    assert call.request.output_quality == 80
    assert call.metadata["authorization"] == "Bearer t0ken"
    assert call.metadata["x-request-id"] == "my-request"
    assert call.metadata["user-agent"].startswith("styletx-client/")


def test_each_call_gets_a_fresh_request_id_by_default() -> None:
    with serve() as fake, StyleTransferClient(fake.address) as client:
        first = client.stream(b"c", b"s")
        list(first)
        list(client.stream(b"c", b"s"))
    ids = [c.metadata["x-request-id"] for c in fake.servicer.calls]
    assert ids[0] == first.request_id
    assert len(set(ids)) == 2


def test_invalid_argument_raises_with_field_violations_from_none() -> None:
    fake = FakeStyleTransfer(
        fail(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad request",
            bad_request(("options.size", "must be <= 1024")),
            request_id="srv-7",
        )
    )
    with (
        serve(fake) as server,
        StyleTransferClient(server.address) as client,
        pytest.raises(InvalidRequestError) as info,
    ):
        client.stylize(b"c", b"s", size=5000)
    error = info.value
    assert error.field_violations[0].field == "options.size"
    assert error.request_id == "srv-7"
    assert error.__cause__ is None
    assert error.__suppress_context__ is True
    assert len(fake.calls) == 1  # never retried


def test_error_after_events_is_raised_to_the_iterating_caller() -> None:
    fake = FakeStyleTransfer(
        fail(grpc.StatusCode.INTERNAL, "worker crashed", before=[started(), progress(1, 1)])
    )
    received: list[object] = []
    with (
        serve(fake) as server,
        StyleTransferClient(server.address) as client,
        pytest.raises(ServiceError) as info,
    ):
        for event in client.stream(b"c", b"s"):
            received.append(event)
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert [type(e) for e in received] == [Started, Progress]


def test_stream_ending_without_result_is_an_error() -> None:
    fake = FakeStyleTransfer(respond(started(), progress(1, 1)))
    with (
        serve(fake) as server,
        StyleTransferClient(server.address) as client,
        pytest.raises(ServiceError, match="without a result") as info,
    ):
        client.stylize(b"c", b"s")
    assert info.value.code == grpc.StatusCode.INTERNAL


def test_unauthenticated_maps_to_authentication_error() -> None:
    fake = FakeStyleTransfer(fail(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token"))
    with (
        serve(fake) as server,
        StyleTransferClient(server.address) as client,
        pytest.raises(AuthenticationError, match="missing bearer token"),
    ):
        client.stylize(b"c", b"s")


def test_bad_inputs_fail_at_call_time_without_contacting_the_server(tmp_path: Path) -> None:
    with serve() as fake, StyleTransferClient(fake.address) as client:
        with pytest.raises(FileNotFoundError):
            client.stream(tmp_path / "missing.png", b"s")
        with pytest.raises(TypeError):
            client.stream(b"c", b"s", colour="blue")  # type: ignore[call-arg]
    assert fake.servicer.calls == []


def test_closing_the_stream_cancels_the_call() -> None:
    fake = FakeStyleTransfer(slow())
    with serve(fake) as server, StyleTransferClient(server.address) as client:
        stream = client.stream(b"c", b"s")
        assert isinstance(next(stream), Started)
        assert isinstance(next(stream), Progress)
        stream.close()
        assert fake.calls[0].cancelled.wait(CANCEL_WAIT)
        stream.close()  # idempotent


def test_breaking_out_of_a_with_stream_block_cancels_the_call() -> None:
    fake = FakeStyleTransfer(slow())
    with serve(fake) as server, StyleTransferClient(server.address) as client:
        with client.stream(b"c", b"s") as stream:
            for event in stream:
                if isinstance(event, Progress):
                    break
        assert fake.calls[0].cancelled.wait(CANCEL_WAIT)


def test_leaving_the_client_block_cancels_running_calls() -> None:
    fake = FakeStyleTransfer(slow())
    with serve(fake) as server:
        with StyleTransferClient(server.address) as client:
            stream = client.stream(b"c", b"s")
            next(stream)
        assert fake.calls[0].cancelled.wait(CANCEL_WAIT)
        with pytest.raises(ServiceError) as info:
            next(stream)
        assert info.value.code == grpc.StatusCode.CANCELLED


def test_per_call_timeout_becomes_the_grpc_deadline() -> None:
    with serve() as fake, StyleTransferClient(fake.address, timeout=100.0) as client:
        client.stylize(b"c", b"s")
        client.stylize(b"c", b"s", timeout=5.0)
    first, second = (c.time_remaining for c in fake.servicer.calls)
    assert first is not None and 90.0 < first <= 102.0  # grpc-timeout is rounded up
    assert second is not None and 0.0 < second <= 6.0


def test_deadline_exceeded_on_a_slow_job() -> None:
    fake = FakeStyleTransfer(slow())
    with (
        serve(fake) as server,
        StyleTransferClient(server.address) as client,
        pytest.raises(ServiceError) as info,
    ):
        client.stylize(b"c", b"s", timeout=0.3)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_images_larger_than_grpcs_4_mib_default_pass_both_ways() -> None:
    big = b"\x89" * (6 * 1024 * 1024)
    fake = FakeStyleTransfer(respond(started(), result(big)))
    with serve(fake) as server, StyleTransferClient(server.address) as client:
        out = client.stylize(big, b"s")
    assert out.image_bytes == big
    assert fake.calls[0].request.content_image == big


def test_message_limit_is_configurable_and_oversize_is_not_retried() -> None:
    big = b"\x89" * (2 * 1024 * 1024)
    fake = FakeStyleTransfer(respond(started(), result(big)))
    with (
        serve(fake) as server,
        StyleTransferClient(server.address, max_message_bytes=1024 * 1024) as client,
        pytest.raises(ServiceError) as info,
    ):
        client.stylize(b"c", b"s")
    assert not isinstance(info.value, ServerBusyError)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(fake.calls) == 1


def test_client_is_safe_to_share_between_threads() -> None:
    results: list[Result] = []
    errors: list[BaseException] = []
    with serve() as fake, StyleTransferClient(fake.address, retry=NO_RETRY) as client:

        def work() -> None:
            try:
                results.append(client.stylize(b"c", b"s"))
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []
    assert len(results) == 6
    assert len(fake.servicer.calls) == 6


def test_retry_info_busy_error_exposes_retry_after_when_retries_are_off() -> None:
    fake = FakeStyleTransfer(fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_info(4)))
    with (
        serve(fake) as server,
        StyleTransferClient(server.address, retry=NO_RETRY) as client,
        pytest.raises(ServerBusyError) as info,
    ):
        client.stylize(b"c", b"s")
    assert info.value.retry_after == 4.0
