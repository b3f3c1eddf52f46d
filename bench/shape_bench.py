"""Shape benchmark: the engine's shape-polymorphic step versus the old per-shape tf.function.

Side by side in one run, real weights, the Chelsea photo and Starry Night:
(a) seconds per loss-and-gradient evaluation at one fixed 260 px shape (warm, interleaved
    repeats, median): the old way (`OldEngine`, a faithful copy of the engine's former step:
    `tf.function` traced per shape, float32 sums) versus the new `Stylizer` step: exact
    (`shape_step` 1, the fixed-shape case) and as the server runs it (`shape_step` 16: the
    photo's 173 x 260 runs padded to 176 x 260, masked, on every job, so that a
    request gives the same bytes whatever ran before). Goal: exact within 5 % of the old; padded
    over exact is what the same-bytes guarantee costs at this shape.
(b) time of the first job (targets + a few evaluations) at a never-seen aspect ratio minus the
    same job run a third time, now warm: the extra cost of a new shape. Goal: <= 0.3 s at 260 px
    on CPU. Also shown: what the second job costs extra (nothing should: every job at a shape
    runs it the same way).
(c) resident memory (VmRSS) of a fresh process after jobs at 50 distinct aspect ratios minus
    after the first (the largest, so the others need no more activation memory): the old engine,
    the new one as the server runs it (warmed up at start; `shape_step` 16) and the new one
    without padding (`shape_step` 1). Goal: within 100 MiB.
(d) what (c) costs: the new engine in fresh processes with TensorFlow's oneDNN (MKL) kernels on
    (the default) and off (`TF_ENABLE_ONEDNN_OPTS=0`): seconds per evaluation (processes
    interleaved) and the RSS growth of (c). oneDNN keeps a per-thread cache of primitives for
    every shape it has seen, which is where the growth of (c) comes from.
(e) TensorFlow's CPU tensors from the C heap (`TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`, the engine's
    default, `styletx.heap`) versus its oneDNN BFC pool (`=0`): seconds per
    evaluation (fresh processes, interleaved) and the RSS growth of (c).
(d) and (e) time their jobs at `--speed-size` (default 260 px; 512 px is where the C heap's
    page faults show): the median wall seconds per evaluation and the process's CPU seconds
    per evaluation, each the median over the fresh processes.

Usage: python bench/shape_bench.py [--weights PATH] [--quick] [--parts abcde] [--speed-size 260]
       [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tensorflow as tf  # noqa: E402

from bench.shapes.measure import SIZE, aspect_ratios, new_shape_cost, per_evaluation  # noqa: E402
from bench.shapes.old_engine import OldEngine  # noqa: E402
from bench.shapes.probes import (  # noqa: E402
    allocator_cost,
    onednn_cost,
    rss_growth,
    rss_probe,
    speed_probe,
)
from styletx.engine import Stylizer  # noqa: E402
from styletx.options import StyleOptions  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", help="VGG16 weights (default: resolved like the engine)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few shapes and repeats")
    parser.add_argument("--evaluations", type=int, default=None, help="per timing run (a)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved runs (a)")
    parser.add_argument("--shapes", type=int, default=None, help="new shapes (b) / RSS (c)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--parts", default="abcde", help="which measurements (default abcde)")
    parser.add_argument(
        "--speed-size", type=int, default=260, help="output size of (d) and (e)'s speed runs"
    )
    parser.add_argument("--rss-probe", choices=["old", "new", "unpadded"], help=argparse.SUPPRESS)
    parser.add_argument("--speed-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_probe:
        speed_probe(args.evaluations or 20, args.weights, args.speed_size)
        return 0
    if args.rss_probe:
        rss_probe(args.rss_probe, args.shapes or 50, args.weights)
        return 0
    evaluations = args.evaluations or (3 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 5)
    new_shapes = args.shapes or (2 if args.quick else 10)
    rss_shapes = args.shapes or (4 if args.quick else 50)

    stylizer = Stylizer(args.weights)
    stylizer.warmup()
    exact = Stylizer(args.weights, shape_step=1)
    old = OldEngine(stylizer._vgg, StyleOptions(size=SIZE))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print(f"weights: {stylizer.weights.path} ({stylizer.weights.source})")
    print(f"backend: {stylizer.backend} on {stylizer.device}, tensorflow {tf.__version__}")
    report: dict[str, Any] = {}

    if "a" in args.parts:
        _part_a(report, stylizer, exact, old, evaluations, repeats)
    if "b" in args.parts:
        _part_b(report, stylizer, old, new_shapes)
    if "c" in args.parts:
        _part_c(report, rss_shapes, args.weights)
    if "d" in args.parts:
        _part_d(report, evaluations, repeats, rss_shapes, args.weights, args.speed_size)
    if "e" in args.parts:
        _part_e(report, evaluations, repeats, rss_shapes, args.weights, args.speed_size)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _part_a(
    report: dict[str, Any],
    stylizer: Stylizer,
    exact: Stylizer,
    old: OldEngine,
    evaluations: int,
    repeats: int,
) -> None:
    a = per_evaluation(stylizer, exact, old, evaluations, repeats)
    report["per_evaluation"] = a
    (h, w), (ph, pw) = a["shape"], a["padded_shape"]
    print(f"\n(a) seconds per evaluation at {h}x{w} (median of {repeats})")
    print(
        f"{'':>5} {'old (per-shape)':>16} {'new exact':>10} {'exact/old':>10} "
        f"{f'new padded ({ph}x{pw})':>21} {'padded/old':>11} {'padded/exact':>13}"
    )
    for label in ("wall", "cpu"):
        row = a[label]
        print(
            f"{label:>5} {row['old']:>16.4f} {row['exact']:>10.4f} {row['exact_ratio']:>10.3f} "
            f"{row['padded']:>21.4f} {row['padded_ratio']:>11.3f} "
            f"{row['padded_over_exact']:>13.3f}"
        )
    print("goal: new exact / old <= 1.05; padded / exact: what the same bytes cost here")


def _part_b(report: dict[str, Any], stylizer: Stylizer, old: OldEngine, new_shapes: int) -> None:
    b = new_shape_cost(stylizer, old, aspect_ratios(new_shapes, offset=100), 3)
    report["new_shape"] = b
    print(f"\n(b) extra seconds of a job at a new aspect ratio ({new_shapes} shapes, 3 evals)")
    print(
        f"{'':>10} {'warm job s':>11} {'extra median':>13} {'extra max':>10} {'2nd job extra':>14}"
    )
    for name in ("old", "new"):
        for label in ("wall", "cpu"):
            row = b[name]
            print(
                f"{name + ' ' + label:>10} {row[label + '_warm_job']:>11.3f} "
                f"{row[label + '_extra_median']:>13.3f} {row[label + '_extra_max']:>10.3f} "
                f"{row[label + '_second_extra_median']:>14.3f}"
            )
    print("goal: new extra (the first job's) <= 0.3 s")


def _part_c(report: dict[str, Any], rss_shapes: int, weights: str | None) -> None:
    print(f"\n(c) RSS (MiB) of a fresh process: after 1 job, after {rss_shapes} aspect ratios")
    print(f"{'':>8} {'first':>8} {'last':>8} {'growth':>8}")
    report["rss_mib"] = {}
    for name in ("old", "new", "unpadded"):
        c = rss_growth(name, rss_shapes, weights)
        report["rss_mib"][name] = c
        print(f"{name:>8} {c['first']:>8.0f} {c['last']:>8.0f} {c['growth']:>8.0f}")
    print("goal: new growth <= 100 MiB")


def _part_d(
    report: dict[str, Any],
    evaluations: int,
    repeats: int,
    rss_shapes: int,
    weights: str | None,
    size: int,
) -> None:
    d = onednn_cost(evaluations, max(1, repeats // 2), rss_shapes, weights, size)
    report["onednn"] = d
    print(f"\n(d) the new engine with TensorFlow's oneDNN kernels on (default) and off, {size} px")
    print(f"{'oneDNN':>6} {'s/eval':>8} {'CPU s/eval':>11} {'RSS growth MiB':>15}")
    for name, row in d.items():
        print(
            f"{name:>6} {row['seconds']:>8.4f} {row['cpu_seconds']:>11.4f} "
            f"{row['rss_growth']:>15.0f}"
        )
    print(
        f"off/on seconds: {d['off']['seconds'] / d['on']['seconds']:.2f}, "
        f"CPU: {d['off']['cpu_seconds'] / d['on']['cpu_seconds']:.2f}"
    )


def _part_e(
    report: dict[str, Any],
    evaluations: int,
    repeats: int,
    rss_shapes: int,
    weights: str | None,
    size: int,
) -> None:
    e = allocator_cost(evaluations, max(1, repeats // 2), rss_shapes, weights, size)
    report["allocator"] = e
    print(f"\n(e) TensorFlow's CPU tensors from the C heap (default) or its BFC pool, {size} px")
    print(f"{'allocator':>9} {'s/eval':>8} {'CPU s/eval':>11} {'RSS growth MiB':>15}")
    for name, row in e.items():
        print(
            f"{name:>9} {row['seconds']:>8.4f} {row['cpu_seconds']:>11.4f} "
            f"{row['rss_growth']:>15.0f}"
        )
    heap, pool = e["c_heap"], e["bfc_pool"]
    print(
        f"C heap / BFC pool seconds: {heap['seconds'] / pool['seconds']:.3f}, "
        f"CPU: {heap['cpu_seconds'] / pool['cpu_seconds']:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
