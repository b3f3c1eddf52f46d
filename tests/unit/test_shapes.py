"""ShapePlanner: the long tail of shapes runs padded onto shared shapes, the few in steady use
run exact, and both sets stay bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from styletx.engine import Stylizer
from styletx.options import StyleOptions
from styletx.shapes import PROMOTE_AFTER, ShapePlanner
from tests.support.weights import tiny_image


def test_a_new_shape_runs_padded_and_one_in_use_runs_exact() -> None:
    planner = ShapePlanner(16)
    assert planner.shape(173, 260) == (176, 260)
    planner.count(173, 260)
    assert planner.shape(173, 260) == (176, 260)  # one job is not steady use
    planner.count(173, 260)
    assert PROMOTE_AFTER == 2 and planner.shape(173, 260) == (173, 260)
    assert planner.hot() == [(173, 260)]
    # Other shapes of the same bucket still share the padded one.
    assert planner.shape(170, 260) == (176, 260)


def test_shapes_that_need_no_padding_are_never_held_as_hot() -> None:
    planner = ShapePlanner(16)
    for _ in range(3):
        planner.count(260, 260)
        planner.count(160, 260)
    assert planner.hot() == []
    assert planner.shape(260, 260) == (260, 260) and planner.shape(160, 260) == (160, 260)


def test_at_most_hot_shapes_run_exact_least_recently_used_out_first() -> None:
    planner = ShapePlanner(16, hot=2)
    for short in (101, 103, 105):
        planner.count(short, 200)
        planner.count(short, 200)
    assert planner.hot() == [(103, 200), (105, 200)]
    assert planner.shape(101, 200) == (112, 200)  # demoted: padded again
    planner.shape(103, 200)  # running refreshes it
    planner.count(107, 200)
    planner.count(107, 200)
    assert planner.hot() == [(103, 200), (107, 200)]


def test_counts_are_kept_for_at_most_tracked_shapes() -> None:
    planner = ShapePlanner(16, tracked=2)
    planner.count(101, 200)
    planner.count(103, 200)
    planner.count(105, 200)  # forgets 101's first job
    planner.count(101, 200)
    assert planner.shape(101, 200) == (112, 200)


def test_step_one_runs_every_shape_exact() -> None:
    planner = ShapePlanner(1)
    assert planner.shape(173, 260) == (173, 260)
    planner.count(173, 260)
    planner.count(173, 260)
    assert planner.hot() == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ShapePlanner(16, hot=0)


def test_the_second_job_at_a_shape_runs_it_exact(seeded_weights: Path) -> None:
    stylizer = Stylizer(seeded_weights, shape_step=16)
    options = StyleOptions(size=50, max_evaluations=3, seed=0)
    content, style = tiny_image(37, 50, seed=1), tiny_image(32, 32, seed=2)
    step = stylizer.step(options)
    first = stylizer.stylize(content, [style], options)
    assert step.run_shape(37, 50) == (48, 50)
    second = stylizer.stylize(content, [style], options)
    assert step.run_shape(37, 50) == (37, 50) and (37, 50) in step.shapes.hot()
    # Exact either way: the same picture.
    assert second.losses.total == pytest.approx(first.losses.total, rel=1e-4)
