"""Request conversion: defaults, limits, collected violations, and the resolved-options proto.

`parse` runs the server's two intake steps back to back: header inspection, then decoding.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from styletx import StyleOptions
from styletx.images import encode_image
from styletx.options import DEFAULT_STYLE_LAYERS
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.refusals import InvalidRequest
from styletx_server.intake.convert import duration, options_to_proto
from styletx_server.intake.decode import JobSpec, decode
from styletx_server.intake.inspection import Limits, inspect
from tests.support.weights import tiny_image

LIMITS = Limits(
    max_styles=8,
    max_pixels=100_000,
    max_request_pixels=1_000_000,
    max_size=128,
    max_style_size=512,
    max_scales=4,
    max_evaluations=50,
    default_size=64,
    default_evaluations=30,
)


def parse_request(req: pb.StylizeRequest, limits: Limits) -> JobSpec:
    return decode(req, inspect(req, limits), limits.max_pixels)


def png(height: int = 24, width: int = 32, seed: int = 0) -> bytes:
    return encode_image(tiny_image(height, width, seed), "png")


def request(**fields: Any) -> pb.StylizeRequest:
    base: dict[str, Any] = {
        "content_image": png(24, 32, 1),
        "style_images": [pb.StyleImage(image=png(20, 20, 2))],
    }
    base.update(fields)
    return pb.StylizeRequest(**base)


def violated(req: pb.StylizeRequest) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(req, LIMITS)
    return {v.field: v.description for v in caught.value.violations}


def test_unset_options_take_the_server_defaults() -> None:
    spec = parse_request(request(), LIMITS)
    assert spec.options.size == LIMITS.default_size
    assert spec.options.max_evaluations == LIMITS.default_evaluations
    defaults = StyleOptions()
    assert spec.options.content_weight == defaults.content_weight
    assert spec.options.style_layers == DEFAULT_STYLE_LAYERS
    assert spec.options.style_blend_weights == ()
    assert spec.output_format == "png" and spec.output_quality == 90
    assert spec.content.shape == (24, 32, 3)
    assert [s.shape for s in spec.styles] == [(20, 20, 3)]


def test_an_unset_seed_is_drawn_so_it_can_be_reported() -> None:
    seeds = {parse_request(request(), LIMITS).options.seed for _ in range(5)}
    assert None not in seeds
    assert len(seeds) > 1


def test_every_set_option_reaches_the_engine() -> None:
    given = pb.StyleOptions(
        size=100,
        content_weight=0.5,
        style_weight=2.0,
        tv_weight=0.1,
        tv_power=2.0,
        content_layer="block4_conv2",
        style_layers=["block1_conv1", "block3_conv1"],
        max_evaluations=40,
        restart_every=20,
        init=pb.INIT_METHOD_CONTENT,
        seed=0,
        style_scale=0.5,
        preserve_colors=pb.COLOR_PRESERVATION_SWAP,
        scales=2,
        preset=pb.PRESET_REFERENCE,
        lbfgs_memory=5,
        pixel_bounds=True,
    )
    req = request(
        options=given, preview_every=3, output_format=pb.IMAGE_FORMAT_WEBP, output_quality=70
    )
    spec = parse_request(req, LIMITS)
    assert spec.options == StyleOptions(
        size=100,
        content_weight=0.5,
        style_weight=2.0,
        tv_weight=0.1,
        tv_power=2.0,
        content_layer="block4_conv2",
        style_layers=("block1_conv1", "block3_conv1"),
        max_evaluations=40,
        restart_every=20,
        init="content",
        seed=0,
        style_scale=0.5,
        preserve_colors="swap",
        scales=2,
        preview_every=3,
        preset="reference",
        lbfgs_memory=5,
        pixel_bounds=True,
    )
    assert (spec.output_format, spec.output_quality) == ("webp", 70)
    # The proto of the resolved options round-trips every field.
    assert options_to_proto(spec.options) == given


def test_blend_weights_default_to_one_for_unset_entries() -> None:
    styles = [pb.StyleImage(image=png(20, 20, 2), weight=3.0), pb.StyleImage(image=png(20, 20, 3))]
    assert parse_request(request(style_images=styles), LIMITS).options.style_blend_weights == (
        3.0,
        1.0,
    )


def test_all_violations_are_collected() -> None:
    found = violated(
        request(
            content_image=b"",
            style_images=[
                pb.StyleImage(image=png(20, 20, 2), weight=math.inf),
                pb.StyleImage(image=b"junk"),
            ],
            options=pb.StyleOptions(
                size=129,
                max_evaluations=51,
                content_weight=-1,
                style_layers=["nope"],
                init=pb.InitMethod.ValueType(9),
            ),
            output_format=8,
            output_quality=500,
        )
    )
    assert set(found) == {
        "content_image",
        "style_images[0].weight",
        "style_images[1].image",
        "options.size",
        "options.max_evaluations",
        "options.content_weight",
        "options.style_layers",
        "options.init",
        "output_format",
        "output_quality",
    }
    assert "128" in found["options.size"]  # the server's own limit, not the engine's
    assert "50" in found["options.max_evaluations"]


def test_repeated_style_layers_are_refused() -> None:
    found = violated(request(options=pb.StyleOptions(style_layers=["block1_conv1"] * 2)))
    assert "options.style_layers" in found


def test_scales_beyond_the_engine_range_name_the_field() -> None:
    # Many scales at a small size are fine now (the pyramid drops levels under 16 px).
    assert parse_request(request(options=pb.StyleOptions(size=32, scales=3)), LIMITS)
    found = violated(request(options=pb.StyleOptions(size=32, scales=5)))
    assert list(found) == ["options.scales"]


def test_pixel_limit_names_the_style_field() -> None:
    big = png(400, 400, 4)  # 160 000 pixels > 100 000
    found = violated(
        request(style_images=[pb.StyleImage(image=png(20, 20, 2)), pb.StyleImage(image=big)])
    )
    assert list(found) == ["style_images[1].image"]


def test_zero_styles_is_a_violation() -> None:
    assert "style_images" in violated(request(style_images=[]))


def test_duration_converts_seconds() -> None:
    assert duration(1.25).ToNanoseconds() == 1_250_000_000
    assert duration(-3.0).ToNanoseconds() == 0


def test_every_proto_option_maps_onto_an_engine_option() -> None:
    import dataclasses

    from styletx.options import StyleOptions as EngineOptions

    proto_fields = {f.name for f in pb.StyleOptions.DESCRIPTOR.fields}
    engine_fields = {f.name for f in dataclasses.fields(EngineOptions)}
    assert proto_fields <= engine_fields
