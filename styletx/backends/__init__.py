"""Keras backend selection: which framework computes the engine's loss-and-gradient step.

Keras fixes its backend when it is first imported (from `KERAS_BACKEND`, else
`~/.keras/keras.json`, else TensorFlow), once per process. `select(name)` sets it before that
import and refuses to switch afterwards; `load()` returns the `Backend` of the backend Keras runs.
Nothing here imports Keras or a framework until `load()` or `active()` is called.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import TYPE_CHECKING

from styletx import heap
from styletx.errors import BackendUnavailable

if TYPE_CHECKING:
    from styletx.backends.base import Backend

#: Backends with a step module here, and the distribution each needs.
SUPPORTED: tuple[str, ...] = ("tensorflow", "jax")
DEFAULT = "tensorflow"
_INSTALL_HINT = {
    "tensorflow": "pip install tensorflow (a styletx-server dependency)",
    "jax": "pip install 'styletx-server[jax]'",
}


# Before anything here imports TensorFlow: large CPU tensors from the C heap, so that a big
# job's memory goes back to the system after it (styletx.heap).
heap.prefer_system_allocator()


def available() -> tuple[str, ...]:
    """Supported backends whose framework is installed (importable) in this environment."""
    return tuple(name for name in SUPPORTED if importlib.util.find_spec(name) is not None)


def _check_supported(name: str) -> None:
    if name not in SUPPORTED:
        raise BackendUnavailable(
            f"unknown backend {name!r}; styletx supports {', '.join(SUPPORTED)}"
        )


def select(name: str) -> str:
    """Make `name` the Keras backend of this process; returns it.

    Must run before Keras is imported (it sets `KERAS_BACKEND`); afterwards it only succeeds if
    Keras already runs `name`. Raises `BackendUnavailable` for an unknown or missing framework or
    when Keras is loaded with another backend.
    """
    _check_supported(name)
    if "keras" in sys.modules:
        current = active()
        if current != name:
            raise BackendUnavailable(
                f"Keras is already running the {current} backend in this process; the backend "
                f"is chosen once, before Keras is imported (set KERAS_BACKEND={name} or select "
                "it first thing)"
            )
        return name
    if importlib.util.find_spec(name) is None:
        raise BackendUnavailable(f"backend {name!r} is not installed: {_INSTALL_HINT[name]}")
    os.environ["KERAS_BACKEND"] = name
    return name


def active() -> str:
    """The backend Keras runs in this process (imports Keras if it was not yet)."""
    import keras

    return str(keras.backend.backend())


def load(name: str | None = None) -> Backend:
    """The `Backend` for `name` (selected first), or for the backend Keras runs when None."""
    if name is not None:
        select(name)
    current = active()
    _check_supported(current)
    module = importlib.import_module(f"styletx.backends.{current}")
    backend: Backend = module.BACKEND
    return backend


__all__ = ["DEFAULT", "SUPPORTED", "active", "available", "load", "select"]
