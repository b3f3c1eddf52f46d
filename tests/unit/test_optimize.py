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


# --- L-BFGS-B with array bounds (issue 20) -------------------------------------------------------


def _bounded_quartic(x: Vector) -> tuple[tuple[float, ...], Vector]:
    target = np.linspace(-4.0, 4.0, x.size)
    d = x - target
    value = float(np.sum(d**4 + 3 * d**2))
    return (value,), 4 * d**3 + 6 * d


def _scipy_points(lower: Vector, upper: Vector, x0: Vector, budget: int) -> list[Vector]:
    """Every point scipy's own fmin_l_bfgs_b (bounds as a list of pairs) evaluates."""
    from scipy.optimize import fmin_l_bfgs_b

    points: list[Vector] = []

    def func(x: Vector) -> tuple[float, Vector]:
        points.append(x.copy())
        terms, grad = _bounded_quartic(x)
        return terms[0], grad

    box = [
        (None if np.isinf(lo) else lo, None if np.isinf(hi) else hi)
        for lo, hi in zip(lower, upper, strict=True)
    ]
    fmin_l_bfgs_b(
        func, x0, m=10, maxfun=budget, maxiter=10 * budget + 10, factr=0.0, pgtol=0.0, bounds=box
    )
    return points


def test_array_bounds_give_scipys_iterates_bit_for_bit() -> None:
    # Mixed bound kinds: both sides, lower only, upper only, none; the start partly outside.
    n = 12
    lower = np.array([-1.0, -np.inf, 0.5, -np.inf] * 3)
    upper = np.array([1.0, 2.0, np.inf, np.inf] * 3)
    x0 = np.linspace(-3.0, 3.0, n)
    expected = _scipy_points(lower, upper, x0, 25)
    seen: list[Vector] = []

    def traced(x: Vector) -> tuple[tuple[float, ...], Vector]:
        seen.append(x.copy())
        return _bounded_quartic(x)

    minimize(traced, x0, max_evaluations=len(expected), bounds=(lower, upper))
    assert len(seen) == len(expected) > 5
    for ours, theirs in zip(seen, expected, strict=True):
        assert ours.tobytes() == theirs.tobytes()


def test_the_private_kernel_is_checked_and_scipys_loop_is_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from styletx import optimize

    assert optimize._kernel_ok()  # this scipy's kernel is the one the driver knows
    lower, upper = np.full(6, -1.0), np.full(6, 1.5)
    fast = minimize(_bounded_quartic, np.zeros(6), max_evaluations=15, bounds=(lower, upper))
    monkeypatch.setattr(optimize, "_kernel_ok", lambda: False)
    called: list[int] = []
    real = optimize.fmin_l_bfgs_b

    def spy(*args: object, **kwargs: object) -> object:
        called.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(optimize, "fmin_l_bfgs_b", spy)
    slow = minimize(_bounded_quartic, np.zeros(6), max_evaluations=15, bounds=(lower, upper))
    assert called and fast.x.tobytes() == slow.x.tobytes() and fast.terms == slow.terms


def test_a_failing_kernel_turns_the_driver_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy.optimize import _lbfgsb

    from styletx import optimize

    def other_signature(*args: object) -> None:
        raise TypeError("setulb() takes 18 arguments")

    optimize._kernel_ok.cache_clear()
    monkeypatch.setattr(_lbfgsb, "setulb", other_signature)
    try:
        assert optimize._kernel_ok() is False
    finally:
        optimize._kernel_ok.cache_clear()


def test_first_step_sets_the_rms_of_the_first_trial_move() -> None:
    # Huge loss, huge gradient: scipy's own first trial (x - g) would throw every x onto a bound.
    n = 400
    rng = np.random.default_rng(0)
    x0 = rng.uniform(50.0, 200.0, n)

    def huge(x: Vector) -> tuple[tuple[float, ...], Vector]:
        d = x - 128.0
        return (float(1e9 * np.sum(d**2)),), 2e9 * d

    def first_trial(first_step: float | None) -> Vector:
        seen: list[Vector] = []

        def traced(x: Vector) -> tuple[tuple[float, ...], Vector]:
            seen.append(x.copy())
            return huge(x)

        bounds = (np.zeros(n), np.full(n, 255.0))
        minimize(traced, x0, max_evaluations=2, bounds=bounds, first_step=first_step)
        return seen[1] - seen[0]

    for step in (2.0, 16.0):
        move = first_trial(step)
        assert np.sqrt(np.mean(move**2)) == pytest.approx(step, rel=1e-6)
    default = first_trial(None)
    # Without it: x - g, projected: every element lands on a bound.
    assert np.all(np.isin(x0 + default, [0.0, 255.0]))


def test_first_step_changes_only_the_first_iteration_and_is_validated() -> None:
    lower, upper = np.full(6, -2.0), np.full(6, 2.0)
    plain = minimize(rosenbrock, X0, max_evaluations=120, bounds=(lower, upper))
    stepped = minimize(rosenbrock, X0, max_evaluations=120, bounds=(lower, upper), first_step=0.1)
    # Both converge to the optimum; only the path's start differs.
    assert plain.terms[0] < 1e-6 and stepped.terms[0] < 1e-6
    # Without bounds it changes nothing (scipy's unbounded first step has unit length anyway).
    a = minimize(rosenbrock, X0, max_evaluations=30)
    b = minimize(rosenbrock, X0, max_evaluations=30, first_step=0.1)
    assert a.x.tobytes() == b.x.tobytes()
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="first_step"):
            minimize(rosenbrock, X0, max_evaluations=3, first_step=bad)
