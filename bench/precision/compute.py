"""Parts about raw compute: `--part flops` (an evaluation's FLOPs against the measured time and
the CPU's peak) and `--part bounds` (L-BFGS-B's fixed cost with pixel bounds)."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.precision.cases import BFLOAT16, FLOAT32, PAIRS, load, stylizer_for
from styletx.options import StyleOptions


def evaluation_flops(size: tuple[int, int], options: StyleOptions) -> int:
    """FLOPs of one evaluation: VGG16's 3x3 convolutions up to the deepest layer `options`
    use, at `size` (height, width; 'same' padding, 2x2 pools flooring), forward (2 FLOPs per
    multiply-add) plus the gradient with respect to the input (as many again)."""
    from styletx.options import VGG16_LAYERS

    used = {options.content_layer, *options.style_layers}
    deepest = max(VGG16_LAYERS.index(layer) for layer in used)
    height, width = size
    channels, block, forward = 3, 1, 0
    for layer in VGG16_LAYERS[: deepest + 1]:
        layer_block = int(layer[5])
        if layer_block != block:  # a 2x2 pooling between blocks
            height, width, block = height // 2, width // 2, layer_block
        out = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}[layer_block]
        forward += 2 * 9 * channels * out * height * width
        channels = out
    return 2 * forward


def _cpu_ghz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith("cpu mhz"):
            return float(line.split(":")[1]) / 1000.0
    return 0.0


def gemm_gflops(dtype: str, n: int = 2048, repeats: int = 7) -> float:
    """GFLOP/s of an n x n x n matrix product in `dtype` on TensorFlow's CPU kernels (oneDNN),
    its fastest of `repeats`: the practical peak of the chip for that precision, beside the
    datasheet's."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (tf.cast(tf.constant(rng.normal(size=(n, n)), tf.float32), dtype) for _ in range(2))
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[0, :1], tf.float32)))
    matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - began)
    return 2 * n**3 / min(times) / 1e9


def part_flops(args: argparse.Namespace) -> list[dict[str, Any]]:
    stylizers = {p: stylizer_for(args.weights, p) for p in (FLOAT32, BFLOAT16)}
    content_path, style_path = PAIRS["chelsea_starry_night"]
    from styletx import images

    content = images.resize_to(load(content_path), args.size, args.size)
    style = images.resize_to(load(style_path), args.size, args.size)
    options = StyleOptions.from_preset("fast", seed=0, size=args.size, max_evaluations=10)
    flops = evaluation_flops((args.size, args.size), options)
    durations: dict[str, list[float]] = {p: [] for p in stylizers}
    for stylizer in stylizers.values():
        stylizer.stylize(content, [style], options.replace(max_evaluations=3))
    for repeat in range(args.repeats):
        order = list(stylizers) if repeat % 2 == 0 else list(reversed(stylizers))
        for precision in order:
            stylizers[precision].stylize(
                content,
                [style],
                options,
                on_progress=lambda p, d=durations[precision]: d.extend(p.evaluation_seconds),
            )
    ghz = args.ghz or _cpu_ghz()
    cores = os.cpu_count() or 1
    peaks = {FLOAT32: args.fp32_flop_per_cycle, BFLOAT16: args.bf16_flop_per_cycle}
    gemm = {FLOAT32: gemm_gflops("float32"), BFLOAT16: gemm_gflops("bfloat16")}
    rows = []
    print(f"one evaluation at {args.size}x{args.size}: {flops / 1e9:.2f} GFLOP (convolutions)")
    for precision, seconds in durations.items():
        median = statistics.median(seconds)
        # The fastest tenth: what an evaluation takes when nothing else competes for the cores
        # (a shared machine's other work only ever adds time).
        quick = float(np.percentile(seconds, 10))
        achieved = flops / median / 1e9
        peak = cores * ghz * peaks[precision]
        rows.append(
            {
                "precision": precision,
                "gflop": flops / 1e9,
                "seconds": median,
                "seconds_p10": quick,
                "gflops": achieved,
                "gflops_p10": flops / quick / 1e9,
                "peak_gflops": peak,
                "gemm_gflops": gemm[precision],
            }
        )
        print(
            f"{precision:<15} {median:.3f} s/evaluation (fastest tenth {quick:.3f} s: "
            f"{flops / quick / 1e9:.0f} GFLOP/s) -> {achieved:.0f} GFLOP/s; datasheet "
            f"peak {cores} cores x {ghz:.2f} GHz x {peaks[precision]} FLOP/cycle = {peak:.0f} "
            f"GFLOP/s ({achieved / peak:.0%}); a 2048^3 matrix product: "
            f"{gemm[precision]:.0f} GFLOP/s ({achieved / gemm[precision]:.0%})",
            flush=True,
        )
    return rows


def part_bounds(args: argparse.Namespace) -> list[dict[str, Any]]:
    """L-BFGS-B's fixed cost per job with pixel bounds, scipy's loop against ours."""
    from scipy.optimize import fmin_l_bfgs_b

    from styletx.optimize import minimize

    n = args.size * args.size * 3
    lower, upper = np.zeros(n), np.full(n, 255.0)
    x0 = np.full(n, 100.0)

    def quadratic(x: np.ndarray) -> tuple[float, np.ndarray]:
        return float(np.sum((x - 3.0) ** 2)), 2.0 * (x - 3.0)

    def scipy_bounded() -> None:
        box = np.stack([lower, upper], axis=1)
        fmin_l_bfgs_b(quadratic, x0, maxfun=2, factr=0.0, pgtol=0.0, bounds=box)

    def scipy_unbounded() -> None:
        fmin_l_bfgs_b(quadratic, x0, maxfun=2, factr=0.0, pgtol=0.0)

    def ours() -> None:
        minimize(lambda x: ((quadratic(x)[0],), quadratic(x)[1]), x0, max_evaluations=2,
                 bounds=(lower, upper))  # fmt: skip

    runs = {"fmin_l_bfgs_b, bounds": scipy_bounded, "fmin_l_bfgs_b, no bounds": scipy_unbounded,
            "styletx.optimize, bounds": ours}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    rows = []
    print(f"{n} variables ({args.size}x{args.size}x3), 2 evaluations of a quadratic:")
    for name, values in times.items():
        rows.append({"run": name, "seconds": statistics.median(values)})
        print(f"  {name:<26} {statistics.median(values):.3f} s (median of {args.repeats})")
    return rows
