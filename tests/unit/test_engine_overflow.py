"""Overflowing numbers: every weight either runs with finite losses or is refused naming its
option; a loss that still turns non-finite stops the job with `NonFiniteLoss`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from styletx.engine import Stylizer
from styletx.errors import InvalidOptions, NonFiniteLoss
from styletx.options import MAX_LOSS_WEIGHT, MAX_TV_POWER, StyleOptions
from tests.support.weights import tiny_image

FAST = StyleOptions(size=32, max_evaluations=3, seed=0)
CONTENT, STYLE = tiny_image(32, 40, seed=1), tiny_image(32, 32, seed=2)


@pytest.fixture(scope="module")
def stylizer(seeded_weights: Path) -> Stylizer:
    return Stylizer(seeded_weights)


def _finite(result: Any) -> bool:
    losses = result.losses
    return all(math.isfinite(v) for v in (losses.total, losses.content, losses.style, losses.tv))


@pytest.mark.parametrize("field", ["content_weight", "style_weight", "tv_weight"])
@pytest.mark.parametrize("value", [1e13, 1e308, math.inf, math.nan, -1.0])
def test_loss_weights_out_of_range_name_the_field_and_the_range(field: str, value: float) -> None:
    with pytest.raises(InvalidOptions) as caught:
        StyleOptions(**{field: value})
    assert caught.value.field == field
    assert f"between 0 and {MAX_LOSS_WEIGHT:g}" in caught.value.message


@pytest.mark.parametrize("value", [-1.0, 0.5, 4.5, 1e308, math.nan])
def test_tv_power_names_its_real_range(value: float) -> None:
    with pytest.raises(InvalidOptions) as caught:
        StyleOptions(tv_power=value)
    assert caught.value.field == "tv_power"
    assert f"must be between 1 and {MAX_TV_POWER:g}" in caught.value.message


@pytest.mark.parametrize(
    "changes",
    [
        {"content_weight": MAX_LOSS_WEIGHT},
        {"style_weight": MAX_LOSS_WEIGHT},
        {"tv_weight": MAX_LOSS_WEIGHT, "tv_power": MAX_TV_POWER},
        {
            "content_weight": MAX_LOSS_WEIGHT,
            "style_weight": MAX_LOSS_WEIGHT,
            "tv_weight": MAX_LOSS_WEIGHT,
            "tv_power": MAX_TV_POWER,
        },
        {"content_weight": 5e-324, "style_weight": 5e-324, "tv_weight": 5e-324},
    ],
    ids=["content", "style", "tv", "all_at_max", "subnormal"],
)
def test_the_largest_allowed_weights_run_with_finite_losses(
    stylizer: Stylizer, changes: dict[str, float]
) -> None:
    result = stylizer.stylize(CONTENT, [STYLE], FAST.replace(**changes))
    assert result.evaluations == FAST.max_evaluations
    assert _finite(result)


@pytest.mark.parametrize(
    "weights", [(1e308, 1e308), (1e308, 0.0), (5e-324, 1e308), (1.7976931348623157e308,) * 3]
)
def test_any_finite_blend_weights_blend_without_overflow(
    stylizer: Stylizer, weights: tuple[float, ...]
) -> None:
    styles = [tiny_image(32, 32, seed=2 + i) for i in range(len(weights))]
    result = stylizer.stylize(CONTENT, styles, FAST.replace(style_blend_weights=weights))
    assert _finite(result)
    # Only the ratios matter: 1e308 : 1e308 blends like 1 : 1.
    ratios = tuple(w / max(weights) for w in weights)
    same = stylizer.stylize(CONTENT, styles, FAST.replace(style_blend_weights=ratios))
    assert np.array_equal(result.image, same.image)


@pytest.mark.parametrize(
    ("field", "value", "term"),
    [
        ("tv_weight", 1e300, "tv"),
        ("style_weight", 1e300, "style"),
        ("content_weight", 1e300, "content"),
    ],
)
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_loss_that_turns_non_finite_stops_the_job_naming_its_weight(
    stylizer: Stylizer, field: str, value: float, term: str
) -> None:
    # No value in range overflows these tiny images, so one is forced past validation, as a
    # wider limit (or a larger image) would let one through.
    options = FAST.replace(init="content")
    object.__setattr__(options, field, value)
    with pytest.raises(NonFiniteLoss) as caught:
        stylizer.stylize(CONTENT, [STYLE], options)
    assert caught.value.field == field
    assert caught.value.evaluation == 1
    assert f"the {term} loss became" in caught.value.message
    assert f"lower {field}" in caught.value.message
