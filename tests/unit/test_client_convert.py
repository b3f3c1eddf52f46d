"""Conversions: image inputs to bytes, options to StylizeRequest, stream messages to events."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from PIL import Image

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_client import (
    EncodedImage,
    Losses,
    Progress,
    Queued,
    ResolvedOptions,
    Result,
    Started,
    Style,
)
from styletx_client._convert import (
    KNOWN_OPTIONS,
    build_request,
    event_from_proto,
    options_from_proto,
    read_image,
    style_list,
)
from tests.support.fake_server import png_bytes, progress, queued, result, started


def test_read_image_accepts_paths_bytes_and_buffers(tmp_path: Path) -> None:
    data = png_bytes()
    path = tmp_path / "in.png"
    path.write_bytes(data)
    assert read_image(str(path), "content") == data
    assert read_image(path, "content") == data
    assert read_image(data, "content") == data
    assert read_image(bytearray(data), "content") == data
    assert read_image(memoryview(data), "content") == data


def test_read_image_encodes_a_pil_image_losslessly() -> None:
    image = Image.new("RGB", (5, 3), (1, 2, 3))
    decoded = Image.open(io.BytesIO(read_image(image, "content")))
    assert decoded.format == "PNG"
    assert decoded.size == (5, 3)
    assert decoded.convert("RGB").getpixel((4, 2)) == (1, 2, 3)


def test_read_image_rejects_other_types_naming_the_argument() -> None:
    with pytest.raises(TypeError, match=r"styles\[1\] must be a path, bytes or a PIL image"):
        read_image(42, "styles[1]")  # type: ignore[arg-type]


def test_read_image_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png", "content")


def test_style_list_accepts_one_image_or_a_sequence() -> None:
    image = Image.new("RGB", (2, 2))
    assert style_list(b"abc") == [Style(b"abc")]
    assert style_list("a.png") == [Style("a.png")]
    assert style_list(Style(b"x", 2.0)) == [Style(b"x", 2.0)]
    assert style_list(image) == [Style(image)]
    assert style_list([b"a", Style(b"b", 0.5)]) == [Style(b"a"), Style(b"b", 0.5)]
    with pytest.raises(ValueError, match="at least one style"):
        style_list([])


def test_build_request_sets_images_weights_and_every_option() -> None:
    request = build_request(
        b"content",
        [Style(b"s1", 3.0), b"s2"],
        {
            "size": 128,
            "content_weight": 0.5,
            "style_weight": 2.0,
            "tv_weight": 0.1,
            "tv_power": 1.5,
            "content_layer": "block3_conv3",
            "style_layers": ["block1_conv2", "block2_conv2"],
            "max_evaluations": 7,
            "restart_every": 20,
            "init": "style",
            "seed": 9,
            "style_scale": 0.8,
            "preserve_colors": "swap",
            "scales": 2,
            "output_format": "webp",
            "quality": 70,
            "preview_every": 3,
        },
    )
    assert request.content_image == b"content"
    assert [s.image for s in request.style_images] == [b"s1", b"s2"]
    assert request.style_images[0].weight == 3.0
    assert not request.style_images[1].HasField("weight")
    o = request.options
    assert (o.size, o.content_weight, o.style_weight, o.tv_weight, o.tv_power) == (
        128,
        0.5,
        2.0,
        0.1,
        1.5,
    )
    assert o.content_layer == "block3_conv3"
    assert list(o.style_layers) == ["block1_conv2", "block2_conv2"]
    assert (o.max_evaluations, o.restart_every, o.seed, o.scales) == (7, 20, 9, 2)
    assert o.init == pb.INIT_METHOD_STYLE
    assert o.style_scale == pytest.approx(0.8)
    assert o.preserve_colors == pb.COLOR_PRESERVATION_SWAP
    assert request.output_format == pb.IMAGE_FORMAT_WEBP
    assert request.output_quality == 70
    assert request.preview_every == 3


def test_every_proto_style_option_is_a_known_option() -> None:
    fields = {f.name for f in pb.StyleOptions.DESCRIPTOR.fields}
    assert fields <= KNOWN_OPTIONS


def test_unset_options_stay_unset_so_the_server_default_applies() -> None:
    request = build_request(b"c", b"s", {})
    for name in ("size", "content_weight", "max_evaluations", "seed"):
        assert not request.options.HasField(name)
    assert request.options.init == pb.INIT_METHOD_UNSPECIFIED
    assert request.options.preserve_colors == pb.COLOR_PRESERVATION_UNSPECIFIED
    assert request.output_format == pb.IMAGE_FORMAT_UNSPECIFIED


def test_zero_and_false_options_are_sent_explicitly() -> None:
    request = build_request(b"c", b"s", {"restart_every": 0, "preserve_colors": "off"})
    assert request.options.HasField("restart_every")
    assert request.options.preserve_colors == pb.COLOR_PRESERVATION_OFF


def test_unknown_option_names_raise_type_error() -> None:
    with pytest.raises(TypeError, match="sise"):
        build_request(b"c", b"s", {"sise": 3})  # type: ignore[typeddict-unknown-key]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"init": "noise"}, ValueError),
        ({"output_format": "gif"}, ValueError),
        ({"size": -1}, ValueError),
        ({"size": "big"}, TypeError),
        ({"style_layers": "block1_conv2"}, TypeError),
    ],
)
def test_bad_option_values_fail_before_any_call(options: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        build_request(b"c", b"s", options)  # type: ignore[arg-type]


def test_queued_event() -> None:
    assert event_from_proto(queued(3, "r1")) == Queued(position=3, request_id="r1")


def test_started_event_carries_resolved_options_and_seconds() -> None:
    event = event_from_proto(started(width=40, height=30, max_evaluations=9, request_id="r2"))
    assert isinstance(event, Started)
    assert (event.width, event.height, event.request_id) == (40, 30, "r2")
    assert event.queue_time == pytest.approx(0.25)
    assert event.options.max_evaluations == 9
    assert event.options.size == 40
    assert event.options.init == "content"
    assert event.options.style_layers == ("block1_conv2", "block2_conv2")
    assert event.options.seed is None  # not set by the fake: unknown, not zero


def test_progress_event_with_and_without_preview() -> None:
    plain = event_from_proto(progress(2, 5, 10))
    assert isinstance(plain, Progress)
    assert (plain.iteration, plain.evaluations, plain.max_evaluations) == (2, 5, 10)
    assert plain.losses == Losses(total=50.0, content=5.0, style=35.0, tv=10.0)
    assert plain.elapsed == pytest.approx(1.0)
    assert plain.preview is None
    with_preview = event_from_proto(progress(1, 2, preview=b"img"))
    assert isinstance(with_preview, Progress)
    assert with_preview.preview == EncodedImage(data=b"img", format="png", width=8, height=6)


def test_result_event_exposes_image_and_saves(tmp_path: Path) -> None:
    data = png_bytes(8, 6)
    event = event_from_proto(result(data, 8, 6, request_id="r3"))
    assert isinstance(event, Result)
    assert event.image_bytes == data
    assert (event.width, event.height, event.format) == (8, 6, "png")
    assert (event.iterations, event.evaluations, event.request_id) == (3, 4, "r3")
    assert event.compute_time == pytest.approx(1.5)
    saved = event.save(tmp_path / "nested" / "out.png")
    assert saved.read_bytes() == data


def test_events_are_immutable() -> None:
    event = event_from_proto(queued(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.position = 2  # type: ignore[misc,union-attr]


def test_an_event_kind_unknown_to_this_sdk_is_skipped() -> None:
    assert event_from_proto(pb.StylizeResponse()) is None


def test_options_from_proto_maps_every_field() -> None:
    options = pb.StyleOptions(
        size=1,
        content_weight=2.0,
        style_weight=3.0,
        tv_weight=4.0,
        tv_power=5.0,
        content_layer="c",
        style_layers=["a", "b"],
        max_evaluations=6,
        restart_every=7,
        init=pb.INIT_METHOD_RANDOM,
        seed=8,
        style_scale=9.0,
        preserve_colors=pb.COLOR_PRESERVATION_SWAP,
        scales=2,
        preset=pb.PRESET_FAST,
        lbfgs_memory=5,
    )
    assert options_from_proto(options) == ResolvedOptions(
        size=1,
        content_weight=2.0,
        style_weight=3.0,
        tv_weight=4.0,
        tv_power=5.0,
        content_layer="c",
        style_layers=("a", "b"),
        max_evaluations=6,
        restart_every=7,
        init="random",
        seed=8,
        style_scale=9.0,
        preserve_colors="swap",
        scales=2,
        preset="fast",
        lbfgs_memory=5,
    )
    resolved_fields = {f.name for f in dataclasses.fields(ResolvedOptions)}
    assert resolved_fields == {f.name for f in pb.StyleOptions.DESCRIPTOR.fields}
