"""The L-BFGS driver on analytic objectives: exact budget, best point, restarts, cancellation."""

from __future__ import annotations

import numpy as np
import pytest

from styletx.errors import Cancelled
from styletx.optimize import Vector, minimize


def rosenbrock(x: Vector) -> tuple[tuple[float, ...], Vector]:
    a, b = x[:-1], x[1:]
    value = float(np.sum(100.0 * (b - a**2) ** 2 + (1 - a) ** 2))
    grad = np.zeros_like(x)
    grad[:-1] += -400.0 * a * (b - a**2) - 2 * (1 - a)
    grad[1:] += 200.0 * (b - a**2)
    return (value, value, 0.0, 0.0), grad


X0 = np.full(6, -1.2)


@pytest.mark.parametrize("budget", [1, 7, 50])
def test_stops_exactly_at_the_evaluation_budget(budget: int) -> None:
    calls = []

    def counted(x: Vector) -> tuple[tuple[float, ...], Vector]:
        calls.append(1)
        return rosenbrock(x)

    found = minimize(counted, X0, max_evaluations=budget)
    assert found.evaluations == budget == len(calls)


def test_tolerances_are_off_and_loss_decreases() -> None:
    start = rosenbrock(X0)[0][0]
    found = minimize(rosenbrock, X0, max_evaluations=200)
    # scipy's default factr would stop long before; with tolerances off it reaches the optimum.
    assert found.terms[0] < 1e-6 < start
    np.testing.assert_allclose(found.x, np.ones(6), atol=1e-3)


def test_returns_the_best_point_evaluated() -> None:
    seen: list[float] = []

    def tracked(x: Vector) -> tuple[tuple[float, ...], Vector]:
        terms, grad = rosenbrock(x)
        seen.append(terms[0])
        return terms, grad

    found = minimize(tracked, X0, max_evaluations=30)
    assert found.terms[0] == min(seen)
    assert rosenbrock(found.x)[0][0] == pytest.approx(min(seen))


def test_restart_schedule_uses_whole_budget_and_is_worse_than_one_run() -> None:
    one = minimize(rosenbrock, X0, max_evaluations=60)
    restarted = minimize(rosenbrock, X0, max_evaluations=60, restart_every=6)
    assert restarted.evaluations == 60
    assert one.terms[0] < restarted.terms[0]


def test_progress_reported_each_iteration_with_counters() -> None:
    events: list[tuple[int, int, float]] = []
    minimize(
        rosenbrock,
        X0,
        max_evaluations=40,
        on_iteration=lambda it, ev, x, terms: events.append((it, ev, terms[0])),
        iteration_offset=10,
    )
    assert [e[0] for e in events] == list(range(11, 11 + len(events)))
    evals = [e[1] for e in events]
    assert evals == sorted(evals) and evals[-1] <= 40
    assert events[-1][2] < events[0][2]


def test_should_stop_cancels_within_one_evaluation() -> None:
    calls = []

    def counted(x: Vector) -> tuple[tuple[float, ...], Vector]:
        calls.append(1)
        return rosenbrock(x)

    with pytest.raises(Cancelled):
        minimize(counted, X0, max_evaluations=100, should_stop=lambda: len(calls) >= 5)
    assert len(calls) == 5


def test_restarts_with_rescaled_loss_when_scipy_gives_up_early() -> None:
    # A huge, badly scaled quadratic: scipy's line search fails long before the budget.
    scale = np.array([1e12, 1.0, 1e-6])

    def quad(x: Vector) -> tuple[tuple[float, ...], Vector]:
        value = float(np.sum(scale * (x - 3.0) ** 2)) + 1e15
        return (value, value, 0.0, 0.0), 2 * scale * (x - 3.0)

    found = minimize(quad, np.zeros(3), max_evaluations=80)
    assert found.evaluations == 80
