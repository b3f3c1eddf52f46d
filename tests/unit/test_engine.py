"""The Stylizer on a seeded random VGG16 and tiny images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from styletx import colors, vgg
from styletx.engine import Stylizer
from styletx.errors import Cancelled, InvalidImage, InvalidOptions
from styletx.objective import make_objective
from styletx.options import StyleOptions
from styletx.result import Progress
from styletx.space import Space
from styletx.targets import style_targets
from tests.support.weights import tiny_image

FAST = StyleOptions(size=32, max_evaluations=12, seed=0)


@pytest.fixture(scope="module")
def stylizer(seeded_weights: Path) -> Stylizer:
    return Stylizer(seeded_weights)


def test_output_keeps_the_aspect_ratio(stylizer: Stylizer) -> None:
    landscape = stylizer.stylize(tiny_image(48, 64), [tiny_image(40, 40)], FAST)
    portrait = stylizer.stylize(tiny_image(64, 32), [tiny_image(40, 40)], FAST)
    assert landscape.image.shape == (24, 32, 3)
    assert portrait.image.shape == (32, 16, 3)
    assert landscape.image.dtype == np.uint8


def test_exact_budget_and_loss_decreases(stylizer: Stylizer) -> None:
    events: list[Progress] = []
    result = stylizer.stylize(
        tiny_image(32, 32),
        [tiny_image(32, 32, seed=5)],
        FAST.replace(max_evaluations=25),
        on_progress=events.append,
    )
    assert result.evaluations == 25
    assert result.iterations == len(events) > 3
    assert [e.iteration for e in events] == list(range(1, len(events) + 1))
    assert events[-1].losses.total < events[0].losses.total
    assert result.losses.total <= events[-1].losses.total
    parts = result.losses
    assert parts.total == pytest.approx(parts.content + parts.style + parts.tv, rel=1e-5)


def test_result_losses_match_an_evaluation_of_the_returned_image(stylizer: Stylizer) -> None:
    content, style = tiny_image(32, 32), tiny_image(32, 32, seed=9)
    result = stylizer.stylize(content, [style], FAST)
    again = stylizer.evaluate(content, [style], result.image, FAST)
    # The result is rounded to uint8, so its loss differs slightly from the float optimum.
    assert again.total == pytest.approx(result.losses.total, rel=0.05)


def test_same_seed_same_bytes_other_seed_differs(stylizer: Stylizer) -> None:
    content, style = tiny_image(32, 40), tiny_image(32, 32, seed=3)
    a = stylizer.stylize(content, [style], FAST.replace(seed=42)).image
    b = stylizer.stylize(content, [style], FAST.replace(seed=42)).image
    c = stylizer.stylize(content, [style], FAST.replace(seed=43)).image
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_cancellation_within_one_evaluation(stylizer: Stylizer) -> None:
    before = stylizer.evaluations_total
    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(stylizer.evaluations_total - before)
        return stylizer.evaluations_total - before >= 3

    with pytest.raises(Cancelled):
        stylizer.stylize(tiny_image(32, 32), [tiny_image(32, 32)], FAST, should_stop=should_stop)
    assert stylizer.evaluations_total - before == 3
    # Checked before every evaluation, not only between iterations (and, before the first,
    # while the targets are computed: tests/unit/test_engine_maths.py).
    assert asked[-4:] == [0, 1, 2, 3]


def test_previews_at_the_requested_cadence(stylizer: Stylizer) -> None:
    events: list[Progress] = []
    stylizer.stylize(
        tiny_image(32, 32),
        [tiny_image(32, 32)],
        FAST.replace(preview_every=2),
        on_progress=events.append,
    )
    for e in events:
        if e.iteration % 2 == 0:
            assert e.preview is not None and e.preview.shape == (32, 32, 3)
        else:
            assert e.preview is None


def test_content_init_without_style_or_tv_starts_at_zero_loss(stylizer: Stylizer) -> None:
    content = tiny_image(32, 32)
    options = FAST.replace(init="content", style_weight=0.0, tv_weight=0.0, max_evaluations=3)
    events: list[Progress] = []
    result = stylizer.stylize(content, [tiny_image(32, 32, 4)], options, on_progress=events.append)
    assert result.losses.total == pytest.approx(0.0, abs=1e-3)
    np.testing.assert_allclose(result.image.astype(int), content.astype(int), atol=1)


def test_restart_schedule_and_multiscale_use_the_whole_budget(stylizer: Stylizer) -> None:
    restarted = stylizer.stylize(
        tiny_image(32, 32), [tiny_image(32, 32)], FAST.replace(max_evaluations=20, restart_every=5)
    )
    assert restarted.evaluations == 20
    scales: list[int] = []
    multi = stylizer.stylize(
        tiny_image(48, 64),
        [tiny_image(32, 32)],
        FAST.replace(size=64, scales=2, max_evaluations=16),
        on_progress=lambda p: scales.append(p.scale),
    )
    assert multi.evaluations == 16
    assert multi.image.shape == (48, 64, 3)
    assert scales[0] == 0 and scales[-1] == 1


def test_style_blend_weights_change_the_result(stylizer: Stylizer) -> None:
    content = tiny_image(32, 32)
    s1, s2 = tiny_image(32, 32, seed=11), tiny_image(32, 32, seed=12)
    only_first = stylizer.evaluate(content, [s1, s2], s1, FAST.replace(style_blend_weights=(1, 0)))
    only_second = stylizer.evaluate(content, [s1, s2], s1, FAST.replace(style_blend_weights=(0, 1)))
    # s1 matches its own Gram matrices perfectly; against s2's they differ.
    assert only_first.style < 1e-3 * only_second.style
    with pytest.raises(InvalidOptions, match="style_blend_weights"):
        stylizer.stylize(content, [s1], FAST.replace(style_blend_weights=(1.0, 2.0)))


def test_preserve_colors_keeps_the_content_chroma(stylizer: Stylizer) -> None:
    content = tiny_image(32, 32, seed=21)
    result = stylizer.stylize(
        content, [tiny_image(32, 32, seed=22)], FAST.replace(preserve_colors="swap")
    )
    out_iq = colors.rgb_to_yiq(result.image.astype(np.float32))[..., 1:]
    content_iq = colors.rgb_to_yiq(content.astype(np.float32))[..., 1:]
    # Only clipping to 0..255 can move the chroma.
    assert np.mean(np.abs(out_iq - content_iq)) < 3.0


def test_rejects_bad_arrays_and_missing_styles(stylizer: Stylizer) -> None:
    with pytest.raises(InvalidOptions, match="style"):
        stylizer.stylize(tiny_image(32, 32), [], FAST)
    with pytest.raises(InvalidImage):
        stylizer.stylize(np.zeros((32, 32), np.uint8), [tiny_image(32, 32)], FAST)
    with pytest.raises(InvalidImage):
        stylizer.stylize(tiny_image(32, 32), [np.zeros((32, 32, 3), np.float32)], FAST)


@pytest.mark.parametrize(
    ("options", "rel"),
    [
        # TV alone is smooth: tight agreement.
        (StyleOptions(size=16, content_weight=0.0, style_weight=0.0), 2e-3),
        # Shallow layers: few ReLU kinks, float32 loss of order 1e9.
        (
            StyleOptions(
                size=16, content_layer="block1_conv2", style_layers=("block1_conv1", "block1_conv2")
            ),
            2e-2,
        ),
        # The full default objective through max-pools and 13 ReLU layers of a random network is
        # only piecewise smooth; still catches a wrong sign, factor or missing term.
        (StyleOptions(size=16), 0.1),
    ],
)
def test_gradient_matches_finite_differences(
    stylizer: Stylizer, options: StyleOptions, rel: float
) -> None:
    """Directional derivative of the objective along a random direction, central differences."""
    content, style = tiny_image(16, 16), tiny_image(16, 16, seed=8)
    step = stylizer.step(options)
    targets = style_targets(step, content, [style], [1.0], options)
    objective = make_objective(step, targets, Space(16, 16, grey=False))
    rng = np.random.default_rng(0)
    x = vgg.preprocess(content).ravel().astype(np.float64) + rng.normal(0, 20, 16 * 16 * 3)
    direction = rng.normal(0, 1, x.size)
    direction /= np.linalg.norm(direction)
    _, grad = objective(x)
    eps = 2.0  # float32 features: a smaller step drowns in their rounding
    numeric = (objective(x + eps * direction)[0][0] - objective(x - eps * direction)[0][0]) / (
        2 * eps
    )
    assert float(grad @ direction) == pytest.approx(numeric, rel=rel)


def test_progress_reports_the_duration_of_every_evaluation(stylizer: Stylizer) -> None:
    events: list[Progress] = []
    result = stylizer.stylize(
        tiny_image(32, 32, seed=1),
        [tiny_image(32, 32, seed=2)],
        FAST.replace(max_evaluations=6),
        on_progress=events.append,
    )
    timed = [s for p in events for s in p.evaluation_seconds]
    # Evaluations after the last accepted iteration have no progress event to ride on.
    assert 0 < len(timed) <= result.evaluations
    assert all(s > 0 for s in timed)
