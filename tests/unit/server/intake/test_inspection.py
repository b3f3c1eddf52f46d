"""Header-only inspection: limits from declared dimensions, reasons, and the server's ranges."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest

from styletx.images import encode_image
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.refusals import InvalidRequest
from styletx_server.errors.statuses import Reason
from styletx_server.intake.inspection import Limits, inspect
from tests.support.weights import tiny_image

LIMITS = Limits(
    max_styles=2,
    max_pixels=10_000,
    max_request_pixels=15_000,
    max_size=128,
    max_style_size=192,
    max_scales=2,
    max_evaluations=20,
    default_size=64,
    default_evaluations=10,
)


def png(height: int, width: int) -> bytes:
    return encode_image(tiny_image(height, width, 1), "png")


def header_only_png(width: int, height: int) -> bytes:
    """A PNG signature and IHDR declaring `width` x `height`, and no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + end


def request(**fields: Any) -> pb.StylizeRequest:
    base: dict[str, Any] = {
        "content_image": png(24, 32),
        "style_images": [pb.StyleImage(image=png(20, 20))],
    }
    base.update(fields)
    return pb.StylizeRequest(**base)


def refused(req: pb.StylizeRequest) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        inspect(req, LIMITS)
    return caught.value


def test_a_fitting_request_reserves_its_declared_pixels() -> None:
    inspection = inspect(request(), LIMITS)
    assert inspection.pixels == 24 * 32 + 20 * 20
    assert inspection.output_pixels == 48 * 64  # 24x32 content at the default size 64
    assert inspection.options.size == 64


def test_declared_dimensions_are_enough_to_refuse_a_bomb() -> None:
    error = refused(request(content_image=header_only_png(100_000, 100_000)))
    assert error.reason is Reason.LIMIT_EXCEEDED
    assert error.limits == {"max_pixels": 10_000}
    assert "10000000000" in error.violations[0].description


def test_limit_and_input_errors_together_are_invalid_input() -> None:
    error = refused(
        request(options=pb.StyleOptions(size=500, content_weight=-1.0))  # a limit and a bad value
    )
    assert error.reason is Reason.INVALID_INPUT
    assert error.limits == {"max_size": 128}
    assert {v.field for v in error.violations} == {"options.size", "options.content_weight"}


def test_style_size_is_size_times_style_scale_as_the_engine_computes_it() -> None:
    assert inspect(request(options=pb.StyleOptions(size=96, style_scale=2.0)), LIMITS)
    error = refused(request(options=pb.StyleOptions(size=100, style_scale=2.0)))
    assert error.limits == {"max_style_size": 192}
    assert "200" in error.violations[0].description


def test_preset_values_are_held_to_the_limits_too() -> None:
    tight = Limits(**{**LIMITS.__dict__, "max_evaluations": 5})
    with pytest.raises(InvalidRequest) as caught:
        inspect(request(), tight)  # the server's default of 10 evaluations is over 5
    assert caught.value.limits == {"max_evaluations": 5}


def test_request_pixels_sum_content_and_styles() -> None:
    styles = [pb.StyleImage(image=png(80, 100)), pb.StyleImage(image=png(80, 100))]
    error = refused(request(style_images=styles))
    assert error.limits == {"max_request_pixels": 15_000}
