"""GPU benchmark: precision x size, peak device memory and its model, batched versus sequential.

Prints ONE table, every ratio measured side by side in this run (same weights, images, seeds):

- per precision (auto, float32, mixed_bfloat16, mixed_float16; auto's row names what it
  resolved to) and size (260, 512, 1024 px, square content and style; the `high` preset's
  options with N evaluations, so that auto runs them in bfloat16 where the GPU has it):
  seconds per evaluation (the loss-and-gradient step as L-BFGS calls it,
  host transfers included), the job's optimisation seconds for all its evaluations (L-BFGS on
  the host included), the peak device memory of the job (on a CPU: the growth of the process's
  peak RSS) and the final total loss after N evaluations (500 by default);
- 4 concurrent 256 px jobs, one at a time (batching off) versus together (batched), in jobs
  per minute;
- where the main device is a GPU, the same step on the CPU backend at smaller settings, so the
  GPU/CPU ratio comes from the same run.

Under the table: the memory model fitted per precision from the peaks (bytes ~ a * pixels + b)
and the largest square output it lets one job have on a 16 GiB and an 80 GiB card.

Each precision, the batching run and the CPU rows run in their own process (the Keras backend
and JAX's peak-memory counter are per process), in that order of importance, within a time
budget (`--budget-seconds`); a part cut short prints what it finished. `--cpu-smoke` scales
sizes and evaluation counts down so the whole run completes on a small CPU.

Usage: KERAS_BACKEND=jax python bench/gpu_bench.py [--weights W] [--cpu-smoke] [--json out.json]
       python bench/gpu_bench.py --xla-memory [--sizes 128 256 384 512]   (XLA buffer sizes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gpu.parts import (  # noqa: E402
    PRECISIONS,
    part_batching,
    part_precision,
    part_xla_memory,
)
from bench.gpu.table import memory_lines, table  # noqa: E402

#: Full settings (a GPU) and the `--cpu-smoke` ones (2 shared CPU cores, a few minutes).
FULL = {
    "sizes": [260, 512, 1024],
    "evaluations": 500,
    "batch_jobs": 4,
    "batch_size": 256,
    "batch_evaluations": 200,
    "cpu_sizes": [260, 512],
    "cpu_evaluations": 20,
}
SMOKE = {
    "sizes": [64, 96, 128],
    "evaluations": 30,
    "batch_jobs": 4,
    "batch_size": 64,
    "batch_evaluations": 20,
    "cpu_sizes": [64],
    "cpu_evaluations": 5,
}


def _run_part(argv: list[str], timeout: float) -> tuple[list[dict[str, Any]], str]:
    """Run one part in a subprocess; its RESULT records, and a note when it did not finish."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=max(1.0, timeout), check=False
        )
        out, note = proc.stdout, "" if proc.returncode == 0 else proc.stderr.strip()[-800:]
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or b""
        out = raw.decode() if isinstance(raw, bytes) else raw
        note = f"cut at the time budget ({timeout:.0f} s)"
    records = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    return records, note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="VGG16 weights file (float16 copy ok)")
    parser.add_argument("--cpu-smoke", action="store_true", help="small sizes and counts")
    parser.add_argument("--budget-seconds", type=float, default=420.0)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--sizes", nargs="+", type=int)
    parser.add_argument("--evaluations", type=int)
    parser.add_argument("--batch-jobs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--batch-evaluations", type=int)
    parser.add_argument("--cpu-sizes", nargs="+", type=int)
    parser.add_argument("--cpu-evaluations", type=int)
    parser.add_argument("--json", type=Path, help="write every record as JSON")
    parser.add_argument("--xla-memory", action="store_true", help=part_xla_memory.__doc__)
    # Internal: run one part in this process.
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--cpu-rows", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    for key, value in (SMOKE if args.cpu_smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.xla_memory:
        part_xla_memory(args)
        return 0
    if args.part:
        if args.cpu_rows:
            from styletx import backends

            if not backends.load().accelerators():
                return 0  # the main rows ran on the CPU already
        device = "CPU:0" if args.cpu_rows else None
        if args.part == "batching":
            part_batching(args, device)
        else:
            part_precision(args, args.part, device)
        return 0
    return orchestrate(args)


def orchestrate(args: argparse.Namespace) -> int:
    started = time.time()
    deadline = started + args.budget_seconds
    common = [
        *(["--weights", args.weights] if args.weights else []),
        *(["--cpu-smoke"] if args.cpu_smoke else []),
        *["--sizes", *map(str, args.sizes)],
        *["--evaluations", str(args.evaluations)],
        *["--batch-jobs", str(args.batch_jobs), "--batch-size", str(args.batch_size)],
        *["--batch-evaluations", str(args.batch_evaluations)],
        *["--cpu-sizes", *map(str, args.cpu_sizes), "--cpu-evaluations", str(args.cpu_evaluations)],
    ]
    # The parent never imports the framework: JAX would take most of the GPU's memory from the
    # parts. The CPU-rows part itself checks whether the main device is an accelerator.
    # float32 first (the baseline every ratio needs), then batching, then the others.
    first = "float32" if "float32" in args.precisions else args.precisions[0]
    order: list[list[str]] = [["--part", first]]
    order.append(["--part", "batching"])
    order += [["--part", p] for p in args.precisions if p != first]
    order.append(["--part", "float32", "--cpu-rows"])
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    for part in order:
        remaining = deadline - time.time()
        if remaining < 5:
            notes.append(f"{' '.join(part[1:])}: not run (time budget spent)")
            continue
        found, note = _run_part([*part, *common, "--deadline", str(deadline)], remaining)
        records += found
        if note:
            notes.append(f"{' '.join(part[1:])}: {note}")
        skipped = [r["size"] for r in found if r.get("skipped")]
        if skipped:
            notes.append(f"{' '.join(part[1:])}: skipped sizes {skipped} (time budget)")
    print(
        f"# gpu_bench: {platform.machine()}, {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}, KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '')}; "
        f"{time.time() - started:.0f} s"
    )
    for line in table(records) + memory_lines(records):
        print(line)
    for note in notes:
        print(f"note: {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"records": records, "notes": notes}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
