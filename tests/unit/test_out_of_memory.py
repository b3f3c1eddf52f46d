"""Backends raise the engine's OutOfMemory for a framework's out-of-memory error, and only then."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from styletx.backends.base import OutOfMemoryBoundary
from styletx.engine import Stylizer
from styletx.errors import OutOfMemory, StyletxError
from styletx.options import StyleOptions
from tests.support.weights import tiny_image

HAS_JAX = importlib.util.find_spec("jax") is not None
OPTIONS = StyleOptions(size=32, max_evaluations=3, seed=0)


def test_out_of_memory_is_an_engine_error() -> None:
    assert issubclass(OutOfMemory, StyletxError)


def test_the_boundary_converts_memory_errors_and_what_the_framework_calls_one() -> None:
    boundary = OutOfMemoryBoundary(lambda exc: "RESOURCE_EXHAUSTED" in str(exc))
    for error in (MemoryError(), RuntimeError("RESOURCE_EXHAUSTED: 1 GiB")):
        with pytest.raises(OutOfMemory) as info, boundary:
            raise error
        assert info.value.__cause__ is error
    ordinary = RuntimeError("INVALID_ARGUMENT: shapes")
    with pytest.raises(RuntimeError) as caught, boundary:
        raise ordinary
    assert caught.value is ordinary


def test_a_tensorflow_oom_inside_a_job_leaves_the_engine_as_out_of_memory(
    seeded_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stylizer = Stylizer(seeded_weights)
    step = stylizer.step(OPTIONS)
    exhausted = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    def allocate(*args: Any) -> Any:
        raise exhausted

    for pad in list(step._loss_and_grad):
        monkeypatch.setitem(step._loss_and_grad, pad, allocate)
    with pytest.raises(OutOfMemory) as info:
        stylizer.stylize(tiny_image(32, 32), [tiny_image(32, 32, 1)], OPTIONS)
    assert info.value.__cause__ is exhausted
    assert "OOM when allocating tensor" in str(info.value)


@pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed")
def test_jax_resource_exhausted_leaves_a_step_as_out_of_memory() -> None:
    import jax

    from styletx.backends.jax import JaxStep

    class Failing:
        """What `JaxStep.targets` touches, with a device transfer XLA refuses."""

        def __init__(self, message: str) -> None:
            self.message = message
            self._targets = None
            self._trainable: list[Any] = []
            self._frozen: list[Any] = []

        def _put(self, array: Any) -> Any:
            raise jax.errors.JaxRuntimeError(self.message)

        def targets(self, images: Any) -> Any:
            return JaxStep.targets(self, images)  # type: ignore[arg-type]

    images = np.zeros((1, 16, 16, 3), dtype=np.float32)
    with pytest.raises(OutOfMemory):
        Failing("RESOURCE_EXHAUSTED: Out of memory allocating 1073741824 bytes").targets(images)
    with pytest.raises(jax.errors.JaxRuntimeError):
        Failing("INVALID_ARGUMENT: shapes").targets(images)
