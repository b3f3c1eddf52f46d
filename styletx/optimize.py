"""The L-BFGS driver: one scipy `fmin_l_bfgs_b` run under an exact evaluation budget.

Pure numpy/scipy (no TensorFlow) so it can be tested on analytic functions. Departures from the
reference tutorial, which ran 10 rounds of `maxfun=20` and threw L-BFGS' curvature history away
each round: one run by default (`restart_every=0`), early-stopping tolerances off, float64 at the
scipy boundary, and a restart with a rescaled objective if scipy gives up early (its line search
can fail on huge loss values with float32 gradients).
"""

from __future__ import annotations

import logging
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
) -> OptimizeResult:
    """Minimise `objective` from `x0` with at most `max_evaluations` evaluations.

    `should_stop` is polled before every evaluation and raises `Cancelled`. The returned point is
    the best one evaluated (lowest total loss), so a budget that ends mid line-search loses nothing.
    `bounds` (lower, upper; one value per element of x) makes it L-BFGS-B's box-constrained
    problem: `x0` is projected into the box and every point evaluated stays inside it.
    """
    box = None
    if bounds is not None:
        lower, upper = (np.broadcast_to(np.asarray(b, np.float64), np.shape(x0)) for b in bounds)
        box = np.stack([lower.ravel(), upper.ravel()], axis=1)
    state = _State()
    scale = 1.0
    segment_end = 0

    def func(x: Vector) -> tuple[float, Vector]:
        if should_stop is not None and should_stop():
            raise Cancelled("stylization cancelled")
        if state.evaluations >= max_evaluations or state.evaluations >= segment_end:
            raise _BudgetReached
        terms, grad = objective(x)
        state.evaluations += 1
        state.last_x, state.last_terms = x.copy(), terms
        if state.best_x is None or terms[0] < state.best_terms[0]:
            state.best_x, state.best_terms = state.last_x, terms
        return terms[0] / scale, np.asarray(grad, dtype=np.float64) / scale

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
            x, _, info = fmin_l_bfgs_b(
                func,
                x,
                m=memory,
                maxfun=segment,
                maxiter=10 * segment + 10,
                # Tolerances off: stop on the budget only, as a style-transfer user expects.
                factr=0.0,
                pgtol=0.0,
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


def _reason(info: dict[str, Any]) -> str:
    task = info.get("task", "")
    return task.decode() if isinstance(task, bytes) else str(task)
