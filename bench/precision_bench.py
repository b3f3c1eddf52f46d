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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from styletx.options import StyleOptions  # noqa: E402
from styletx.precision import GUARD_TOLERANCE, PrecisionPolicy  # noqa: E402
from styletx.presets import PRESETS  # noqa: E402
from tests.support.rss import peak_rss  # noqa: E402

EXAMPLES = ROOT / "examples"
#: name -> (content, style): three pairs, each photo with another painting.
PAIRS: dict[str, tuple[Path, Path]] = {
    "chelsea_starry_night": (
        EXAMPLES / "content_chelsea.png",
        EXAMPLES / "style_starry_night.jpg",
    ),
    "coffee_the_scream": (EXAMPLES / "content_coffee.png", EXAMPLES / "style_the_scream.jpg"),
    "rocket_shipwreck": (EXAMPLES / "content_rocket.jpg", EXAMPLES / "style_shipwreck.jpg"),
}
#: name -> option overrides of each case beyond its preset.
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "swap": {"preserve_colors": "swap"},
    "luminance": {"preserve_colors": "luminance"},
    "style_scale_1.5": {"style_scale": 1.5},
}
BFLOAT16 = "mixed_bfloat16"
FLOAT32 = "float32"


def _load(path: Path) -> np.ndarray:
    from styletx import images

    return images.decode_image(path)


def _stylizer(weights: str | None, precision: str) -> Any:
    from styletx.engine import Stylizer

    return Stylizer(weights, precision=precision)


def case_options(preset: str, variant: str, size: int, evaluations: int | None) -> StyleOptions:
    """The options of one guard case (seed 0; `evaluations` caps the preset's budget)."""
    options = StyleOptions.from_preset(preset, seed=0, size=size, **VARIANTS[variant])
    if evaluations is not None:
        options = options.replace(max_evaluations=min(evaluations, options.max_evaluations))
    return options


def auto_choice(options: StyleOptions) -> str:
    """What `auto` runs this case at on a device with native bfloat16."""
    return PrecisionPolicy("auto", True, "bench").for_job(options)


# --- guard -------------------------------------------------------------------------------------


def part_guard(args: argparse.Namespace) -> list[dict[str, Any]]:
    stylizers = {p: _stylizer(args.weights, p) for p in (FLOAT32, BFLOAT16)}
    scorer = stylizers[FLOAT32]
    for stylizer in stylizers.values():
        stylizer.warmup()
    rows: list[dict[str, Any]] = []
    print(
        f"{'preset':<10} {'pair':<22} {'variant':<16} {'evals':>5} {'f32 s/ev':>8} "
        f"{'bf16 s/ev':>9} {'x':>6} {'f32 loss':>11} {'bf16 loss':>11} {'x':>7} {'pass':>5} "
        f"{'auto':>15}",
        flush=True,
    )
    index = 0
    for preset in args.preset or list(PRESETS):
        for pair in args.pair or list(PAIRS):
            content, style = (_load(p) for p in PAIRS[pair])
            for variant in args.variant or list(VARIANTS):
                options = case_options(preset, variant, args.size, args.max_evaluations)
                # The shapes' kernels and padded first runs, before timing either precision.
                for stylizer in stylizers.values():
                    warm = options.replace(max_evaluations=2)
                    stylizer.stylize(content, [style], warm)
                    stylizer.stylize(content, [style], warm)
                order = [FLOAT32, BFLOAT16] if index % 2 == 0 else [BFLOAT16, FLOAT32]
                index += 1
                runs: dict[str, Any] = {}
                for precision in order:
                    runs[precision] = stylizers[precision].stylize(content, [style], options)
                scores = {
                    p: float(scorer.evaluate(content, [style], r.image, options).total)
                    for p, r in runs.items()
                }
                speed = {p: r.seconds_per_evaluation for p, r in runs.items()}
                loss_ratio = scores[BFLOAT16] / scores[FLOAT32]
                passed = loss_ratio <= 1.0 + GUARD_TOLERANCE
                auto = auto_choice(options)
                row = {
                    "preset": preset,
                    "pair": pair,
                    "variant": variant,
                    "options": options.as_dict(),
                    "evaluations": options.max_evaluations,
                    "seconds_per_evaluation": speed,
                    "speed_ratio": speed[BFLOAT16] / speed[FLOAT32],
                    "loss": scores,
                    "loss_ratio": loss_ratio,
                    "passed": passed,
                    "auto": auto,
                    "rule_violated": (not passed) and auto != FLOAT32,
                }
                rows.append(row)
                if args.json:  # after every case: a long run cut short keeps what it measured
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    partial = {"size": args.size, "guard": rows}
                    args.json.write_text(json.dumps(partial, indent=1, default=str) + "\n")
                flag = " RULE VIOLATED" if row["rule_violated"] else ""
                print(
                    f"{preset:<10} {pair:<22} {variant:<16} {options.max_evaluations:>5} "
                    f"{speed[FLOAT32]:>8.3f} {speed[BFLOAT16]:>9.3f} {row['speed_ratio']:>6.3f} "
                    f"{scores[FLOAT32]:>11.5g} {scores[BFLOAT16]:>11.5g} {loss_ratio:>7.4f} "
                    f"{'yes' if passed else 'NO':>5} {auto:>15}{flag}",
                    flush=True,
                )
    _guard_summary(rows)
    return rows


def _guard_summary(rows: Sequence[dict[str, Any]]) -> None:
    print("\nper preset: cases passed, worst bf16/f32 loss, median bf16/f32 s/evaluation")
    for preset in dict.fromkeys(r["preset"] for r in rows):
        mine = [r for r in rows if r["preset"] == preset]
        passed = sum(r["passed"] for r in mine)
        worst = max(r["loss_ratio"] for r in mine)
        speed = statistics.median(r["speed_ratio"] for r in mine)
        auto = ", ".join(sorted({r["auto"] for r in mine}))
        print(
            f"  {preset:<10} {passed}/{len(mine)} passed, worst {worst:.4f}, "
            f"speed {speed:.3f}, auto: {auto}"
        )
    violations = [r for r in rows if r["rule_violated"]]
    print(
        f"auto's rule (styletx.precision.float32_reason): "
        f"{'consistent with every case' if not violations else f'{len(violations)} VIOLATIONS'}"
    )


# --- cli ---------------------------------------------------------------------------------------


def part_cli(args: argparse.Namespace) -> list[dict[str, Any]]:
    content_path, style_path = PAIRS["chelsea_starry_night"]
    scorer = _stylizer(args.weights, FLOAT32)
    content, style = _load(content_path), _load(style_path)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            settings = ["auto", FLOAT32] if repeat % 2 == 0 else [FLOAT32, "auto"]
            for setting in settings:
                out = Path(tmp) / f"{setting}_{repeat}.png"
                stats_path = Path(tmp) / f"{setting}_{repeat}.json"
                command = [
                    sys.executable, "-m", "styletx", "stylize", str(content_path),
                    str(style_path), "-o", str(out), "--preset", "fast", "--precision",
                    setting, "--seed", "0", "--size", str(args.size), "--no-progress",
                    "--stats-json", str(stats_path),
                ]  # fmt: skip
                if args.weights:
                    command += ["--weights", args.weights]
                subprocess.run(command, check=True, capture_output=True)
                stats = json.loads(stats_path.read_text())
                options = StyleOptions.from_preset("fast", seed=0, size=args.size)
                score = float(scorer.evaluate(content, [style], _load(out), options).total)
                row = {
                    "setting": setting,
                    "repeat": repeat,
                    "precision": stats["precision"],
                    "evaluation_seconds_median": stats["evaluation_seconds_median"],
                    "seconds_per_evaluation": stats["seconds_per_evaluation"],
                    "seconds": stats["seconds"],
                    "score": score,
                }
                rows.append(row)
                print(
                    f"--precision {setting:<8} -> {row['precision']:<15} "
                    f"eval median {row['evaluation_seconds_median']:.3f} s, "
                    f"s/evaluation {row['seconds_per_evaluation']:.3f}, "
                    f"job {row['seconds']:.1f} s, "
                    f"float32 score {score:.5g}",
                    flush=True,
                )

    def paired(key: str) -> list[float]:
        """auto / float32 of `key` per repeat (the two ran back to back)."""
        by = {(r["setting"], r["repeat"]): r[key] for r in rows}
        return [by["auto", i] / by[FLOAT32, i] for i in range(args.repeats)]

    def fastest(key: str) -> float:
        """auto's fastest run / float32's: the least disturbed by other work on the machine."""
        best = {s: min(r[key] for r in rows if r["setting"] == s) for s in ("auto", FLOAT32)}
        return float(best["auto"] / best[FLOAT32])

    ratio = statistics.median(paired("evaluation_seconds_median"))
    whole = statistics.median(paired("seconds_per_evaluation"))
    loss = statistics.median(paired("score"))
    picked = sorted({r["precision"] for r in rows if r["setting"] == "auto"})
    print(
        f"\nauto picked {', '.join(picked)}; auto/float32, median of the {args.repeats} "
        f"back-to-back pairs: evaluation {ratio:.3f}x (s/evaluation with L-BFGS {whole:.3f}x), "
        f"final loss {loss:.4f}x; fastest runs: evaluation "
        f"{fastest('evaluation_seconds_median'):.3f}x"
    )
    return rows


# --- memory ------------------------------------------------------------------------------------


def memory_probe(args: argparse.Namespace) -> None:
    """One fresh process: the peak RSS growth of one job (prints one JSON line)."""
    from styletx import images

    precision, size = args.memory_probe[0], int(args.memory_probe[1])
    stylizer = _stylizer(args.weights, precision)
    stylizer.warmup()
    content_path, style_path = PAIRS["chelsea_starry_night"]
    content = images.resize_to(_load(content_path), size, size)
    style = images.resize_to(_load(style_path), size, size)
    baseline = peak_rss()
    options = StyleOptions.from_preset("fast", seed=0, size=size, max_evaluations=5)
    stylizer.stylize(content, [style], options)
    print(json.dumps({"precision": precision, "size": size, "growth": peak_rss() - baseline}))


def part_memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    from styletx.memory import MemoryModel

    rows: list[dict[str, Any]] = []
    for size in args.memory_sizes:
        for precision in (FLOAT32, BFLOAT16):
            command = [sys.executable, __file__, "--memory-probe", precision, str(size)]
            if args.weights:
                command += ["--weights", args.weights]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{precision:<15} {size:>4} px: +{row['growth'] / 2**20:.0f} MiB", flush=True)
    models = {
        p: MemoryModel.fit([(r["size"] ** 2, r["growth"]) for r in rows if r["precision"] == p])
        for p in (FLOAT32, BFLOAT16)
    }
    for precision, model in models.items():
        print(f"{precision}: {model.per_pixel:.0f} B/px + {model.fixed / 2**20:.0f} MiB")
    share = models[BFLOAT16].per_pixel / models[FLOAT32].per_pixel
    print(
        f"bfloat16 keeps {share:.3f} of float32's bytes per pixel: 16-bit share "
        f"{2 * (1 - share):.3f} (memory.SIXTEEN_BIT_SHARE)"
    )
    return rows


# --- flops -------------------------------------------------------------------------------------


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
    stylizers = {p: _stylizer(args.weights, p) for p in (FLOAT32, BFLOAT16)}
    content_path, style_path = PAIRS["chelsea_starry_night"]
    from styletx import images

    content = images.resize_to(_load(content_path), args.size, args.size)
    style = images.resize_to(_load(style_path), args.size, args.size)
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


# --- bounds ------------------------------------------------------------------------------------


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


# --- main --------------------------------------------------------------------------------------


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
