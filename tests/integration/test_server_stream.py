"""A full Stylize stream against a real server: event order, content, previews, output."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from styletx.engine import Stylizer
from styletx.options import DEFAULT_STYLE_LAYERS
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from tests.integration.conftest import EVALUATIONS, SIZE, WAIT, collect, make_request


def kinds(events: list[pb.StylizeResponse]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def test_stream_is_queued_started_progress_result(stub: pb_grpc.StyleTransferServiceStub) -> None:
    events = collect(stub, make_request())
    order = kinds(events)
    assert order[0] == "queued"
    assert order[1] == "started"
    assert order[-1] == "result"
    assert set(order[2:-1]) == {"progress"}
    assert len(order) > 3  # at least one progress event

    queued, started, result = events[0].queued, events[1].started, events[-1].result
    assert queued.position == 1
    assert queued.request_id
    assert started.request_id == result.request_id == queued.request_id
    # Output keeps the 48x64 content's aspect ratio with the longest side SIZE.
    height, width = Stylizer.output_size(48, 64, SIZE)
    assert (started.height, started.width) == (height, width)

    progress = [e.progress for e in events if e.HasField("progress")]
    assert [p.iteration for p in progress] == list(range(1, len(progress) + 1))
    evaluations = [p.evaluations for p in progress]
    assert evaluations == sorted(evaluations)
    assert all(p.max_evaluations == EVALUATIONS for p in progress)
    for p in progress:
        total = p.losses.content + p.losses.style + p.losses.tv
        assert p.losses.total == pytest.approx(total, rel=1e-4)
        assert not p.HasField("preview")
    assert result.evaluations == EVALUATIONS
    assert result.iterations == progress[-1].iteration
    assert result.compute_time.ToTimedelta().total_seconds() > 0
    assert result.losses.total > 0


def test_started_reports_every_resolved_option(stub: pb_grpc.StyleTransferServiceStub) -> None:
    request = make_request(options=pb.StyleOptions(size=SIZE, max_evaluations=2))
    events = collect(stub, request)
    options = events[1].started.options
    # Server defaults fill what the request left unset; the drawn seed is reported.
    assert options.size == SIZE
    assert options.max_evaluations == 2
    assert options.content_weight == pytest.approx(0.02)
    assert options.style_weight == pytest.approx(4.5)
    assert options.content_layer == "block2_conv2"
    assert tuple(options.style_layers) == DEFAULT_STYLE_LAYERS
    assert options.init == pb.INIT_METHOD_RANDOM
    assert options.HasField("seed")
    assert options.preserve_colors == pb.COLOR_PRESERVATION_OFF and options.HasField("scales")
    assert options.preset == pb.PRESET_REFERENCE and options.HasField("lbfgs_memory")


def test_result_image_decodes_to_reported_size(stub: pb_grpc.StyleTransferServiceStub) -> None:
    events = collect(stub, make_request(output_format=pb.IMAGE_FORMAT_JPEG))
    image = events[-1].result.image
    assert image.format == pb.IMAGE_FORMAT_JPEG
    decoded = Image.open(io.BytesIO(image.data))
    assert decoded.format == "JPEG"
    assert decoded.size == (image.width, image.height)
    assert (image.height, image.width) == Stylizer.output_size(48, 64, SIZE)


def test_previews_arrive_at_the_requested_cadence(stub: pb_grpc.StyleTransferServiceStub) -> None:
    request = make_request(
        preview_every=2, options=pb.StyleOptions(size=SIZE, max_evaluations=12, seed=3)
    )
    progress = [e.progress for e in collect(stub, request) if e.HasField("progress")]
    assert len(progress) >= 4
    # A reader that falls behind may get older progress without its preview (the mailbox keeps
    # only the newest preview), so previews may be missing, but never off the cadence.
    assert any(p.HasField("preview") for p in progress)
    for p in progress:
        if p.HasField("preview"):
            assert p.iteration % 2 == 0
    preview = next(p.preview for p in progress if p.HasField("preview"))
    decoded = Image.open(io.BytesIO(preview.data))
    assert decoded.format == "PNG"
    assert decoded.size == (preview.width, preview.height)


def test_request_id_is_echoed_in_metadata_and_events(
    stub: pb_grpc.StyleTransferServiceStub,
) -> None:
    call = stub.Stylize(make_request(), timeout=WAIT, metadata=(("x-request-id", "abc-123"),))
    events = list(call)
    assert ("x-request-id", "abc-123") in tuple(call.initial_metadata())
    assert events[0].queued.request_id == "abc-123"
    assert events[-1].result.request_id == "abc-123"


def test_generated_request_id_when_none_is_sent(stub: pb_grpc.StyleTransferServiceStub) -> None:
    call = stub.Stylize(make_request(), timeout=WAIT)
    events = list(call)
    echoed = dict(call.initial_metadata())["x-request-id"]
    assert len(echoed) == 32
    assert events[-1].result.request_id == echoed


def test_same_seed_gives_the_same_image(stub: pb_grpc.StyleTransferServiceStub) -> None:
    first = collect(stub, make_request())[-1].result.image.data
    second = collect(stub, make_request())[-1].result.image.data
    assert first == second
