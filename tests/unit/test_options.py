"""StyleOptions: reference defaults and precise validation naming the field."""

from __future__ import annotations

import math
from typing import Any

import pytest

from styletx.errors import InvalidOptions
from styletx.options import StyleOptions


def test_defaults_follow_the_reference_tutorial() -> None:
    o = StyleOptions()
    assert (o.size, o.content_weight, o.style_weight, o.tv_weight, o.tv_power) == (
        260,
        0.02,
        4.5,
        0.995,
        1.25,
    )
    assert o.content_layer == "block2_conv2"
    assert o.style_layers == (
        "block1_conv2",
        "block2_conv2",
        "block3_conv3",
        "block4_conv3",
        "block5_conv3",
    )
    assert (o.max_evaluations, o.restart_every, o.init) == (200, 0, "random")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 0),
        ("size", 10_000),
        ("size", 12.5),
        ("content_weight", -1.0),
        ("style_weight", math.nan),
        ("tv_weight", math.inf),
        ("tv_power", 0.5),
        ("content_layer", "block9_conv1"),
        ("style_layers", ()),
        ("style_layers", ("block1_conv2", "fc1")),
        ("style_layers", ("block1_conv2", "block1_conv2")),
        ("max_evaluations", 0),
        ("restart_every", -1),
        ("init", "noise"),
        ("seed", -3),
        ("style_blend_weights", (1.0, -0.5)),
        ("style_blend_weights", (0.0, 0.0)),
        ("style_scale", 0.0),
        ("scales", 0),
        ("scales", 5),
        ("preview_every", -1),
        ("lbfgs_memory", 0),
        ("preserve_colors", "yes"),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(InvalidOptions) as err:
        StyleOptions(**{field: value})
    assert err.value.field == field
    assert field in str(err.value)


def test_scales_suit_any_size_the_pyramid_leaves_out_small_levels() -> None:
    # Once refused; now the pyramid drops levels under 16 px (so presets never fail small jobs).
    from styletx.geometry import scale_sizes

    options = StyleOptions(size=32, scales=3)
    assert scale_sizes(32, 32, options.scales) == [(16, 16), (32, 32)]


def test_replace_validates_and_as_dict_is_plain() -> None:
    o = StyleOptions().replace(size=64)
    assert o.size == 64
    assert isinstance(o.as_dict()["style_layers"], list)
    with pytest.raises(InvalidOptions):
        o.replace(size=-1)


def test_replace_with_another_preset_applies_it_not_just_its_label() -> None:
    fast = StyleOptions().replace(preset="fast")
    assert fast == StyleOptions(preset="fast")
    assert (fast.max_evaluations, fast.init, fast.pixel_bounds) == (40, "content_matched", True)
    # Options no preset decides are kept; changes named beside the preset win over it.
    custom = StyleOptions(size=64, seed=3, style_weight=9.0).replace(preset="high", init="style")
    assert custom == StyleOptions(preset="high", size=64, seed=3, style_weight=9.0, init="style")
    assert custom.max_evaluations == 500


def test_auto_precision_decides_from_options_that_match_their_preset() -> None:
    from styletx.precision import PrecisionPolicy

    auto = PrecisionPolicy("auto", bfloat16_native=True)
    # The bfloat16 job is the fast method (the guard measured), not the reference's under its
    # label; and the job relabelled `reference` is the tutorial's method, kept in float32.
    fast = StyleOptions(size=64).replace(preset="fast")
    assert auto.for_job(fast) == "mixed_bfloat16" and fast.max_evaluations == 40
    reference = fast.replace(preset="reference")
    assert auto.for_job(reference) == "float32"
    assert reference == StyleOptions(size=64)
