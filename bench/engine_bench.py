"""Engine benchmark: the engine versus the reference tutorial's way, side by side in one run.

1. Seconds per loss-and-gradient evaluation at several sizes (same weights, seed and images;
   square images so both process the same pixels), interleaved and repeated, median reported.
2. Final loss after 200 evaluations: one L-BFGS run (the engine) versus the reference's 10 x 20
   restarts with default tolerances, from the same initial image.
3. Peak resident memory of a 512 px job, each in a fresh subprocess.

Usage: python bench/engine_bench.py [--weights PATH] [--sizes 128 260 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.optimize import fmin_l_bfgs_b  # noqa: E402

from bench.reference import ReferenceEvaluator, reference_schedule  # noqa: E402
from bench.support.rss import peak_rss  # noqa: E402
from styletx import images  # noqa: E402
from styletx.engine import Stylizer  # noqa: E402
from styletx.options import StyleOptions  # noqa: E402

CONTENT = ROOT / "examples" / "content_chelsea.png"
STYLE = ROOT / "examples" / "style_starry_night.jpg"


def _pair(size: int) -> tuple[np.ndarray, np.ndarray]:
    content = images.resize_to(images.decode_image(CONTENT), size, size)
    style = images.resize_to(images.decode_image(STYLE), size, size)
    return content, style


def _x0(size: int, seed: int) -> np.ndarray:
    # The engine's (and the tutorial's) random init, reproduced for the reference.
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (size, size, 3)) - 128.0).astype(np.float32).ravel()


def ours_per_eval(stylizer: Stylizer, size: int, evaluations: int) -> float:
    content, style = _pair(size)
    options = StyleOptions(size=size, max_evaluations=evaluations, seed=0)
    return stylizer.stylize(content, [style], options).seconds_per_evaluation


def reference_per_eval(stylizer: Stylizer, size: int, evaluations: int) -> float:
    content, style = _pair(size)
    ev = ReferenceEvaluator(stylizer._vgg, content, style, StyleOptions(size=size))
    x0 = _x0(size, 0).astype(np.float64)
    ev.loss(x0)  # compile outside the timing, as the engine's warm-up does
    ev.evaluations = 0
    started = time.perf_counter()
    fmin_l_bfgs_b(ev.loss, x0, fprime=ev.grads, maxfun=evaluations, factr=0.0, pgtol=0.0)
    return (time.perf_counter() - started) / ev.evaluations


def final_losses(stylizer: Stylizer, size: int, budget: int) -> dict[str, float]:
    content, style = _pair(size)
    options = StyleOptions(size=size, max_evaluations=budget, seed=0)
    ours = stylizer.stylize(content, [style], options)
    ev = ReferenceEvaluator(stylizer._vgg, content, style, options)
    x = reference_schedule(ev.loss, ev.grads, _x0(size, 0), rounds=budget // 20, maxfun=20)
    ref_evaluations = ev.evaluations
    ref_loss = ev.loss(x)
    return {
        "ours_loss": ours.losses.total,
        "ours_evaluations": ours.evaluations,
        "reference_loss": ref_loss,
        "reference_evaluations": ref_evaluations,
    }


def rss_probe(kind: str, size: int, weights: str | None) -> None:
    """Run in a subprocess: a few evaluations at `size`, then print peak RSS in MiB."""
    stylizer = Stylizer(weights)
    if kind == "ours":
        ours_per_eval(stylizer, size, 5)
    else:
        reference_per_eval(stylizer, size, 5)
    print(peak_rss() / 2**20)


def probed_peak_rss_mib(kind: str, size: int, weights: str | None) -> float:
    """Peak RSS of a fresh process that runs `rss_probe`, MiB."""
    cmd = [sys.executable, __file__, "--rss-probe", kind, "--sizes", str(size)]
    if weights:
        cmd += ["--weights", weights]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", help="VGG16 weights (default: resolved like the engine)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 260, 512])
    parser.add_argument("--evaluations", type=int, default=20, help="per timing run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--final-size", type=int, default=260)
    parser.add_argument("--final-evaluations", type=int, default=200)
    parser.add_argument("--rss-size", type=int, default=512)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--rss-probe", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_probe:
        rss_probe(args.rss_probe, args.sizes[0], args.weights)
        return 0

    stylizer = Stylizer(args.weights)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print(f"weights: {stylizer.weights.path} ({stylizer.weights.source})")
    report: dict[str, object] = {"per_evaluation": {}}
    print("\nseconds per evaluation (median of repeats, interleaved)")
    print(f"{'size':>6} {'engine':>10} {'reference':>10} {'ratio':>7}")
    for size in args.sizes:
        ours_per_eval(stylizer, size, 2)  # trace and warm up this shape
        ours, ref = [], []
        for _ in range(args.repeats):
            ref.append(reference_per_eval(stylizer, size, args.evaluations))
            ours.append(ours_per_eval(stylizer, size, args.evaluations))
        o, r = statistics.median(ours), statistics.median(ref)
        report["per_evaluation"][size] = {"engine": o, "reference": r, "ratio": o / r}  # type: ignore[index]
        print(f"{size:>6} {o:>10.4f} {r:>10.4f} {o / r:>7.3f}")

    print(f"\nfinal loss after {args.final_evaluations} evaluations at {args.final_size} px")
    final = final_losses(stylizer, args.final_size, args.final_evaluations)
    final["ratio"] = final["ours_loss"] / final["reference_loss"]
    report["final_loss"] = final
    print(
        f"engine (one L-BFGS run): {final['ours_loss']:.6g} "
        f"({final['ours_evaluations']:.0f} evaluations)\n"
        f"reference (10 x 20 restarts): {final['reference_loss']:.6g} "
        f"({final['reference_evaluations']:.0f} evaluations)\n"
        f"ratio: {final['ratio']:.3f}"
    )

    print(f"\npeak RSS at {args.rss_size} px (fresh process each)")
    rss = {k: probed_peak_rss_mib(k, args.rss_size, args.weights) for k in ("ours", "reference")}
    report["peak_rss_mib"] = rss
    print(f"engine: {rss['ours']:.0f} MiB, reference: {rss['reference']:.0f} MiB")
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        report["gpu_peak_mib"] = peak
        print(f"GPU memory peak (this process, all sizes): {peak:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
