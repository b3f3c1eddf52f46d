"""Job geometry from dimensions alone: output size, style size, the scale pyramid."""

from __future__ import annotations

import pytest

from styletx.errors import InvalidOptions
from styletx.geometry import (
    MIN_SIDE,
    cover_size,
    fit_longest,
    output_size,
    padded_size,
    scale_sizes,
    style_size,
)


def test_fit_longest_keeps_the_aspect_ratio() -> None:
    assert fit_longest(300, 400, 200) == (150, 200)
    assert fit_longest(400, 300, 200) == (200, 150)
    assert fit_longest(1, 1000, 10) == (1, 10)


@pytest.mark.parametrize(("height", "width", "size"), [(15, 128, 128), (100, 1000, 64)])
def test_an_output_under_the_vgg16_minimum_is_refused_naming_size(
    height: int, width: int, size: int
) -> None:
    with pytest.raises(InvalidOptions) as err:
        output_size(height, width, size)
    assert err.value.field == "size"
    assert str(MIN_SIDE) in err.value.message


def test_an_output_at_the_minimum_is_accepted() -> None:
    assert output_size(16, 128, 128) == (16, 128)


def test_style_size_scales_the_style_own_longest_side() -> None:
    # A portrait style for a landscape output keeps its portrait shape.
    assert style_size(400, 200, (100, 200), 1.0) == (200, 100)
    assert style_size(400, 200, (100, 200), 0.5) == (100, 50)
    assert style_size(8, 8, (1024, 1024), 4.0) == (4096, 4096)


def test_scale_sizes_halve_and_skip_levels_under_the_minimum() -> None:
    assert scale_sizes(256, 256, 3) == [(64, 64), (128, 128), (256, 256)]
    # 40 px high: the half (20) is fine, the quarter (10) is left out.
    assert scale_sizes(40, 256, 3) == [(20, 128), (40, 256)]
    assert scale_sizes(16, 256, 2) == [(16, 256)]


def test_style_size_enlarges_a_style_under_the_minimum_keeping_its_shape() -> None:
    # 0.1 x 64 = 6 px would leave VGG16 nothing: the shorter side becomes 16, aspect kept.
    assert style_size(100, 50, (64, 64), 0.1) == (32, 16)
    assert style_size(3, 300, (64, 64), 1.0) == (16, 1600)
    assert min(style_size(30, 40, (16, 20), 0.5)) == MIN_SIDE


@pytest.mark.parametrize(
    ("image", "target", "expected"),
    [
        ((20, 60), (10, 10), (10, 30)),  # wide image, square target: match the height
        ((60, 20), (10, 10), (30, 10)),  # tall image: match the width
        ((20, 60), (40, 20), (40, 120)),
        ((30, 40), (30, 40), (30, 40)),  # same shape: unchanged
        ((33, 10), (10, 7), (24, 7)),  # ceil keeps the covering side >= the target's
    ],
)
def test_cover_size_covers_the_target_with_the_image_aspect_ratio(
    image: tuple[int, int], target: tuple[int, int], expected: tuple[int, int]
) -> None:
    got = cover_size(*image, target)
    assert got == expected
    assert got[0] >= target[0] and got[1] >= target[1]


@pytest.mark.parametrize(
    ("height", "width", "step", "padded"),
    [
        (173, 260, 16, (176, 260)),  # the shorter side rounds up, the longer stays
        (260, 197, 16, (260, 208)),
        (260, 160, 16, (260, 160)),  # already on the step
        (260, 260, 16, (260, 260)),  # squares are never padded
        (250, 252, 16, (252, 252)),  # never past the longer side
        (173, 260, 1, (173, 260)),  # step 1: off
        (17, 31, 32, (31, 31)),
    ],
)
def test_padded_size_rounds_only_the_shorter_side(
    height: int, width: int, step: int, padded: tuple[int, int]
) -> None:
    assert padded_size(height, width, step) == padded


def test_padded_size_makes_many_aspect_ratios_share_few_shapes() -> None:
    shapes = [(short, 260) for short in range(130, 261)] + [(260, s) for s in range(130, 261)]
    # 144, 160, ..., 256 and 260 for each orientation; 260 x 260 is in both.
    assert len({padded_size(h, w, 16) for h, w in shapes}) == 17
    assert len({padded_size(h, w, 1) for h, w in shapes}) == len(set(shapes))


def test_padded_size_needs_a_positive_step() -> None:
    with pytest.raises(ValueError, match="step"):
        padded_size(10, 20, 0)
