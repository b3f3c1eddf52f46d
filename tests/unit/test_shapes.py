"""ShapePlanner: every image runs at the shape its size and the step give, whatever ran before,
so the long tail of aspect ratios shares a few shapes and a request always gets the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from styletx.engine import Stylizer
from styletx.options import StyleOptions
from styletx.shapes import ShapePlanner
from tests.support.weights import tiny_image


def test_a_shape_runs_padded_every_time() -> None:
    planner = ShapePlanner(16)
    assert [planner.shape(173, 260) for _ in range(5)] == [(176, 260)] * 5
    # Other shapes of the same bucket share the padded one.
    assert planner.shape(170, 260) == (176, 260)
    assert planner.shape(260, 170) == (260, 176)


def test_shapes_that_need_no_padding_run_as_they_are() -> None:
    planner = ShapePlanner(16)
    assert planner.shape(260, 260) == (260, 260) and planner.shape(160, 260) == (160, 260)


def test_step_one_pads_nothing() -> None:
    planner = ShapePlanner(1)
    assert planner.shape(173, 260) == (173, 260)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ShapePlanner(0)


def test_later_jobs_at_a_shape_still_run_it_padded(seeded_weights: Path) -> None:
    stylizer = Stylizer(seeded_weights, shape_step=16)
    options = StyleOptions(size=50, max_evaluations=3, seed=0)
    content, style = tiny_image(37, 50, seed=1), tiny_image(32, 32, seed=2)
    step = stylizer.step(options)
    first = stylizer.stylize(content, [style], options)
    second = stylizer.stylize(content, [style], options)
    assert step.run_shape(37, 50) == (48, 50)
    assert (second.image == first.image).all()
    assert second.losses == first.losses
