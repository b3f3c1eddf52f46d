"""Server limits are checked from headers before admission: named in the error, never decoded."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]

from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.intake import decode as decoding
from styletx_server.intake import inspection as intake
from tests.integration.conftest import (
    WAIT,
    Consumer,
    GatedStylizer,
    ServerFactory,
    collect,
    has_retry_info,
    make_request,
    png,
    reason_of,
    rich_details,
    wait_for,
)

#: Small limits so each corner is cheap; the request of make_request() fits every one.
SMALL: dict[str, Any] = {
    "max_size": 64,
    "max_style_size": 96,
    "max_styles": 2,
    "max_pixels": 5000,
    "max_request_pixels": 9000,
    "max_scales": 2,
    "max_evaluations": 8,
    "default_evaluations": 8,
    "default_size": 48,
    "max_inflight_pixels": 20_000,
}


class DecodeSpy:
    """Counts header reads by the intake and decodes after admission (wraps the real functions)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.headers = 0
        self.decodes = 0
        self._lock = threading.Lock()
        real_header, real_decode = intake.image_dimensions, decoding.decode_image

        def header(data: bytes) -> tuple[int, int]:
            with self._lock:
                self.headers += 1
            return real_header(data)

        def decode(data: bytes, **kwargs: Any) -> Any:
            with self._lock:
                self.decodes += 1
            return real_decode(data, **kwargs)

        monkeypatch.setattr(intake, "image_dimensions", header)
        monkeypatch.setattr(decoding, "decode_image", decode)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> DecodeSpy:
    return DecodeSpy(monkeypatch)


def limit_error(error: grpc.RpcError) -> tuple[dict[str, str], dict[str, str]]:
    """(ErrorInfo metadata, BadRequest violations) of a LIMIT_EXCEEDED refusal."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "LIMIT_EXCEEDED"
    details = rich_details(error)
    info = next(d for d in details if isinstance(d, error_details_pb2.ErrorInfo))
    bad = next(d for d in details if isinstance(d, error_details_pb2.BadRequest))
    return dict(info.metadata), {v.field: v.description for v in bad.field_violations}


def options(**fields: Any) -> pb.StyleOptions:
    return pb.StyleOptions(**{"size": 48, "max_evaluations": 4, "seed": 1, **fields})


STYLE = pb.StyleImage(image=png(40, 40, 2))

OVER: dict[str, tuple[dict[str, Any], str, str]] = {
    "max_size": ({"options": options(size=65)}, "options.size", "64"),
    "max_evaluations": ({"options": options(max_evaluations=9)}, "options.max_evaluations", "8"),
    "max_scales": ({"options": options(scales=3)}, "options.scales", "2"),
    "max_style_size": ({"options": options(size=64, style_scale=1.6)}, "options.style_scale", "96"),
    "max_styles": ({"style_images": [STYLE, STYLE, STYLE]}, "style_images", "2"),
    "max_pixels": ({"content_image": png(60, 90, 1)}, "content_image", "5000"),
    "max_request_pixels": (
        {"style_images": [pb.StyleImage(image=png(60, 70, i)) for i in range(2)]},
        "style_images",
        "9000",
    ),
}


@pytest.mark.parametrize("limit", list(OVER), ids=list(OVER))
def test_each_limit_is_named_and_refused_without_decoding(
    limit: str, server_factory: ServerFactory, stub_for: Any, spy: DecodeSpy
) -> None:
    overrides, field, value = OVER[limit]
    stub = stub_for(server_factory(**SMALL))
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request(**overrides))
    metadata, violations = limit_error(caught.value)
    assert metadata == {limit: value}
    assert field in violations and value in violations[field], violations
    assert spy.decodes == 0
    if limit == "max_styles":
        assert spy.headers == 1  # the content's; the styles were refused on their count


def test_the_request_at_every_limit_runs(
    server_factory: ServerFactory, stub_for: Any, spy: DecodeSpy
) -> None:
    stub = stub_for(server_factory(**SMALL))
    request = make_request(
        content_image=png(48, 64, 1),  # 3072 px
        style_images=[pb.StyleImage(image=png(40, 40, 2)), pb.StyleImage(image=png(30, 40, 3))],
        options=options(size=64, max_evaluations=8, scales=2, style_scale=1.5),  # 96 px style
    )
    events = collect(stub, request)
    assert events[-1].result.evaluations == 8
    assert spy.decodes == 3


def test_the_395_byte_crash_request_is_refused_with_default_limits(
    server_factory: ServerFactory, stub_for: Any, spy: DecodeSpy
) -> None:
    """16x16 content, 8x8 style, size 1024, style_scale 4: a 4096 px style pass that aborted
    TensorFlow. The default limits refuse it before anything is decoded."""
    server = server_factory(max_size=1024, max_style_size=1024)
    stub = stub_for(server)
    request = make_request(
        content_image=png(16, 16, 1),
        style_images=[pb.StyleImage(image=png(8, 8, 2))],
        options=pb.StyleOptions(size=1024, style_scale=4.0),
    )
    assert request.ByteSize() < 1024
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, request)
    metadata, violations = limit_error(caught.value)
    assert metadata == {"max_style_size": "1024"}
    assert "4096" in violations["options.style_scale"]
    assert spy.decodes == 0 and server.admission.running == 0


@pytest.mark.parametrize(
    ("height", "width", "size"), [(15, 128, 128), (100, 1000, 64)], ids=["128x15", "1000x100"]
)
def test_an_output_under_16_px_is_invalid_argument_not_internal(
    server_factory: ServerFactory, stub_for: Any, height: int, width: int, size: int
) -> None:
    stub = stub_for(server_factory())
    request = make_request(content_image=png(height, width, 1), options=options(size=size))
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "INVALID_INPUT"
    description = next(
        v.description
        for d in rich_details(caught.value)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
        if v.field == "options.size"
    )
    assert "16" in description


def test_size_errors_quote_the_server_range_not_the_engine_s(
    server_factory: ServerFactory, stub_for: Any
) -> None:
    stub = stub_for(server_factory(max_size=512))
    for size in (5000, 4):  # beyond the engine's own range (16-4096) on either side
        with pytest.raises(grpc.RpcError) as caught:
            collect(stub, make_request(options=options(size=size)))
        details = caught.value.details() or ""
        assert "512" in details and "4096" not in details


def test_a_call_beyond_the_pixel_budget_is_refused_before_decoding(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, spy: DecodeSpy
) -> None:
    gated = GatedStylizer(stylizer)
    # One request (3072 + 1600 px) fits; two do not.
    server = server_factory(engine=gated, max_inflight_pixels=8000, max_request_pixels=8000)
    stub = stub_for(server)
    running = Consumer(stub, make_request())
    assert gated.paused.wait(WAIT)
    assert server.budget.used == 48 * 64 + 40 * 40
    decodes = spy.decodes
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(caught.value) == "OVER_BUDGET" and has_retry_info(caught.value)
    assert spy.decodes == decodes
    gated.release()
    assert running.code() == grpc.StatusCode.OK
    assert server.budget.used == 0
    assert collect(stub, make_request())[-1].HasField("result")


def test_a_full_queue_refuses_before_decoding(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, spy: DecodeSpy
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, queue_size=1)
    stub = stub_for(server)
    running = Consumer(stub, make_request())
    assert gated.paused.wait(WAIT)
    waiting = Consumer(stub, make_request())
    while server.admission.waiting != 1:
        threading.Event().wait(0.01)
    # The waiting job decodes its two images after taking its slot: let it finish first.
    wait_for(lambda: spy.decodes == 4)
    decodes = spy.decodes
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request())
    assert reason_of(caught.value) == "QUEUE_FULL" and has_retry_info(caught.value)
    assert spy.decodes == decodes
    gated.release()
    assert running.code() == grpc.StatusCode.OK and waiting.code() == grpc.StatusCode.OK
