"""Quality benchmark: seconds until each method reaches the reference tutorial's final loss.

Side by side in one run, on identical input pixels (content and style resized once, with one
filter, to the square the tutorial uses, and the same arrays handed to every method):

- `reference-way`: the tutorial's way (`bench/reference.py`): content, style and image through
  VGG16 together at every evaluation, 10 x `fmin_l_bfgs_b(maxfun=20)` with default tolerances;
- each engine method: a preset (`reference`, `fast`, `high`), optionally with option overrides.

Runs are interleaved: for each of `--repeats` rounds and each `--pair`, the tutorial's run, then
each method's run on the same arrays, so every method is timed beside the tutorial run it is
compared with (same machine, same moment); the target of a round is that round's tutorial run.

Every method's iterates are recorded with their elapsed time (and this process's CPU time,
which other processes on a busy machine disturb less) while it runs (the engine's previews at
every iteration; the reference's iterates from scipy's callback) and scored after the round's
runs with ONE loss function, `Stylizer.evaluate` with the reference's options on the full-size
image, so scoring never counts in the time. The target is the reference's scored final loss;
the table gives, per method, evaluations (and full-size-equivalent evaluations: a coarse-scale
evaluation at half the side costs about a quarter) and seconds until a full-size iterate first
scores at or under it, and those seconds as a multiple of the reference way's whole run. Each
run's median seconds per evaluation says how busy the machine was while it ran.

Engine methods run at `--precision` (default `auto`, what the CLI and the server run: bfloat16
for `fast` and `high` where the CPU has it); `method@float32` runs one method at another
precision. Every picture is scored in float32. A method spec may also set `first_step=N|none`
(the engine's `FIRST_STEP`: L-BFGS-B's first trial step of a bounded job, pixel levels RMS;
`none` is scipy's own) and `coarse_evaluations=N` (each coarser scale's share of the budget).

`--target 'METHOD:N'` replaces the tutorial's final loss by the score METHOD's run reached
within N evaluations, in each round and pair (no tutorial run); `--keep-aspect` then runs the
content at its own aspect ratio (the tutorial's way needs squares).

Usage: python bench/quality_bench.py [--size 260] [--method fast --method 'fast,scales=3' ...]
       [--method fast@float32] [--pair coffee_the_scream ...] [--repeats 2]
       [--target 'fast,first_step=none:14' --keep-aspect]
       [--json out/quality.json] [--images out/quality] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.quality.runs import (  # noqa: E402
    DEFAULT_PAIR,
    PAIRS,
    knobs,
    load_inputs,
    run_engine,
    run_reference_way,
    warm_up,
)
from bench.quality.scoring import (  # noqa: E402
    REFERENCE_WAY,
    TUTORIAL_TARGET,
    Crossing,
    Iterate,
    Trace,
    crossing,
    first_crossing,
    full_equivalent,
    iterate_at,
    parse_method,
    parse_target,
    split_knobs,
)
from styletx.options import StyleOptions  # noqa: E402

DEFAULT_METHODS = ("reference", "fast", "high")
TAGS = {"float32": "", "mixed_bfloat16": " [bf16]", "mixed_float16": " [fp16]"}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def machine() -> str:
    """CPU model, cores, load average and the commit, for the report's Machine line."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else platform.processor() or platform.machine()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{model}, {os.cpu_count()} cpus, load {load}, commit {commit}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", help="VGG16 weights (default: resolved like the engine)")
    parser.add_argument("--size", type=int, default=260, help="side of the square images")
    parser.add_argument(
        "--method",
        action="append",
        help="engine method 'preset[,option=value...][@precision]' (repeatable; default: "
        "reference fast high); also first_step=N|none, coarse_evaluations=N",
    )
    parser.add_argument(
        "--pair", action="append", choices=list(PAIRS), help=f"repeatable (default {DEFAULT_PAIR})"
    )
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds of every pair")
    parser.add_argument(
        "--target",
        default=TUTORIAL_TARGET,
        help="'tutorial' (its final loss) or 'METHOD:N' (METHOD's score within N evaluations)",
    )
    parser.add_argument(
        "--keep-aspect", action="store_true", help="the content's aspect ratio (METHOD: targets)"
    )
    parser.add_argument("--rounds", type=int, default=10, help="reference-way L-BFGS rounds")
    parser.add_argument("--maxfun", type=int, default=20, help="reference-way maxfun per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision", default="auto", help="the engine methods' precision (default: auto)"
    )
    parser.add_argument(
        "--score-stride",
        type=int,
        default=1,
        help="score every N-th iterate, then the ones before the first hit (1 = exact)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--images", type=Path, help="write each method's final image here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 128 px, 3 rounds, budgets capped at 60"
    )
    args = parser.parse_args()
    args.method = args.method or list(DEFAULT_METHODS)
    args.pair = args.pair or [DEFAULT_PAIR]
    try:
        args.target_spec = parse_target(args.target, args.method)
    except ValueError as exc:
        parser.error(str(exc))
    if args.keep_aspect and args.target_spec is None:
        parser.error("--keep-aspect needs a 'METHOD:N' --target (the tutorial's way runs squares)")
    if args.quick:
        args.size, args.rounds = 128, 3
    return args


def main() -> int:
    args = parse_args()
    from styletx import vgg
    from styletx.engine import Stylizer

    # --precision auto, as the CLI and the server run: jobs run at what it picks for them. A
    # method 'preset,...@float32' runs on a Stylizer of that precision instead.
    stylizers = {args.precision: Stylizer(args.weights, precision=args.precision)}
    stylizer = stylizers[args.precision]
    print(f"machine: {machine()}")
    print(f"weights: {stylizer.weights.path} ({stylizer.weights.source})")
    scoring = StyleOptions(size=args.size)
    # Every picture is scored with the tutorial's loss in float32, whatever the method ran at.
    if stylizer.precision_for(scoring) != "float32":
        stylizer_scoring = Stylizer(args.weights, precision="float32")
    else:
        stylizer_scoring = stylizer
    inputs = {pair: load_inputs(pair, args.size, args.keep_aspect) for pair in args.pair}

    methods: list[tuple[str, StyleOptions, Any, dict[str, Any]]] = []
    for spec in args.method:
        method, _, precision = spec.partition("@")
        method, knob_values = split_knobs(method)
        preset, overrides = parse_method(method)
        options = StyleOptions.from_preset(preset, **overrides).replace(size=args.size)
        if args.seed is not None and options.seed is None:
            options = options.replace(seed=args.seed)
        if args.quick:
            options = options.replace(max_evaluations=min(options.max_evaluations, 60))
        precision = precision or args.precision
        if precision not in stylizers:
            stylizers[precision] = Stylizer(args.weights, precision=precision)
        methods.append((spec, options, stylizers[precision], knob_values))
        for content, style in inputs.values():
            warm_up(stylizers[precision], content, style, options)

    model = vgg.build_vgg16(stylizer.weights.path) if args.target_spec is None else None
    # Timed runs, interleaved: round by round, pair by pair, the tutorial's run then each
    # method's. Each round of a pair is scored (untimed) and printed as soon as it is done, so a
    # long run reports as it goes; the machine's state at each run shows in its s/eval column.
    report: list[dict[str, Any]] = []
    for round_index in range(args.repeats):
        for pair, (content, style) in inputs.items():
            traces = []
            if model is not None:
                traces.append(
                    run_reference_way(model, content, style, args.seed, args.rounds, args.maxfun)
                )
            for spec, options, runner, knob_values in methods:
                with knobs(knob_values):
                    traces.append(run_engine(runner, content, style, spec, options))

            def score(image: np.ndarray, _c: np.ndarray = content, _s: np.ndarray = style) -> float:
                return float(stylizer_scoring.evaluate(_c, [_s], image, scoring).total)

            pictures = (content, style)
            report.append(
                score_run(args, round_index, pair, pictures, traces, score, stylizer_scoring)
            )
            if args.images:
                write_images(args.images / f"{pair}_{round_index + 1}", content, style, traces)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                out = {"size": args.size, "machine": machine(), "argv": sys.argv[1:]}
                out["runs"] = report
                args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
            sys.stdout.flush()
    summary(report, args.target_spec is None)
    print(f"machine at the end: {machine()}")
    return 0


def score_run(
    args: argparse.Namespace,
    round_index: int,
    pair: str,
    pictures: tuple[np.ndarray, np.ndarray],
    traces: list[Trace],
    score: Any,
    stylizer_scoring: Any,
) -> dict[str, Any]:
    """Score one round of one pair, print its table and return its rows."""
    content, style = pictures
    scoring = StyleOptions(size=args.size)
    finals = [stylizer_scoring.evaluate(content, [style], t.final, scoring) for t in traces]
    tutorial = traces[0] if traces[0].method == REFERENCE_WAY else None
    if args.target_spec is None:
        assert tutorial is not None
        target = finals[0].total
        origin = f"the reference way's final loss ({tutorial.evaluations} evaluations)"
    else:
        method, n = args.target_spec
        source = next(t for t in traces if t.method == method)
        target = score(iterate_at(source, n).image)
        origin = f"{method}'s score within {n} evaluations"
    crossings = [crossing(t, target, score, args.score_stride) for t in traces]
    # "The reference's time" is its whole run: what the tutorial makes a user wait for the picture
    # whose loss is the target. (Its own scored curve can dip to that loss earlier: the image it
    # delivers is clipped to 0..255, so the score is not monotone; its row shows where.)
    base = tutorial if tutorial is not None and tutorial.seconds > 0 else None
    print(f"\nround {round_index + 1}, {pair}, {content.shape[1]}x{content.shape[0]} px")
    print(f"target {target:.5g} = {origin}")
    print(
        f"{'method':<34} {'evals':>6} {'full-eq':>8} {'seconds':>8} {'x ref':>6} {'x cpu':>6} "
        f"{'final loss':>11} {'x tgt':>6} {'content':>10} {'style':>10} {'tv':>10} "
        f"{'evals':>6} {'seconds':>8} {'s/eval':>7}"
    )
    rows = []
    for trace, hit, final in zip(traces, crossings, finals, strict=True):
        ratio = cpu_ratio = None
        if hit.seconds is not None and base is not None:
            ratio = hit.seconds / base.seconds
            cpu_ratio = (hit.cpu_seconds or 0.0) / base.cpu_seconds if base.cpu_seconds else None
        label = trace.method + TAGS.get(trace.precision, f" [{trace.precision}]")
        print(
            f"{label:<34} {_fmt(hit.evaluations, 'd'):>6} "
            f"{_fmt(hit.full_equivalent, '.1f'):>8} {_fmt(hit.seconds, '.2f'):>8} "
            f"{_fmt(ratio, '.3f'):>6} {_fmt(cpu_ratio, '.3f'):>6} "
            f"{final.total:>11.5g} {final.total / target:>6.3f} "
            f"{final.content:>10.4g} {final.style:>10.4g} {final.tv:>10.4g} "
            f"{trace.evaluations:>6d} {trace.seconds:>8.2f} "
            f"{_fmt(trace.median_evaluation, '.3f'):>7}"
        )
        rows.append(
            {
                "method": trace.method,
                "to_target": dataclasses.asdict(hit) | {"ratio": ratio, "cpu_ratio": cpu_ratio},
                "final_losses": dataclasses.asdict(final),
                "final_vs_target": final.total / target,
                "evaluations": trace.evaluations,
                "full_equivalent": trace.full_equivalent,
                "seconds": trace.seconds,
                "cpu_seconds": trace.cpu_seconds,
                "run_ratio": None if base is None else trace.seconds / base.seconds,
                "median_evaluation_seconds": trace.median_evaluation,
                "precision": trace.precision,
                "options": trace.options,
            }
        )
    return {"round": round_index + 1, "pair": pair, "target": target, "rows": rows}


def summary(report: list[dict[str, Any]], against_tutorial: bool) -> None:
    """Per pair and round, each method beside its tutorial run; then each method's range."""
    if against_tutorial:
        print(
            "\nside by side: each method's run right after the tutorial's, same pair and pixels; "
            "x = seconds (wall, then CPU of this process) to the target / the tutorial's whole run"
        )
        print(
            f"{'pair':<21} {'rnd':>3} {'target':>10} {'tutorial evals, s, cpu s, s/eval':>33}  "
            f"{'method':<24} {'evals':>5} {'s':>6} {'x':>7} {'cpu s':>6} {'x cpu':>7} {'s/eval':>6}"
        )
    ratios: dict[str, list[float]] = {}
    cpu_ratios: dict[str, list[float]] = {}
    evaluations: dict[str, list[int | None]] = {}
    for run in report:
        tutorial = run["rows"][0] if run["rows"][0]["method"] == REFERENCE_WAY else None
        for row in run["rows"]:
            if row["method"] == REFERENCE_WAY:
                continue
            hit = row["to_target"]
            name = row["method"] + TAGS.get(row["precision"], f" [{row['precision']}]")
            evaluations.setdefault(name, []).append(hit["evaluations"])
            if hit["ratio"] is not None:
                ratios.setdefault(name, []).append(hit["ratio"])
            if hit["cpu_ratio"] is not None:
                cpu_ratios.setdefault(name, []).append(hit["cpu_ratio"])
            if tutorial is not None:
                ref = (
                    f"{tutorial['evaluations']}, {tutorial['seconds']:.1f}, "
                    f"{tutorial['cpu_seconds']:.1f}, "
                    f"{_fmt(tutorial['median_evaluation_seconds'], '.3f')}"
                )
                print(
                    f"{run['pair']:<21} {run['round']:>3} {run['target']:>10.4g} {ref:>33}  "
                    f"{name:<24} {_fmt(hit['evaluations'], 'd'):>5} "
                    f"{_fmt(hit['seconds'], '.2f'):>6} {_fmt(hit['ratio'], '.4f'):>7} "
                    f"{_fmt(hit['cpu_seconds'], '.2f'):>6} {_fmt(hit['cpu_ratio'], '.4f'):>7} "
                    f"{_fmt(row['median_evaluation_seconds'], '.3f'):>6}"
                )
    print("\nper method, over every pair and round: evaluations to the target; x the tutorial")
    for name, counts in evaluations.items():
        line = f"{name:<34} evaluations {' '.join(_fmt(c, 'd') for c in counts)}"
        for label, values in (("x", ratios.get(name)), ("x cpu", cpu_ratios.get(name))):
            if values:
                line += (
                    f"; {label} {min(values):.4f}-{max(values):.4f}, "
                    f"median {statistics.median(values):.4f}"
                )
        if ratios.get(name):
            line += f" ({len(ratios[name])} of {len(counts)} runs reached it)"
        print(line)


def write_images(folder: Path, content: np.ndarray, style: np.ndarray, traces: list[Trace]) -> None:
    from styletx import images

    folder.mkdir(parents=True, exist_ok=True)
    for trace in traces:
        name = trace.method.replace(",", "_").replace("=", "-").replace("+", "-")
        (folder / f"{name.replace('@', '_')}.png").write_bytes(images.encode_image(trace.final))
    strip = images.side_by_side([content, style, *(t.final for t in traces)])
    (folder / "strip.png").write_bytes(images.encode_image(strip))
    print(f"images: {folder}/ (strip.png: content | style | methods in table order)")


__all__ = [
    "Crossing",
    "Iterate",
    "Trace",
    "crossing",
    "first_crossing",
    "full_equivalent",
    "parse_method",
]

if __name__ == "__main__":
    sys.exit(main())
