"""Every bad input -> INVALID_ARGUMENT with a BadRequest violation naming the field."""

from __future__ import annotations

import math
import re
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.ops.app import StyletxServer
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


#: A description says what is allowed: a range, a limit, a choice, or what to send.
ALLOWED = re.compile(
    r"between|at most|at least|one of|choose|supported|required|>=|<=|limit|complete"
)
#: What a description must not leak: the decoder's own wording.
LEAKS = ("unpack_from", "Traceback", "chunk b'", "struct.error", "buffer size")


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_every_description_says_what_is_allowed_in_its_own_words(
    case: str, stub: pb_grpc.StyleTransferServiceStub
) -> None:
    overrides, field = CASES[case]
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request(**overrides))
    description = violations(caught.value)[field]
    assert ALLOWED.search(description), description
    assert not any(leak in description for leak in LEAKS), description


def _png(height: int, width: int) -> bytes:
    from styletx.images import encode_image
    from tests.support.weights import tiny_image

    return encode_image(tiny_image(height, width, 1), "png")


@pytest.mark.parametrize(
    ("overrides", "field", "wanted"),
    [
        # A PNG cut right after its header (signature + IHDR): no decoder wording.
        ({"content_image": _png(40, 60)[:33]}, "content_image", ["not a complete PNG file"]),
        (
            {"content_image": _png(40, 60)[:2000]},
            "content_image",
            ["PNG data is truncated", "60x40 pixels", "2000 bytes", "send the complete"],
        ),
        ({"options": options(tv_power=-1)}, "options.tv_power", ["between 1 and 4", "got -1"]),
        (
            {"style_images": [pb.StyleImage(image=_png(2, 3000))]},
            "style_images[0].image",
            ["3000x2 style image", "too elongated", "1024 px", "64:1"],
        ),
        (
            {"options": options(size=512, style_scale=3.0)},
            "options.style_scale",
            ["3 x size 512 = 1536 px", "at most 2 at size 512"],
        ),
    ],
    ids=["png_cut_after_header", "png_cut_in_its_pixels", "tv_power", "thin_style", "style_scale"],
)
def test_the_issue_s_messages_name_the_input_the_fault_and_the_range(
    server_factory: ServerFactory,
    stub_for: Any,
    overrides: dict[str, Any],
    field: str,
    wanted: list[str],
) -> None:
    stub = stub_for(server_factory(max_size=1024, max_style_size=1024))
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request(**overrides))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(caught.value)
    assert list(found) == [field], found
    for text in wanted:
        assert text in found[field], found[field]
    assert not any(leak in found[field] for leak in LEAKS)


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
