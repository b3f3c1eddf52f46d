"""Precision benchmark: float32 and bfloat16 side by side; the quality guard of `--precision auto`.

Parts (`--part`, repeatable; default `guard`):

- `guard`: over three content/style pairs, every preset, colours as they are, both
  `preserve_colors` modes (swap, luminance) and `style_scale` 1.5, each job runs once in float32
  and once in mixed_bfloat16 (in alternating order, same seed and input pixels), and both final
  pictures are scored with ONE float32 loss (`Stylizer.evaluate` with the job's own options).
  bfloat16 passes a case when its loss is at most `GUARD_TOLERANCE` (1 %) above float32's; the
  table also says what `auto` picks for the case on a bfloat16 CPU
  (`PrecisionPolicy("auto", True).for_job`) and flags a case `auto` would run in bfloat16 that
  failed. `--json` writes the rows (`bench/precision_guard.json` is the committed run, read by
  tests/unit/test_precision_auto.py).
- `cli`: `styletx stylize --preset fast` with `--precision auto` and `--precision float32`, each
  a fresh process, interleaved `--repeats` times: the precision `auto` picked, the median
  seconds per evaluation (the CLI's `evaluation_seconds_median`) and the output's float32 score.
- `memory`: peak resident memory growth (VmHWM) of one job per precision and size, each in a
  fresh process, and the linear fit per precision (`styletx.memory.MemoryModel.fit`): how much
  of float32's bytes per pixel bfloat16 keeps (`memory.SIXTEEN_BIT_SHARE`).
- `bounds`: L-BFGS-B's fixed cost per job with pixel bounds: scipy's `fmin_l_bfgs_b` (bounds
  converted in Python loops) against `styletx.optimize` (bounds as arrays), 2 evaluations.
- `flops`: the FLOPs of one evaluation (VGG16's convolutions up to the deepest layer used,
  forward plus the input gradient: twice the forward's) divided by the median measured
  evaluation time per precision, next to the CPU's peak (`--ghz` x cores x FLOP per cycle).

Usage: python bench/precision_bench.py [--part guard --part cli ...] [--size 260]
       [--preset fast ...] [--pair chelsea_starry_night ...] [--variant plain ...]
       [--json out/precision.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.precision.cases import PAIRS, VARIANTS  # noqa: E402
from bench.precision.compute import part_bounds, part_flops  # noqa: E402
from bench.precision.guard import part_guard  # noqa: E402
from bench.precision.runs import memory_probe, part_cli, part_memory  # noqa: E402
from styletx.presets import PRESETS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", help="VGG16 weights (default: resolved like the engine)")
    parser.add_argument(
        "--part", action="append", choices=["guard", "cli", "memory", "flops", "bounds"]
    )
    parser.add_argument("--size", type=int, default=260, help="longest side of the output")
    parser.add_argument("--preset", action="append", choices=PRESETS)
    parser.add_argument("--pair", action="append", choices=list(PAIRS))
    parser.add_argument("--variant", action="append", choices=list(VARIANTS))
    parser.add_argument("--max-evaluations", type=int, help="cap every preset's budget")
    parser.add_argument("--repeats", type=int, default=3, help="cli and flops: runs per variant")
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[256, 384, 512])
    parser.add_argument("--memory-probe", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--ghz", type=float, help="flops: core clock (default: /proc/cpuinfo)")
    parser.add_argument(
        "--fp32-flop-per-cycle",
        type=int,
        default=32,
        help="flops: float32 FLOPs per cycle and core (AMD Zen 4: two 256-bit FMA pipes = 32)",
    )
    parser.add_argument(
        "--bf16-flop-per-cycle",
        type=int,
        default=64,
        help="flops: bfloat16 FLOPs per cycle and core (Zen 4: VDPBF16PS, two per cycle = 64)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args)
        return 0
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
        f"{time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    report: dict[str, Any] = {"size": args.size}
    parts = {
        "guard": part_guard,
        "cli": part_cli,
        "memory": part_memory,
        "flops": part_flops,
        "bounds": part_bounds,
    }
    for name in args.part or ["guard"]:
        print(f"\n== {name}", flush=True)
        report[name] = parts[name](args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
