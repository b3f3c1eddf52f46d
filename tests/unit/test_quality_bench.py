"""bench/quality_bench.py's scoring logic on synthetic curves (no VGG16, no timing), its method
and target specs, the engine constants it varies, and one tiny run with seeded weights."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench.quality.runs import PAIRS, knobs, load_inputs, run_engine
from bench.quality.scoring import (
    Iterate,
    Trace,
    crossing,
    first_crossing,
    full_equivalent,
    iterate_at,
    parse_method,
    parse_target,
    split_knobs,
)
from styletx.options import StyleOptions


def _counting(curve: list[float]) -> tuple[list[int], Callable[[int], float]]:
    calls: list[int] = []

    def score(index: int) -> float:
        calls.append(index)
        return curve[index]

    return calls, score


@pytest.mark.parametrize("first", [0, 1, 17, 98, 99])
@pytest.mark.parametrize("stride", [1, 7, 200])
def test_first_crossing_finds_the_first_iterate_at_or_under_the_target(
    first: int, stride: int
) -> None:
    # A decreasing loss curve; the target equals the value at `first`, so `<=` must count it.
    curve = [1e10 * math.exp(-i / 30) for i in range(100)]
    _, score = _counting(curve)
    assert first_crossing(len(curve), curve[first], score, stride) == first


def test_first_crossing_finds_an_early_dip_of_a_curve_that_is_not_monotone() -> None:
    # Rounding and clipping the delivered image make the scored curve wiggle: the first dip
    # under the target counts, even though the curve goes back above it afterwards.
    curve = [9.0, 8.0, 6.9, 7.2, 7.1, 7.05, 6.5, 6.0, 5.0]
    _, score = _counting(curve)
    assert first_crossing(len(curve), 7.0, score) == 2


def test_a_stride_scores_fewer_iterates_and_refines_backwards() -> None:
    curve = [100.0 - i for i in range(100)]
    calls, score = _counting(curve)
    assert first_crossing(len(curve), 100.0 - 45, score, stride=10) == 45
    # The grid 0, 10, ..., 50, then 41..45 to find the first: not one score per iterate.
    assert sorted(set(calls)) == [0, 10, 20, 30, 40, 41, 42, 43, 44, 45, 50]
    with pytest.raises(ValueError, match="stride"):
        first_crossing(3, 1.0, score, stride=0)


def test_first_crossing_is_none_when_the_target_is_never_reached() -> None:
    curve = [5.0, 4.0, 3.0]
    calls, score = _counting(curve)
    assert first_crossing(3, 2.9, score, stride=5) is None
    assert calls == [0, 2]  # the grid (first and last) only
    assert first_crossing(3, 2.9, score) is None
    assert first_crossing(0, 1.0, lambda i: 0.0) is None


def test_first_crossing_of_a_flat_curve_is_its_first_iterate() -> None:
    assert first_crossing(8, 1.0, lambda i: 1.0) == 0


def test_full_equivalent_charges_coarse_evaluations_by_their_pixels() -> None:
    full = (100, 60)
    half = (50, 30)
    steps = [(4, half), (10, half), (12, full), (20, full)]
    # 10 evaluations at a quarter of the pixels cost 2.5 full-size ones; then 10 at full size.
    assert full_equivalent(steps, full) == pytest.approx([1.0, 2.5, 4.5, 12.5])
    assert full_equivalent([(3, full), (7, full)], full) == [3.0, 7.0]


def _trace(losses: list[float], sizes: list[tuple[int, int]]) -> Trace:
    """Iterates whose 1-pixel 'image' carries its loss, so the score can read it back."""
    iterates = [
        Iterate(
            seconds=0.5 * (i + 1),
            evaluations=2 * (i + 1),
            full_equivalent=float(i),
            image=np.full((1, 1, 1), loss),
            full_size=size == sizes[-1],
        )
        for i, (loss, size) in enumerate(zip(losses, sizes, strict=True))
    ]
    return Trace("synthetic", iterates, 10.0, 20, 9.0, iterates[-1].image)


def test_crossing_counts_only_full_size_iterates() -> None:
    # A coarse scale's iterates score low (a small image's loss is not the output's) but must
    # not count: only the full-size iterate at 8.0 reaches the target.
    coarse, fine = (2, 2), (4, 4)
    trace = _trace([3.0, 1.0, 9.0, 8.0, 7.0], [coarse, coarse, fine, fine, fine])
    hit = crossing(trace, 8.0, lambda image: float(image.ravel()[0]))
    assert (hit.index, hit.seconds, hit.evaluations, hit.full_equivalent) == (1, 2.0, 8, 3.0)


def test_crossing_reports_never_reached() -> None:
    trace = _trace([9.0, 8.0], [(4, 4), (4, 4)])
    hit = crossing(trace, 1.0, lambda image: float(image.ravel()[0]))
    assert hit.seconds is None and hit.evaluations is None


def test_parse_method_types_values_after_style_options() -> None:
    preset, overrides = parse_method(
        "fast, scales=3,content_weight=0.05,seed=none,"
        "style_layers=block1_conv2+block3_conv3,init=random"
    )
    assert preset == "fast"
    assert overrides == {
        "scales": 3,
        "content_weight": 0.05,
        "seed": None,
        "style_layers": ("block1_conv2", "block3_conv3"),
        "init": "random",
    }
    assert parse_method("reference") == ("reference", {})


@pytest.mark.parametrize("spec", ["fast,bogus=1", "fast,scales"])
def test_parse_method_refuses_unknown_options(spec: str) -> None:
    with pytest.raises(ValueError, match="StyleOptions field"):
        parse_method(spec)


def test_split_knobs_takes_the_engine_constants_out_of_a_method_spec() -> None:
    assert split_knobs("fast,first_step=6,lbfgs_memory=5") == (
        "fast,lbfgs_memory=5",
        {"first_step": 6.0},
    )
    assert split_knobs("fast,first_step=none") == ("fast", {"first_step": None})
    assert split_knobs("fast,scales=2,coarse_evaluations=4") == (
        "fast,scales=2",
        {"coarse_evaluations": 4},
    )
    assert split_knobs("reference") == ("reference", {})
    for bad in ("fast,first_step=0", "fast,coarse_evaluations=0"):
        with pytest.raises(ValueError, match="must be"):
            split_knobs(bad)


def test_knobs_set_the_engines_first_step_and_budget_split_for_one_run_only() -> None:
    from styletx import scales

    first_step, split_budget = scales.FIRST_STEP, scales.split_budget
    with knobs({"first_step": None, "coarse_evaluations": 4}):
        assert scales.FIRST_STEP is None
        assert scales.split_budget(40, 2) == [4, 36]
        assert scales.split_budget(40, 3) == [4, 4, 32]
        assert scales.split_budget(40, 1) == [40]
        with pytest.raises(ValueError, match="coarse"):
            scales.split_budget(4, 2)
    assert (scales.FIRST_STEP, scales.split_budget) == (first_step, split_budget)
    with pytest.raises(RuntimeError), knobs({"first_step": 3.0}):
        assert scales.FIRST_STEP == 3.0
        raise RuntimeError
    assert first_step == scales.FIRST_STEP


def test_parse_target_names_the_tutorial_or_a_method_and_its_evaluations() -> None:
    methods = ["fast,first_step=none", "fast"]
    assert parse_target("tutorial", methods) is None
    assert parse_target("fast,first_step=none:14", methods) == ("fast,first_step=none", 14)
    for bad in ("fast:0", "fast", "high:14", "fast:x"):
        with pytest.raises(ValueError, match="--target"):
            parse_target(bad, methods)


def test_iterate_at_is_the_last_full_size_iterate_within_the_evaluations() -> None:
    trace = _trace([9.0, 8.0, 7.0, 6.0], [(4, 4)] * 4)  # 2, 4, 6, 8 evaluations
    assert iterate_at(trace, 5).evaluations == 4
    assert iterate_at(trace, 8).evaluations == 8
    with pytest.raises(ValueError, match="within"):
        iterate_at(trace, 1)


def test_the_quality_pairs_exist_and_load_square_or_at_the_contents_aspect() -> None:
    for content, style in PAIRS.values():
        assert content.is_file() and style.is_file()
    content, style = load_inputs("coffee_the_scream", 32)
    assert content.shape == style.shape == (32, 32, 3)
    content, style = load_inputs("chelsea_starry_night", 60, keep_aspect=True)
    assert max(content.shape[:2]) == 60 and content.shape[0] != content.shape[1]


def test_knobs_change_a_bounded_runs_first_step(seeded_weights: Path) -> None:
    # A bounded job's first trial step moves the pixels by FIRST_STEP levels RMS: a run with
    # another first step takes another path (and the bench's override reaches the engine).
    from styletx.engine import Stylizer

    stylizer = Stylizer(str(seeded_weights))
    content, style = load_inputs("chelsea_starry_night", 32)
    options = StyleOptions.from_preset("fast", size=32, max_evaluations=3, seed=0)
    runs = []
    for value in (8.0, None):
        with knobs({"first_step": value}):
            runs.append(run_engine(stylizer, content, style, "fast", options))
    assert all(run.evaluations == 3 and run.evaluation_seconds for run in runs)
    assert not np.array_equal(runs[0].final, runs[1].final)
