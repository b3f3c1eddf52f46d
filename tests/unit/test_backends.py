"""Backend selection and the same job on TensorFlow (this process) and JAX (a subprocess)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from styletx import backends
from styletx.backends.base import canonical_device
from styletx.engine import Stylizer
from styletx.errors import BackendUnavailable
from tests.support import backend_job
from tests.support.precision import auto_on_this_cpu

ROOT = Path(__file__).resolve().parents[2]
HAS_JAX = importlib.util.find_spec("jax") is not None


def test_the_default_backend_is_tensorflow_and_listed_available() -> None:
    assert backends.DEFAULT == "tensorflow"
    assert backends.active() == "tensorflow"  # nothing in the test environment sets another
    assert "tensorflow" in backends.available()
    assert set(backends.available()) <= set(backends.SUPPORTED)


def test_select_refuses_unknown_names_and_a_switch_after_keras_loaded() -> None:
    with pytest.raises(BackendUnavailable, match="unknown backend 'mxnet'"):
        backends.select("mxnet")
    assert backends.select("tensorflow") == "tensorflow"  # what Keras already runs: fine
    with pytest.raises(BackendUnavailable, match="already running the tensorflow backend"):
        backends.select("jax")
    assert backends.active() == "tensorflow"


def test_select_sets_keras_backend_before_keras_is_imported() -> None:
    code = (
        "import sys; from styletx import backends; assert 'keras' not in sys.modules; "
        "backends.select('tensorflow'); import os; print(os.environ['KERAS_BACKEND'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tensorflow"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("/job:localhost/replica:0/task:0/device:GPU:1", "GPU:1"),
        ("/CPU:0", "CPU:0"),
        ("gpu:2", "GPU:2"),
        ("cuda:0", "GPU:0"),
        ("CPU", "CPU:0"),
    ],
)
def test_device_names_are_canonical(name: str, expected: str) -> None:
    assert canonical_device(name) == expected


def test_stylizer_reports_backend_precision_device_and_no_memory_on_cpu(
    seeded_weights: Path,
) -> None:
    stylizer = Stylizer(seeded_weights)
    assert (stylizer.backend, stylizer.precision, stylizer.device) == (
        "tensorflow",
        auto_on_this_cpu(),  # the default precision is auto
        "CPU:0",
    )
    assert stylizer.memory_info() == {}
    with pytest.raises(AttributeError):
        stylizer.backend = "jax"  # type: ignore[misc]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed (pip install 'styletx-server[jax]')")
def test_the_same_job_on_tensorflow_and_jax(seeded_weights: Path) -> None:
    on_jax = backend_job.run_in_subprocess(seeded_weights, "jax", "--capacity", "2")
    on_tf = backend_job.run(seeded_weights, "tensorflow")

    assert on_jax["backend"] == "jax" and on_tf["backend"] == "tensorflow"
    assert on_jax["precision"] == on_tf["precision"] == "float32"
    assert on_jax["device"] == "CPU:0" and on_jax["memory_info"] == {}
    # auto: XLA's CPU backend widens bfloat16 convolutions to float32, so never bfloat16 there.
    assert on_jax["bfloat16_native"] is False
    assert on_tf["bfloat16_native"] is (auto_on_this_cpu() == "mixed_bfloat16")
    # Same init, same weights, same maths: every loss term agrees at the first evaluation.
    assert on_jax["first_evaluation"] == pytest.approx(on_tf["first_evaluation"], rel=1e-4)
    for report in (on_tf, on_jax):
        assert report["evaluations"] == backend_job.EVALUATIONS
        assert report["shape"] == [24, 32, 3] and report["finite"]
    assert on_jax["final_total"] == pytest.approx(on_tf["final_total"], rel=1e-2)
    # TensorFlow: one trace of each function serves both aspect ratios (the square style's
    # targets take the plain model, the 24x32 content's targets and loss the padded one).
    assert on_tf["compilations"] == [3, 3]
    # JAX compiles per shape (content, style, loss; then the new content and loss), and keeps
    # at most 2 executables per function: the oldest target shape was evicted.
    assert on_jax["compilations"] == [3, 5]
    assert on_jax["cached_shapes"] == 4


@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed (pip install 'styletx-server[jax]')")
def test_jax_executables_are_a_bounded_lru_and_sum_in_float64() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from styletx.backends.jax import _Executables

    def total(x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.square(x.astype(jnp.float64)))

    executables = _Executables(jax.jit(total), capacity=2)
    for n in (3, 4, 5):
        out = executables(np.ones((n,), dtype=np.float32))
        assert float(out) == n and out.dtype == np.float64
    assert executables.compilations == 3 and len(executables) == 2
    executables(np.ones((5,), dtype=np.float32))  # still compiled
    assert executables.compilations == 3
    executables(np.ones((3,), dtype=np.float32))  # evicted: compiled again
    assert executables.compilations == 4 and len(executables) == 2
    # x64 is switched on around our functions only: the process keeps JAX's float32 default.
    assert jnp.zeros(1).dtype == jnp.float32
