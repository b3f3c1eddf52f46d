"""One small job on a chosen Keras backend, reported as JSON, for backend parity tests.

The Keras backend is fixed once per process, so tests run this as
`python -m tests.support.backend_job --backend jax --weights W` and compare its report with the
same `run()` in their own (TensorFlow) process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EVALUATIONS = 6


def run(
    weights: Path, backend: str, capacity: int | None = None, precision: str = "float32"
) -> dict[str, Any]:
    """Run the job on `backend` (selected first) and return what parity tests compare."""
    from styletx import backends

    backends.select(backend)
    if capacity is not None and backend == "jax":
        from styletx.backends import jax as jax_backend

        jax_backend.EXECUTABLES_PER_STEP = capacity

    import numpy as np

    from styletx.engine import Stylizer
    from styletx.options import StyleOptions
    from tests.support.engine_probes import cached_shapes
    from tests.support.weights import tiny_image

    stylizer = Stylizer(weights, precision=precision)
    options = StyleOptions(size=32, max_evaluations=EVALUATIONS, seed=0)
    step = stylizer.step(options)
    evaluated: list[list[float]] = []
    real = step.loss_and_grad

    def record(batch: Any, targets: Any) -> Any:
        terms, grad = real(batch, targets)
        evaluated.append([float(t) for t in terms[0]])
        return terms, grad

    step.loss_and_grad = record  # type: ignore[method-assign]
    result = stylizer.stylize(tiny_image(48, 64, seed=1), [tiny_image(40, 40, seed=2)], options)
    del step.loss_and_grad
    report: dict[str, Any] = {
        "backend": stylizer.backend,
        "device": stylizer.device,
        "precision": stylizer.precision,
        # What `auto` would decide from on this backend and device.
        "bfloat16_native": backends.load().bfloat16_native(stylizer.device)[0],
        "memory_info": stylizer.memory_info(),
        "first_evaluation": evaluated[0],
        "evaluations": result.evaluations,
        "shape": list(result.image.shape),
        "final_total": result.losses.total,
        "finite": bool(np.isfinite(result.image).all()),
    }
    # Compilations after the first job, then after a job at another aspect ratio.
    compiled = [step.compilations]
    other = options.replace(max_evaluations=1)
    stylizer.stylize(tiny_image(64, 40), [tiny_image(40, 40, seed=2)], other)
    compiled.append(step.compilations)
    report["compilations"] = compiled
    report["cached_shapes"] = cached_shapes(step)
    return report


def run_in_subprocess(weights: Path, backend: str, *flags: str) -> dict[str, Any]:
    """`run()` in a fresh process (Keras picks its backend once per process): its report.

    `flags` are this module's command-line flags (`--capacity 2`, `--precision ...`).
    """
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("KERAS_BACKEND", None)
    command = [sys.executable, "-m", "tests.support.backend_job", "--backend", backend]
    out = subprocess.run(
        [*command, "--weights", str(weights), *flags],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args()
    print(json.dumps(run(args.weights, args.backend, args.capacity, args.precision)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
