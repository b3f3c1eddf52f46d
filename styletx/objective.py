"""The L-BFGS objective of one job and scale: loss terms and gradient of a point in its `Space`.

Each evaluation runs the backend's compiled step (alone, or in a cross-job batch through a
batcher `Seat`), checks that the result is finite, and under mixed_float16 retries at a lower
loss scale after an overflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from styletx.batcher import Seat
from styletx.errors import NonFiniteLoss
from styletx.optimize import Vector
from styletx.precision import LossScale
from styletx.protocol import StopCallback
from styletx.result import Losses
from styletx.space import Space

if TYPE_CHECKING:
    from styletx.backends.base import Array, DeviceTargets, LossStep

#: Leading columns of the loss weights (`losses.WEIGHT_FIELDS`, not imported here: it imports
#: Keras) that multiply a loss term: content, style per layer, tv; not the TV power.
SCALED_WEIGHTS = 3

#: The option that weighs each loss term (`losses.TERM_FIELDS` after the total).
_TERM_WEIGHTS = (("content", "content_weight"), ("style", "style_weight"), ("tv", "tv_weight"))

#: Loss terms (total, content, style, tv) and the gradient at a point.
Objective = Callable[[Vector], tuple[tuple[float, ...], Vector]]


def make_objective(
    step: LossStep,
    targets: DeviceTargets,
    space: Space,
    timings: list[float] | None = None,
    seat: Seat | None = None,
    should_stop: StopCallback | None = None,
    scale: LossScale | None = None,
    on_evaluation: Callable[[], None] | None = None,
) -> Objective:
    """The L-BFGS objective in `space`; appends each evaluation's wall time to `timings` and
    calls `on_evaluation` after each finite one.

    With a `seat`, each evaluation goes through the batcher (with other jobs' of the same
    shape). Under mixed_float16, an overflow lowers the job's loss `scale` and evaluates again.
    """
    durations: list[float] = [] if timings is None else timings
    base, scaled = _target_weights(step, targets, scale)
    current = [scaled]  # the targets under the job's loss scale now
    evaluated = [0]

    def evaluate(image: Array) -> tuple[Array, Array]:
        if seat is not None:
            return seat.evaluate(step, image, current[0], should_stop)
        terms, grad = step.loss_and_grad(image[np.newaxis], current[0])
        return terms[0], grad[0]

    def objective(v: Vector) -> tuple[tuple[float, ...], Vector]:
        began = time.perf_counter()
        image = space.image(v)
        terms, grad = evaluate(image)
        # Only float16 is checked: elsewhere the O(pixels) scan would buy nothing.
        while (
            scale is not None
            and scale.enabled
            and not (np.isfinite(grad).all() and np.isfinite(terms).all())
        ):
            if not scale.back_off():
                raise non_finite(
                    terms,
                    evaluated[0] + 1,
                    f" (not finite even with the loss scaled by {scale.value:g} in "
                    f"{scale.precision}: use mixed_bfloat16 or float32)",
                )
            current[0] = step.with_weights(current[0], _scaled(base, scale.value))
            terms, grad = evaluate(image)
        evaluated[0] += 1
        # 4 numbers and one pass over the gradient (~0.1 ms at 260 px): an overflow ends the
        # job with a reason instead of an "OK" with inf or an optimiser lost in NaNs.
        if not (np.isfinite(terms).all() and np.isfinite(grad).all()):
            raise non_finite(terms, evaluated[0])
        if on_evaluation is not None:
            on_evaluation()
        unscale = 1.0 if scale is None else 1.0 / scale.value
        gradient = space.gradient(grad)
        if unscale != 1.0:
            gradient *= unscale
        durations.append(time.perf_counter() - began)
        return tuple(float(t) * unscale for t in terms), gradient

    return objective


def _target_weights(
    step: LossStep, targets: DeviceTargets, scale: LossScale | None
) -> tuple[Array, DeviceTargets]:
    """(the unscaled `[1, 4]` loss weights, `targets` under the job's current loss scale).

    A later scale of a job starts at the loss scale its earlier scales settled on.
    """
    weights = np.asarray(targets.weights, dtype=np.float32)
    if scale is None or scale.value == 1.0:
        return weights, targets
    return weights, step.with_weights(targets, _scaled(weights, scale.value))


def _scaled(weights: Array, factor: float) -> Array:
    """Loss weights `[B, 4]` with the three loss weights times `factor` (not the TV power:
    the loss is linear in the weights, not in the power)."""
    out = np.array(weights, dtype=np.float32, copy=True)
    out[:, :SCALED_WEIGHTS] *= factor
    return out


def non_finite(terms: Array, evaluation: int, context: str = "") -> NonFiniteLoss:
    """NonFiniteLoss naming the weight of the first term that overflowed (else of the largest
    one: only the gradient did)."""
    values = [float(t) for t in np.asarray(terms, dtype=np.float64).ravel()[1:4]]
    bad = [i for i, v in enumerate(values) if not np.isfinite(v)]
    index = bad[0] if bad else int(np.argmax(np.abs(values)))
    term, field = _TERM_WEIGHTS[index]
    what = f"the {term} loss became {values[index]}" if bad else "the loss gradient overflowed"
    hint = " or tv_power" if term == "tv" else ""
    return NonFiniteLoss(
        field,
        f"{what} at evaluation {evaluation}{context}; lower {field}{hint} or use a smaller "
        f"image (losses: content {values[0]:.3g}, style {values[1]:.3g}, tv {values[2]:.3g})",
        evaluation=evaluation,
    )


def losses_of(terms: tuple[float, ...]) -> Losses:
    """`Losses` from the terms (total, content, style, tv) an objective returns."""
    return Losses(total=terms[0], content=terms[1], style=terms[2], tv=terms[3])


__all__ = ["SCALED_WEIGHTS", "Objective", "losses_of", "make_objective", "non_finite"]
