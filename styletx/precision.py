"""Mixed precision: VGG16's activations in 16 bits, losses and gradients summed wider.

A precision is a Keras dtype policy name. Under "mixed_bfloat16" / "mixed_float16" the conv
layers keep float32 weights and compute in 16 bits (tensor cores on a GPU, half the activation
memory); `styletx.losses` casts their outputs back to float32 before Gram matrices and
differences, and sums in float64, so only the network's own arithmetic is 16-bit. The gradient
reaching L-BFGS is the float32 gradient of the float32 input image (float64 at scipy).

float16 has 5 exponent bits (largest value 65504): the backward pass through the network can
overflow where bfloat16, with float32's range, cannot. `LossScale` is the engine's dynamic loss
scale for that case: the loss weights (hence every gradient in the network) are scaled down
after an overflow and the evaluation is repeated; terms and gradient are divided back exactly
(every loss term is linear in its weight).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, get_args

from styletx.errors import InvalidOptions

log = logging.getLogger(__name__)

Precision = Literal["float32", "mixed_bfloat16", "mixed_float16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEFAULT_PRECISION: Precision = "float32"


def check_precision(name: str) -> Precision:
    """`name` when it is a supported precision; InvalidOptions (field `precision`) otherwise."""
    if name not in PRECISIONS:
        raise InvalidOptions("precision", f"must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name  # type: ignore[return-value]


def compute_dtype(precision: str) -> str:
    """The activations' dtype under `precision` ("float32", "bfloat16", "float16")."""
    return check_precision(precision).removeprefix("mixed_")


def with_policy(model: Any, precision: str) -> Any:
    """`model` with every layer but its input computing under `precision`'s dtype policy.

    Keras gives a layer the process-global policy when it is made, and
    `keras.applications.VGG16` takes no dtype; setting each layer's policy afterwards gives a
    model of this precision without touching that global (other Stylizers of the process may
    use another precision). The weights stay float32 variables (the mixed policies' variable
    dtype), cast to 16 bits as each layer runs. Changes `model` in place, and returns it:
    callers pass a model of their own (`vgg.build_vgg16` builds one per Stylizer).
    """
    precision = check_precision(precision)
    if precision == "float32":
        return model
    import keras

    policy = keras.DTypePolicy(precision)
    for layer in model.layers:
        if layer.__class__.__name__ != "InputLayer":
            layer.dtype_policy = policy
    return model


class LossScale:
    """Dynamic loss scale of one job under mixed_float16 (1.0, never used, otherwise).

    Starts at 1 (the tutorial's losses are large, so the gradients inside the network are far
    above float16's smallest normal); an overflow divides the scale by `FACTOR` and the caller
    evaluates again, up to `MAX_RETRIES` times. The scale never grows back within a job: growing
    would cost a wasted evaluation at every overflow, for no gain at these magnitudes.
    """

    FACTOR = 2.0**8
    MAX_RETRIES = 8

    def __init__(self, precision: str) -> None:
        self.enabled = check_precision(precision) == "mixed_float16"
        self.value = 1.0
        self.overflows = 0

    def overflowed(self) -> bool:
        """Lower the scale after a non-finite gradient; False when retries are exhausted."""
        if not self.enabled or self.overflows >= self.MAX_RETRIES:
            return False
        self.overflows += 1
        self.value /= self.FACTOR
        log.debug("float16 overflow", extra={"loss_scale": self.value, "overflows": self.overflows})
        return True


__all__ = [
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "LossScale",
    "Precision",
    "check_precision",
    "compute_dtype",
    "with_policy",
]
