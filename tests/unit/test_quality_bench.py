"""bench/quality_bench.py's scoring logic on synthetic curves (no VGG16, no timing)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from bench.quality_bench import (
    Iterate,
    Trace,
    crossing,
    first_crossing,
    full_equivalent,
    parse_method,
)


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
