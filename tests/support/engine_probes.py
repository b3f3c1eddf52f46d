"""What tests read of the engine's internals, which the library itself has no use for.

Each probe reads state the module it probes describes (its docstring or the class's), so a test
says what it checks without the library carrying a member only tests call.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, TypeVar

from styletx.lru import LRUCache
from styletx.precision import check_precision

K = TypeVar("K", bound=Hashable)


def keys_by_age(cache: LRUCache[K, Any]) -> list[K]:
    """The keys `cache` holds, least recently used first (the order it evicts them in)."""
    with cache._lock:
        return list(cache._entries)


def compute_dtype(precision: str) -> str:
    """The activations' dtype a precision (a Keras dtype policy name) computes in: "float32",
    "bfloat16" or "float16" (the mixed policies keep float32 variables)."""
    return check_precision(precision).removeprefix("mixed_")


def cached_shapes(step: Any) -> int | None:
    """Executables a JAX step (`styletx.backends.jax.JaxStep`) holds now, both of its functions
    together (at most twice `EXECUTABLES_PER_STEP`); None for a step that does not compile per
    shape (TensorFlow's)."""
    if not step.compiles_per_shape:
        return None
    return len(step._targets) + len(step._loss_and_grad)
