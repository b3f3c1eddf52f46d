"""The engine's maths as documented: exact budgets, style_scale, init=style, cancellation points,
the VGG16 minimum size (seeded random weights, tiny images)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from styletx import colors, images
from styletx.engine import Stylizer
from styletx.errors import Cancelled, InvalidOptions
from styletx.options import StyleOptions
from styletx.result import Progress
from styletx.scales import split_budget
from tests.support.weights import tiny_image

FAST = StyleOptions(size=32, max_evaluations=6, seed=0)


@pytest.fixture(scope="module")
def stylizer(seeded_weights: Path) -> Stylizer:
    return Stylizer(seeded_weights)


class TargetSpy:
    """Wraps a step's `targets` to record the shape of every image batch it is given."""

    def __init__(self, stylizer: Stylizer, options: StyleOptions) -> None:
        self.step = stylizer.step(options)
        self.shapes: list[tuple[int, ...]] = []
        self._real = self.step.targets

    def __enter__(self) -> TargetSpy:
        def spy(batch: np.ndarray) -> Any:
            self.shapes.append(tuple(batch.shape))
            return self._real(batch)

        self.step.targets = spy  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.step.targets


@pytest.mark.parametrize(("total", "parts"), [(1, 1), (4, 4), (5, 4), (200, 3), (7, 2)])
def test_budget_shares_add_up_exactly(total: int, parts: int) -> None:
    shares = split_budget(total, parts)
    assert sum(shares) == total and len(shares) == parts and min(shares) >= 1


@pytest.mark.parametrize(
    ("budget", "levels"), [(1, [128]), (3, [32, 64, 128]), (9, [16, 32, 64, 128])]
)
def test_a_job_never_runs_more_than_its_budget_across_scales(
    stylizer: Stylizer, budget: int, levels: list[int]
) -> None:
    before = stylizer.evaluations_total
    events: list[Progress] = []
    options = StyleOptions(size=128, scales=4, max_evaluations=budget, seed=1)
    with TargetSpy(stylizer, options) as spy:
        result = stylizer.stylize(
            tiny_image(128, 128), [tiny_image(64, 64, seed=2)], options, on_progress=events.append
        )
    assert result.evaluations == stylizer.evaluations_total - before == budget
    assert result.image.shape == (128, 128, 3)
    # A budget smaller than the scale count drops the coarsest scales (one evaluation each at
    # least); the targets are computed at each scale used (content, then the style image).
    assert [shape[1] for shape in spy.shapes[0::2]] == levels
    assert all(e.evaluations <= budget for e in events)


def test_style_scale_keeps_the_style_own_aspect_ratio(stylizer: Stylizer) -> None:
    options = FAST.replace(max_evaluations=1, style_scale=0.75)
    content, portrait_style = tiny_image(48, 64), tiny_image(80, 40, seed=3)
    with TargetSpy(stylizer, options) as spy:
        stylizer.stylize(content, [portrait_style], options)
    # Output 24 x 32; the style's longest side is 0.75 x 32 = 24, portrait kept: 24 x 12 would
    # be under VGG16's 16 px, so it is enlarged to 32 x 16.
    assert spy.shapes == [(1, 24, 32, 3), (1, 32, 16, 3)]
    with TargetSpy(stylizer, options.replace(style_scale=2.0)) as spy:
        stylizer.stylize(content, [portrait_style], options.replace(style_scale=2.0))
    assert spy.shapes[1] == (1, 64, 32, 3)


def _periodic(height: int, width: int, period: int = 16) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width] * (2 * np.pi / period)
    channels = [128 + 100 * np.sin(x + k) * np.cos(y - k) for k in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def test_style_loss_does_not_depend_on_the_style_image_pixel_count(stylizer: Stylizer) -> None:
    # The same periodic texture on a 32 px and on a 64 px canvas: shown at style_scale 1 and 2,
    # each is used at its own size, and the Grams are rescaled to the output's pixel count.
    options = StyleOptions(size=32, style_layers=("block1_conv1", "block1_conv2"), seed=0)
    content, image = tiny_image(32, 32, seed=1), tiny_image(32, 32, seed=5)
    small = stylizer.evaluate(content, [_periodic(32, 32)], image, options)
    large = stylizer.evaluate(content, [_periodic(64, 64)], image, options.replace(style_scale=2.0))
    # Without the rescaling the large canvas' Grams would be 4x larger: a loss many times off.
    assert large.style == pytest.approx(small.style, rel=0.05)


def test_init_style_covers_the_output_without_squashing(stylizer: Stylizer) -> None:
    style = tiny_image(40, 120, seed=7)  # much wider than the output
    options = FAST.replace(
        init="style", content_weight=0.0, style_weight=0.0, tv_weight=0.0, max_evaluations=1
    )
    result = stylizer.stylize(tiny_image(48, 64), [style], options)
    expected = images.resize_cover(style, 24, 32)
    np.testing.assert_allclose(result.image.astype(int), expected.astype(int), atol=1)
    squashed = images.resize_to(style, 24, 32)
    assert np.abs(result.image.astype(int) - squashed.astype(int)).mean() > 5


def test_init_content_matched_starts_from_the_content_in_the_styles_blended_colours(
    stylizer: Stylizer,
) -> None:
    content = tiny_image(48, 64)
    styles = [np.full((30, 30, 3), (200, 40, 40), np.uint8), tiny_image(40, 40, seed=9)]
    options = FAST.replace(
        init="content_matched",
        content_weight=0.0,
        style_weight=0.0,
        tv_weight=0.0,
        max_evaluations=1,
        style_blend_weights=(3.0, 1.0),
    )
    result = stylizer.stylize(content, styles, options)
    base = images.resize_to(content, 24, 32)
    expected = colors.match_colors(base, styles, [0.75, 0.25])
    np.testing.assert_allclose(result.image.astype(int), expected.astype(int), atol=1)
    assert np.abs(result.image.astype(int) - base.astype(int)).mean() > 20


def test_cancellation_is_checked_between_style_images(stylizer: Stylizer) -> None:
    calls: list[int] = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 3  # content, first style, then stop before the second style

    styles = [tiny_image(32, 32, seed=s) for s in range(4)]
    before = stylizer.evaluations_total
    with TargetSpy(stylizer, FAST) as spy, pytest.raises(Cancelled):
        stylizer.stylize(tiny_image(32, 32), styles, FAST, should_stop=should_stop)
    assert len(spy.shapes) == 2  # the content and one style image went through VGG16
    assert stylizer.evaluations_total == before


def test_an_output_under_16_px_is_invalid_options_naming_size(stylizer: Stylizer) -> None:
    with pytest.raises(InvalidOptions) as err:
        stylizer.stylize(tiny_image(2, 300), [tiny_image(32, 32)], FAST)
    assert err.value.field == "size"
    with pytest.raises(InvalidOptions, match="size"):
        stylizer.evaluate(tiny_image(300, 8), [tiny_image(32, 32)], tiny_image(8, 8), FAST)


def test_an_elongated_output_gets_fewer_scales_not_an_error(stylizer: Stylizer) -> None:
    options = StyleOptions(size=128, scales=3, max_evaluations=4, seed=0)
    with TargetSpy(stylizer, options) as spy:
        result = stylizer.stylize(tiny_image(20, 128), [tiny_image(32, 32)], options)
    assert result.image.shape == (20, 128, 3)
    assert result.evaluations == 4
    # Halving 20 px would leave VGG16 under 16 px: the pyramid keeps the full size only.
    assert [shape[1:3] for shape in spy.shapes[0::2]] == [(20, 128)]
