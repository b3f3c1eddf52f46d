"""pixel_bounds: L-BFGS-B keeps every optimised pixel inside 0..255 (the presets rely on it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from styletx import cli, vgg
from styletx.engine import Stylizer
from styletx.optimize import Vector, minimize
from styletx.options import StyleOptions
from styletx.presets import preset_values
from tests.support.weights import tiny_image

FAST = StyleOptions(size=32, max_evaluations=8, seed=0)


@pytest.fixture(scope="module")
def stylizer(seeded_weights: Path) -> Stylizer:
    return Stylizer(seeded_weights)


def _seen_pixels(stylizer: Stylizer, options: StyleOptions) -> list[np.ndarray]:
    """Every image (RGB, float, 0..255 when in range) VGG16 was shown during the job."""
    step = stylizer.step(options)
    seen: list[np.ndarray] = []
    real = step.loss_and_grad

    def spy(batch: np.ndarray, targets: Any) -> Any:
        seen.append((np.asarray(batch[0]) + vgg.BGR_MEAN)[..., ::-1])
        return real(batch, targets)

    step.loss_and_grad = spy  # type: ignore[method-assign]
    try:
        stylizer.stylize(tiny_image(32, 32, seed=31), [tiny_image(32, 32, seed=32)], options)
    finally:
        del step.loss_and_grad
    return seen


@pytest.mark.parametrize("colors", ["off", "swap", "luminance"])
def test_bounded_jobs_only_ever_evaluate_pixels_in_range(stylizer: Stylizer, colors: str) -> None:
    options = FAST.replace(pixel_bounds=True, preserve_colors=colors)
    seen = _seen_pixels(stylizer, options)
    assert len(seen) == options.max_evaluations
    assert min(float(x.min()) for x in seen) >= -1e-3
    assert max(float(x.max()) for x in seen) <= 255 + 1e-3


def test_unbounded_jobs_stray_outside_the_range_as_the_reference_does(stylizer: Stylizer) -> None:
    seen = _seen_pixels(stylizer, FAST)
    # The tutorial's random init alone reaches below 0 in the blue channel (mean 103.9 - 128).
    assert min(float(x.min()) for x in seen) < -1.0


def test_bounds_apply_at_every_scale(stylizer: Stylizer) -> None:
    options = FAST.replace(size=64, scales=2, max_evaluations=8, pixel_bounds=True)
    seen = _seen_pixels(stylizer, options)
    assert {x.shape[:2] for x in seen} == {(32, 32), (64, 64)}
    assert all(float(x.min()) >= -1e-3 and float(x.max()) <= 255 + 1e-3 for x in seen)


def test_minimize_projects_the_start_and_stops_on_the_bound() -> None:
    # min (x - 5)^2 over [-1, 2]: the answer is the upper bound; x0 = 10 starts outside.
    def parabola(x: Vector) -> tuple[tuple[float, ...], Vector]:
        return (float(np.sum((x - 5.0) ** 2)),), 2.0 * (x - 5.0)

    points: list[Vector] = []

    def traced(x: Vector) -> tuple[tuple[float, ...], Vector]:
        points.append(x.copy())
        return parabola(x)

    lower, upper = np.full(4, -1.0), np.full(4, 2.0)
    found = minimize(traced, np.full(4, 10.0), max_evaluations=20, bounds=(lower, upper))
    np.testing.assert_allclose(found.x, upper)
    assert all(((p >= lower) & (p <= upper)).all() for p in points)
    assert found.evaluations <= 20
    unbounded = minimize(parabola, np.full(4, 10.0), max_evaluations=20)
    np.testing.assert_allclose(unbounded.x, np.full(4, 5.0), atol=1e-6)


def test_the_quality_presets_bound_pixels_and_the_reference_does_not() -> None:
    assert preset_values("fast")["pixel_bounds"] is True
    assert preset_values("high")["pixel_bounds"] is True
    assert StyleOptions.from_preset("reference").pixel_bounds is False
    assert StyleOptions.from_preset("fast", pixel_bounds=False).pixel_bounds is False


def test_options_refuse_a_non_bool() -> None:
    from styletx.errors import InvalidOptions

    with pytest.raises(InvalidOptions, match="pixel_bounds"):
        StyleOptions(pixel_bounds=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "expected"), [([], None), (["--pixel-bounds"], True), (["--no-pixel-bounds"], False)]
)
def test_engine_cli_flag_is_a_switch(flags: list[str], expected: bool | None) -> None:
    args = cli.build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", *flags])
    assert args.pixel_bounds is expected
    options = cli._options_from(args)
    assert options.pixel_bounds is (expected if expected is not None else False)


def test_a_bounded_jobs_first_trial_moves_the_pixels_by_the_first_step(stylizer: Stylizer) -> None:
    from styletx.scales import FIRST_STEP

    # From mid-grey noise the first trial stays inside the box: its move is exactly FIRST_STEP.
    options = FAST.replace(pixel_bounds=True, init="random", max_evaluations=2)
    seen = _seen_pixels(stylizer, options)
    move = float(np.sqrt(np.mean(np.square(seen[1] - seen[0]))))
    clipped = float(np.mean((seen[1] <= 1e-3) | (seen[1] >= 255 - 1e-3)))
    assert clipped < 0.05  # (L-BFGS-B's own first trial, x - g, puts nearly all on a bound)
    assert move == pytest.approx(FIRST_STEP, rel=0.05)
    # Unbounded (the reference's way): scipy's own first step, of unit length in all.
    unbounded = _seen_pixels(stylizer, FAST.replace(max_evaluations=2))
    total = float(np.sqrt(np.sum(np.square(unbounded[1] - unbounded[0]))))
    assert total == pytest.approx(1.0, rel=1e-3)
