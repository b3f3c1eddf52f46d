"""`--part guard`: every case in float32 and in mixed_bfloat16, both pictures scored with one
float32 loss."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from typing import Any

from bench.precision.cases import (
    BFLOAT16,
    FLOAT32,
    PAIRS,
    VARIANTS,
    auto_choice,
    case_options,
    load,
    stylizer_for,
)
from styletx.precision import GUARD_TOLERANCE
from styletx.presets import PRESETS


def part_guard(args: argparse.Namespace) -> list[dict[str, Any]]:
    stylizers = {p: stylizer_for(args.weights, p) for p in (FLOAT32, BFLOAT16)}
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
            content, style = (load(p) for p in PAIRS[pair])
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
