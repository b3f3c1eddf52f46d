"""The L-BFGS driver: one scipy L-BFGS-B run under an exact evaluation budget.

Pure numpy/scipy (no TensorFlow) so it can be tested on analytic functions. Departures from the
reference tutorial, which ran 10 rounds of `maxfun=20` and threw L-BFGS' curvature history away
each round: one run by default (`restart_every=0`), early-stopping tolerances off, float64 at the
scipy boundary, and a restart with a rescaled objective if scipy gives up early (its line search
can fail on huge loss values with float32 gradients).

Two departures from `scipy.optimize.fmin_l_bfgs_b` itself, both for box-constrained jobs:

- `_lbfgsb` drives scipy's L-BFGS-B kernel (`setulb`, the routine `fmin_l_bfgs_b` loops over)
  with the bounds passed as arrays. `fmin_l_bfgs_b` converts them with two Python loops over
  every element, 0.4-0.7 s per 260 px job (bench/RESULTS.md); the iterates are the same, bit for
  bit (tests/unit/test_optimize.py). Where that kernel is not the one this code knows (another
  scipy), a self-check at first use falls back to `fmin_l_bfgs_b`.
- `first_step`: with every variable boxed, L-BFGS-B's first trial point is the projected
  steepest-descent step `x - g` (its first curvature guess is the identity), which for the
  tutorial's losses (~1e10) throws every pixel onto a bound; the line search then spends
  evaluations backtracking. Dividing the objective by `rms(g0) / first_step` makes that trial
  move the pixels by `first_step` (root mean square) instead. From the second iteration on
  L-BFGS is invariant to the objective's scale, so only the first step changes.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import fmin_l_bfgs_b

from styletx.errors import Cancelled

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float64]
#: Evaluates the objective at x: returns (loss terms, gradient); `terms[0]` is the total.
Objective = Callable[[Vector], tuple[tuple[float, ...], Vector]]
#: Called after each L-BFGS iteration with (iteration, evaluations, x, terms at x).
IterationCallback = Callable[[int, int, Vector, tuple[float, ...]], None]

# scipy's warnflag: 0 converged, 1 too many evaluations/iterations, 2 stopped for another reason.
_ABNORMAL = 2
# scipy's line-search limit per iteration (fmin_l_bfgs_b's default `maxls`).
_MAX_LINE_SEARCH = 20
# `setulb`'s task codes (scipy >= 1.15, the C kernel): evaluate f and g at x; a new iterate.
_TASK_FG, _TASK_NEW_X, _TASK_CONVERGED = 3, 1, 4
#: scipy's `nbd` code of a variable bounded on both sides.
_BOTH_BOUNDS = 2
ScipyFunction = Callable[[Vector], tuple[float, Vector]]


class _BudgetReached(Exception):
    """Raised inside the objective to stop scipy exactly at the evaluation budget."""


@dataclass
class OptimizeResult:
    """Best point found and its loss terms."""

    x: Vector
    terms: tuple[float, ...]
    iterations: int
    evaluations: int


@dataclass
class _State:
    evaluations: int = 0
    iterations: int = 0
    best_x: Vector | None = None
    best_terms: tuple[float, ...] = ()
    last_x: Vector | None = None
    last_terms: tuple[float, ...] = ()


def minimize(
    objective: Objective,
    x0: Vector,
    *,
    max_evaluations: int,
    restart_every: int = 0,
    memory: int = 10,
    should_stop: Callable[[], bool] | None = None,
    on_iteration: IterationCallback | None = None,
    iteration_offset: int = 0,
    bounds: tuple[Vector, Vector] | None = None,
    first_step: float | None = None,
) -> OptimizeResult:
    """Minimise `objective` from `x0` with at most `max_evaluations` evaluations.

    `should_stop` is polled before every evaluation and raises `Cancelled`. The returned point is
    the best one evaluated (lowest total loss), so a budget that ends mid line-search loses nothing.
    `bounds` (lower, upper; one value per element of x) makes it L-BFGS-B's box-constrained
    problem: `x0` is projected into the box and every point evaluated stays inside it.
    `first_step` (bounded problems only): the root-mean-square change of x that the first
    iteration tries first (see the module's docstring); None: scipy's own (x - g, projected).
    """
    if first_step is not None and not (math.isfinite(first_step) and first_step > 0):
        raise ValueError(f"first_step must be a positive number, got {first_step}")
    box = None
    if bounds is not None:
        lower, upper = (np.broadcast_to(np.asarray(b, np.float64), np.shape(x0)) for b in bounds)
        box = (lower.ravel(), upper.ravel())
    state = _State()
    scale = 1.0
    segment_end = 0

    def func(x: Vector) -> tuple[float, Vector]:
        if should_stop is not None and should_stop():
            raise Cancelled("stylization cancelled")
        if state.evaluations >= max_evaluations or state.evaluations >= segment_end:
            raise _BudgetReached
        nonlocal scale
        terms, grad = objective(x)
        state.evaluations += 1
        state.last_x, state.last_terms = x.copy(), terms
        if state.best_x is None or terms[0] < state.best_terms[0]:
            state.best_x, state.best_terms = state.last_x, terms
        gradient = np.asarray(grad, dtype=np.float64)
        if state.evaluations == 1 and first_step is not None and box is not None:
            # Fixed before scipy sees a value, so the whole run sees one objective.
            scale = _first_step_scale(gradient, first_step)
        return terms[0] / scale, gradient / scale

    def callback(xk: Vector) -> None:
        state.iterations += 1
        # L-BFGS-B's accepted point is the last one its line search evaluated.
        terms = state.last_terms
        if state.last_x is not None and not np.array_equal(xk, state.last_x):
            terms = state.best_terms
        if on_iteration is not None:
            on_iteration(iteration_offset + state.iterations, state.evaluations, xk, terms)

    x = np.asarray(x0, dtype=np.float64).ravel().copy()
    while state.evaluations < max_evaluations:
        remaining = max_evaluations - state.evaluations
        segment = min(restart_every, remaining) if restart_every > 0 else remaining
        segment_end = state.evaluations + segment
        start_evaluations = state.evaluations
        try:
            x, info = _lbfgsb(
                func,
                x,
                memory=memory,
                maxfun=segment,
                maxiter=10 * segment + 10,
                callback=callback,
                bounds=box,
            )
        except _BudgetReached:
            if state.evaluations >= max_evaluations:
                break
            # A restart segment ended inside a line search: restart from the best point.
            assert state.best_x is not None
            x = state.best_x.copy()
            continue
        if restart_every > 0 and info["warnflag"] != _ABNORMAL:
            continue  # the reference schedule: start a fresh L-BFGS from scipy's returned x
        if state.evaluations >= max_evaluations or state.evaluations == start_evaluations:
            break
        # scipy stopped before the budget (converged or line-search failure): restart from the
        # best point with the loss rescaled to order 1, which keeps the line search well-posed.
        assert state.best_x is not None
        x = state.best_x.copy()
        scale = max(abs(state.best_terms[0]), 1e-12)
        log.debug(
            "lbfgs restarted",
            extra={"reason": _reason(info), "evaluations": state.evaluations, "scale": scale},
        )
    if state.best_x is None:
        raise RuntimeError("L-BFGS made no evaluation")
    return OptimizeResult(
        x=state.best_x,
        terms=state.best_terms,
        iterations=state.iterations,
        evaluations=state.evaluations,
    )


def _first_step_scale(gradient: Vector, first_step: float) -> float:
    """The divisor of the objective under which the unit-curvature first step `-g` has a root
    mean square of `first_step` (1 where the gradient is zero: nothing to scale)."""
    rms = float(np.sqrt(np.mean(np.square(gradient)))) if gradient.size else 0.0
    return rms / first_step if rms > 0 and math.isfinite(rms) else 1.0


def _lbfgsb(
    func: ScipyFunction,
    x0: Vector,
    *,
    memory: int,
    maxfun: int,
    maxiter: int,
    callback: Callable[[Vector], None],
    bounds: tuple[Vector, Vector] | None,
) -> tuple[Vector, dict[str, Any]]:
    """L-BFGS-B with tolerances off: (x, info with scipy's `warnflag` and `task`).

    The same iterates as `fmin_l_bfgs_b(factr=0, pgtol=0)`, without its per-element Python loops
    over the bounds where scipy's kernel is the one `_drive_setulb` knows (`_kernel_ok`).
    """
    if bounds is not None and _kernel_ok():
        return _drive_setulb(func, x0, memory, maxfun, maxiter, callback, bounds)
    box = None if bounds is None else np.stack(bounds, axis=1)
    x, _, info = fmin_l_bfgs_b(
        func,
        x0,
        m=memory,
        maxfun=maxfun,
        maxiter=maxiter,
        # Tolerances off: stop on the budget only, as a style-transfer user expects.
        factr=0.0,
        pgtol=0.0,
        callback=callback,
        bounds=box,
    )
    return x, info


def _drive_setulb(
    func: ScipyFunction,
    x0: Vector,
    memory: int,
    maxfun: int,
    maxiter: int,
    callback: Callable[[Vector], None],
    bounds: tuple[Vector, Vector],
) -> tuple[Vector, dict[str, Any]]:
    """scipy's `_minimize_lbfgsb` loop (1.15+) around its `setulb` kernel, bounds as arrays.

    Mirrors it step for step (start projected into the box, an evaluation repeated at the same
    point served from the last one, iteration and evaluation limits checked at each new
    iterate), with factr = pgtol = 0; only the bound codes are computed with numpy.
    """
    from scipy.optimize import _lbfgsb as kernel  # scipy's private L-BFGS-B kernel

    lower, upper = (np.ascontiguousarray(b, dtype=np.float64) for b in bounds)
    n = x0.size
    if lower.shape != (n,) or upper.shape != (n,):
        raise ValueError("bounds must have one (lower, upper) pair per variable")
    if (lower > upper).any():
        raise ValueError("a lower bound is greater than its upper bound")
    finite_low, finite_up = np.isfinite(lower), np.isfinite(upper)
    # scipy's codes: 0 unbounded, 1 lower only, 2 both, 3 upper only.
    nbd = np.where(finite_low, np.where(finite_up, _BOTH_BOUNDS, 1), np.where(finite_up, 3, 0))
    nbd = nbd.astype(np.int32)
    low_bnd = np.where(finite_low, lower, 0.0)
    upper_bnd = np.where(finite_up, upper, 0.0)
    x = np.clip(np.asarray(x0, dtype=np.float64), lower, upper)
    m = memory
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    iwa = np.zeros(3 * n, np.int32)
    task = np.zeros(2, np.int32)
    ln_task = np.zeros(2, np.int32)
    lsave = np.zeros(4, np.int32)
    isave = np.zeros(44, np.int32)
    dsave = np.zeros(29, np.float64)
    evaluated_x = x.copy()
    f, g = func(evaluated_x)
    calls = 1
    iterations = 0
    while True:
        g = np.asarray(g, dtype=np.float64)
        kernel.setulb(m, x, low_bnd, upper_bnd, nbd, f, g, 0.0, 0.0, wa, iwa, task, lsave,
                      isave, dsave, _MAX_LINE_SEARCH, ln_task)  # fmt: skip
        if task[0] == _TASK_FG:
            if not np.array_equal(x, evaluated_x):
                evaluated_x = x.copy()
                f, g = func(evaluated_x)
                calls += 1
        elif task[0] == _TASK_NEW_X:
            iterations += 1
            callback(x)
            if iterations >= maxiter or calls > maxfun:
                break
        else:
            break
    if task[0] == _TASK_CONVERGED:
        warnflag = 0
    elif calls > maxfun or iterations >= maxiter:
        warnflag = 1
    else:
        warnflag = _ABNORMAL
    return x, {"warnflag": warnflag, "task": f"setulb task {int(task[0])}.{int(task[1])}"}


@functools.cache
def _kernel_ok() -> bool:
    """Whether `_drive_setulb` reproduces `fmin_l_bfgs_b` with this scipy (checked once, on a
    small bounded problem): scipy's kernel is private and its signature has changed before."""

    def quartic(x: Vector) -> tuple[float, Vector]:
        d = x - np.array([3.0, -2.0, 0.5, 4.0])
        return float(np.sum(d**4 + d**2)), 4 * d**3 + 2 * d

    x0 = np.array([1.0, 1.0, 0.0, -1.0])
    lower, upper = np.array([-1.0, -1.0, -5.0, 0.0]), np.array([2.0, 5.0, 5.0, 9.0])
    try:
        ours, _ = _drive_setulb(quartic, x0, 5, 30, 310, lambda _: None, (lower, upper))
    except Exception as exc:  # any mismatch of the private API: use scipy's public loop
        log.info("scipy's L-BFGS-B kernel differs; using fmin_l_bfgs_b", extra={"error": str(exc)})
        return False
    theirs, _, _ = fmin_l_bfgs_b(
        quartic, x0, m=5, maxfun=30, maxiter=310, factr=0.0, pgtol=0.0,
        bounds=np.stack([lower, upper], axis=1),
    )  # fmt: skip
    same = bool(np.array_equal(ours, theirs))
    if not same:
        log.info("scipy's L-BFGS-B kernel differs; using fmin_l_bfgs_b")
    return same


def _reason(info: dict[str, Any]) -> str:
    task = info.get("task", "")
    return task.decode() if isinstance(task, bytes) else str(task)
