"""The in-flight pixel budget: reservations fit or are refused, and are given back once."""

from __future__ import annotations

import pytest

from styletx_server.errors.refusals import OverBudget
from styletx_server.scheduling.budget import PixelBudget


def test_reservations_fit_until_the_limit_and_are_given_back_once() -> None:
    seen: list[int] = []
    budget = PixelBudget(100, seen.append)
    first = budget.reserve(60)
    second = budget.reserve(40)
    with pytest.raises(OverBudget) as caught:
        budget.reserve(1)
    assert (caught.value.wanted, caught.value.available, caught.value.limit) == (1, 0, 100)
    first.release()
    first.release()  # idempotent
    assert budget.used == 40
    second.release()
    assert budget.used == 0
    assert seen == [60, 100, 40, 0]


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError):
        PixelBudget(0)
    with pytest.raises(ValueError):
        PixelBudget(10).reserve(-1)
