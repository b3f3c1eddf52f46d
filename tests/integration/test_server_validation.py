"""Every bad input -> INVALID_ARGUMENT with a BadRequest violation naming the field."""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from styletx_client.proto import style_transfer_pb2 as pb
from styletx_client.proto import style_transfer_pb2_grpc as pb_grpc
from styletx_server.app import StyletxServer
from tests.integration.conftest import (
    SIZE,
    ServerFactory,
    collect,
    make_request,
    png,
)

GOOD_STYLE = pb.StyleImage(image=png(40, 40, 2))


def options(**fields: Any) -> pb.StyleOptions:
    base: dict[str, Any] = {"size": SIZE, "max_evaluations": 4, "seed": 1}
    base.update(fields)
    return pb.StyleOptions(**base)


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no rich status details"
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def png_bytes() -> bytes:
    return png(48, 64, 1)


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "missing content": ({"content_image": b""}, "content_image"),
    "garbage content": ({"content_image": b"this is not an image"}, "content_image"),
    "truncated content": ({"content_image": png_bytes()[:60]}, "content_image"),
    "zero styles": ({"style_images": []}, "style_images"),
    "empty style": (
        {"style_images": [GOOD_STYLE, pb.StyleImage(image=b"")]},
        "style_images[1].image",
    ),
    "garbage style": (
        {"style_images": [GOOD_STYLE, pb.StyleImage(image=b"\x89PNG\r\n\x1a\nnope")]},
        "style_images[1].image",
    ),
    "negative style weight": (
        {"style_images": [pb.StyleImage(image=png(40, 40, 2), weight=-1.0)]},
        "style_images[0].weight",
    ),
    "nan style weight": (
        {"style_images": [pb.StyleImage(image=png(40, 40, 2), weight=math.nan)]},
        "style_images[0].weight",
    ),
    "all style weights zero": (
        {"style_images": [pb.StyleImage(image=png(40, 40, 2), weight=0.0)]},
        "style_images",
    ),
    "size over server max": ({"options": options(size=5000)}, "options.size"),
    "size too small": ({"options": options(size=4)}, "options.size"),
    "budget over server max": (
        {"options": options(max_evaluations=5000)},
        "options.max_evaluations",
    ),
    "zero budget": ({"options": options(max_evaluations=0)}, "options.max_evaluations"),
    "negative content weight": (
        {"options": options(content_weight=-0.5)},
        "options.content_weight",
    ),
    "nan style weight option": (
        {"options": options(style_weight=math.nan)},
        "options.style_weight",
    ),
    "inf tv weight": ({"options": options(tv_weight=math.inf)}, "options.tv_weight"),
    "tv power below one": ({"options": options(tv_power=0.5)}, "options.tv_power"),
    "unknown style layer": (
        {"options": options(style_layers=["block1_conv2", "block9_conv9"])},
        "options.style_layers",
    ),
    "unknown content layer": ({"options": options(content_layer="fc1")}, "options.content_layer"),
    "too many scales": ({"options": options(size=SIZE, scales=5)}, "options.scales"),
    "style scale out of range": ({"options": options(style_scale=10.0)}, "options.style_scale"),
    "unknown init enum": ({"options": options(init=42)}, "options.init"),
    "unknown output format": ({"output_format": 17}, "output_format"),
    "quality over 100": ({"output_quality": 101}, "output_quality"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_invalid_input_names_the_field(
    case: str, server: StyletxServer, stub: pb_grpc.StyleTransferServiceStub
) -> None:
    overrides, field = CASES[case]
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request(**overrides))
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(error)
    assert field in found, found
    assert found[field]  # a description the caller can act on
    # Rejected before admission: no job ever reached the engine.
    assert server.admission.running == 0


def test_every_violation_is_reported_at_once(stub: pb_grpc.StyleTransferServiceStub) -> None:
    request = make_request(
        content_image=b"",
        options=options(size=5000, content_weight=-1.0),
        output_format=9,
    )
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, request)
    assert {"content_image", "options.size", "options.content_weight", "output_format"} <= set(
        violations(caught.value)
    )


def test_image_over_the_pixel_limit_is_refused_before_decoding(
    server_factory: ServerFactory, stub_for: Any
) -> None:
    stub = stub_for(server_factory(max_pixels=1000))
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request())  # the content is 64 x 48 = 3072 pixels
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "content_image" in violations(caught.value)


def test_server_keeps_serving_after_bad_requests(stub: pb_grpc.StyleTransferServiceStub) -> None:
    for overrides, _ in list(CASES.values())[:5]:
        with pytest.raises(grpc.RpcError):
            collect(stub, make_request(**overrides))
    events = collect(stub, make_request())
    assert events[-1].HasField("result")
