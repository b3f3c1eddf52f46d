"""No combination of allowed values crashes the server: the corners of every limit, with the real
VGG16 on a small budget (small maxima so each job takes a fraction of a second)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from styletx import geometry
from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.ops.app import StyletxServer
from styletx_server.ops.config import ServerConfig
from tests.integration.conftest import WAIT, channel_to, png

pytestmark = [pytest.mark.real_weights, pytest.mark.slow]

LIMITS: dict[str, Any] = {
    "max_size": 64,
    "max_style_size": 128,
    "max_styles": 2,
    "max_scales": 2,
    "max_evaluations": 3,
    "default_evaluations": 3,
    "default_size": 64,
    "max_pixels": 64 * 64,
    "max_request_pixels": 3 * 64 * 64,
    "max_inflight_pixels": 3 * 64 * 64,
}

#: Whether the engine enlarges style passes and drops pyramid levels whose shorter side would be
#: under 16 px (the engine branch's geometry); the engine on this branch cannot run those corners.
SMALL_PASSES = min(geometry.style_size(8, 8, (16, 64), 0.1)) >= geometry.MIN_SIDE


def case(
    content: tuple[int, int],
    styles: list[tuple[int, int]],
    *,
    needs_small_passes: bool = False,
    **options: Any,
) -> Any:
    request = pb.StylizeRequest(
        content_image=png(*content, 1),
        style_images=[pb.StyleImage(image=png(h, w, 2 + i)) for i, (h, w) in enumerate(styles)],
        options=pb.StyleOptions(seed=1, **options),
    )
    marks = []
    if needs_small_passes and not SMALL_PASSES:
        marks.append(
            pytest.mark.xfail(reason="needs the engine's small-pass geometry", strict=False)
        )
    name = f"{content[1]}x{content[0]}-{len(styles)}st-" + "-".join(
        f"{k}{v}" for k, v in options.items()
    )
    return pytest.param(request, marks=marks, id=name)


CORNERS = [
    # Largest output, largest style pass (64 x 2 = 128), most styles and scales, max budget.
    case((64, 64), [(64, 64), (40, 64)], size=64, style_scale=2.0, scales=2, max_evaluations=3),
    # Smallest output; the largest style_scale the engine allows (16 x 4 = 64 <= 128).
    case((64, 64), [(64, 64)], size=16, style_scale=4.0),
    # Thinnest allowed output (shorter side exactly 16), both orientations, with the pyramid.
    case((16, 64), [(64, 64)], size=64, scales=2, needs_small_passes=True),
    case((64, 16), [(64, 64)], size=64, style_scale=2.0),
    # Smallest style_scale: a style pass far under VGG16's 16 px before enlargement.
    case((64, 64), [(64, 64)], size=64, style_scale=0.1, needs_small_passes=True),
    # Elongated style image at the largest scale, colour preservation and style init.
    case((48, 64), [(8, 64)], size=64, style_scale=2.0, needs_small_passes=True,
         preserve_colors=pb.COLOR_PRESERVATION_LUMINANCE, init=pb.INIT_METHOD_STYLE),
    # Tiny inputs blown up to the largest output.
    case((16, 16), [(8, 8)], size=64, style_scale=2.0),
]  # fmt: skip


@pytest.fixture(scope="module")
def corner_server() -> Any:
    config = replace(
        ServerConfig(address="127.0.0.1:0", metrics_port=0, workers=1, warmup=False), **LIMITS
    )
    server = StyletxServer(config, stylizer=Stylizer(), registry=CollectorRegistry())
    server.start()
    assert server.wait_until_ready(120)
    yield server
    server.stop()


@pytest.mark.parametrize("request_", CORNERS)
def test_every_corner_of_the_limits_runs_or_is_refused_cleanly(
    corner_server: StyletxServer, request_: pb.StylizeRequest
) -> None:
    with channel_to(corner_server) as channel:
        stub = pb_grpc.StyleTransferServiceStub(channel)
        try:
            events = list(stub.Stylize(request_, timeout=WAIT * 4))
        except grpc.RpcError as exc:
            pytest.fail(f"{exc.code()}: {exc.details()}")
    result = events[-1].result
    assert result.evaluations >= 1 and result.image.data
    assert max(result.image.width, result.image.height) == request_.options.size


def test_just_past_each_limit_is_refused(corner_server: StyletxServer) -> None:
    over = [
        pb.StyleOptions(size=65),
        pb.StyleOptions(size=64, style_scale=2.1),
        pb.StyleOptions(scales=3),
        pb.StyleOptions(max_evaluations=4),
    ]
    with channel_to(corner_server) as channel:
        stub = pb_grpc.StyleTransferServiceStub(channel)
        for options in over:
            request = pb.StylizeRequest(
                content_image=png(64, 64, 1),
                style_images=[pb.StyleImage(image=png(64, 64, 2))],
                options=options,
            )
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Stylize(request, timeout=WAIT))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
