"""Mixed precision on the JAX backend (a subprocess) against float32 on TensorFlow (here)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from tests.support import backend_job


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="jax is not installed (pip install 'styletx-server[jax]')",
)
def test_jax_runs_mixed_bfloat16_close_to_float32(seeded_weights: Path) -> None:
    on_jax = backend_job.run_in_subprocess(seeded_weights, "jax", "--precision", "mixed_bfloat16")
    on_tf = backend_job.run(seeded_weights, "tensorflow")
    assert (on_jax["backend"], on_jax["precision"]) == ("jax", "mixed_bfloat16")
    # Same tolerance as tests/unit/test_engine_precision.py: 1% at the first evaluation.
    assert on_jax["first_evaluation"] == pytest.approx(on_tf["first_evaluation"], rel=1e-2)
    assert on_jax["evaluations"] == backend_job.EVALUATIONS and on_jax["finite"]
    assert math.isfinite(on_jax["final_total"])
    assert on_jax["final_total"] == pytest.approx(on_tf["final_total"], rel=5e-2)
