"""Parts that run fresh processes: `--part cli` (the `styletx` command, auto against float32)
and `--part memory` (the peak RSS growth of one job, per precision and size)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.precision.cases import BFLOAT16, FLOAT32, PAIRS, load, stylizer_for
from bench.support.rss import peak_rss
from styletx.options import StyleOptions

#: The script `part_memory` runs again, in a fresh process per probe.
SCRIPT = Path(__file__).resolve().parents[1] / "precision_bench.py"


def part_cli(args: argparse.Namespace) -> list[dict[str, Any]]:
    content_path, style_path = PAIRS["chelsea_starry_night"]
    scorer = stylizer_for(args.weights, FLOAT32)
    content, style = load(content_path), load(style_path)
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
                score = float(scorer.evaluate(content, [style], load(out), options).total)
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


def memory_probe(args: argparse.Namespace) -> None:
    """One fresh process: the peak RSS growth of one job (prints one JSON line)."""
    from styletx import images

    precision, size = args.memory_probe[0], int(args.memory_probe[1])
    stylizer = stylizer_for(args.weights, precision)
    stylizer.warmup()
    content_path, style_path = PAIRS["chelsea_starry_night"]
    content = images.resize_to(load(content_path), size, size)
    style = images.resize_to(load(style_path), size, size)
    baseline = peak_rss()
    options = StyleOptions.from_preset("fast", seed=0, size=size, max_evaluations=5)
    stylizer.stylize(content, [style], options)
    print(json.dumps({"precision": precision, "size": size, "growth": peak_rss() - baseline}))


def part_memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    from styletx.memory import MemoryModel

    rows: list[dict[str, Any]] = []
    for size in args.memory_sizes:
        for precision in (FLOAT32, BFLOAT16):
            command = [sys.executable, str(SCRIPT), "--memory-probe", precision, str(size)]
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
