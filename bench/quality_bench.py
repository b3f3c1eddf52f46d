"""Quality benchmark: seconds until each method reaches the reference tutorial's final loss.

Side by side in one run, on identical input pixels (content and style resized once, with one
filter, to the square the tutorial uses, and the same arrays handed to every method):

- `reference-way`: the tutorial's way (`bench/reference.py`): content, style and image through
  VGG16 together at every evaluation, 10 x `fmin_l_bfgs_b(maxfun=20)` with default tolerances;
- each engine method: a preset (`reference`, `fast`, `high`), optionally with option overrides.

Every method's iterates are recorded with their elapsed time while it runs (the engine's previews
at every iteration; the reference's iterates from scipy's callback) and scored afterwards with ONE
loss function, `Stylizer.evaluate` with the reference's options on the full-size image, so scoring
never counts in the time. The target is the reference's scored final loss; the table gives, per
method, evaluations (and full-size-equivalent evaluations: a coarse-scale evaluation at half the
side costs about a quarter) and seconds until a full-size iterate first scores at or under it,
and those seconds as a multiple of the reference way's whole run.

Engine methods run at `--precision` (default `auto`, what the CLI and the server run: bfloat16
for `fast` and `high` where the CPU has it); `method@float32` runs one method at another
precision. Every picture is scored in float32.

Usage: python bench/quality_bench.py [--size 260] [--method fast --method 'fast,scales=3' ...]
       [--method fast@float32] [--json out/quality.json] [--images out/quality] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from styletx.options import StyleOptions  # noqa: E402

CONTENT = ROOT / "examples" / "content_chelsea.png"
STYLE = ROOT / "examples" / "style_starry_night.jpg"
REFERENCE_WAY = "reference-way"
DEFAULT_METHODS = ("reference", "fast", "high")


@dataclass
class Iterate:
    """One recorded iterate: when it was reached and at what cost, and its image."""

    seconds: float
    evaluations: int
    #: Evaluations weighted by their pixel count relative to the full size (coarse ones cost less).
    full_equivalent: float
    image: np.ndarray
    #: Whether the iterate is at the output's full size (only those can count as the result).
    full_size: bool = True


@dataclass
class Trace:
    """Everything one method did in its timed run."""

    method: str
    iterates: list[Iterate]
    seconds: float
    evaluations: int
    full_equivalent: float
    final: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)
    #: Precision the method ran at (the engine's `auto` resolves per job; the tutorial: float32).
    precision: str = "float32"


@dataclass(frozen=True)
class Crossing:
    """Where a trace first reached the target loss (None fields: never)."""

    index: int | None
    seconds: float | None
    evaluations: int | None
    full_equivalent: float | None


# --- pure logic (unit-tested on synthetic curves) ----------------------------------------------


def first_crossing(
    count: int, target: float, score: Callable[[int], float], stride: int = 1
) -> int | None:
    """Index of the first of `count` iterates whose score is <= `target`, or None.

    Scores every `stride`-th iterate (and the last), then every iterate between the first one
    found at or under `target` and the previous one scored. With stride 1 that is every iterate,
    which is exact: the scored curve is not monotone (the optimiser's loss is, but the image it
    delivers is rounded and clipped to 0..255, which can undo part of a step), so a bisection
    would land on whichever crossing its probes happen to meet. A larger stride trades that
    exactness for fewer scores (each a VGG16 pass) on long runs.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if count == 0:
        return None
    grid = [*range(0, count - 1, stride), count - 1]
    previous = -1
    for index in grid:
        if score(index) <= target:
            return next(i for i in range(previous + 1, index + 1) if score(i) <= target)
        previous = index
    return None


def crossing(
    trace: Trace, target: float, score: Callable[[np.ndarray], float], stride: int = 1
) -> Crossing:
    """Seconds and evaluations at which `trace` first reached `target` at full size."""
    full = [it for it in trace.iterates if it.full_size]
    cache: dict[int, float] = {}

    def score_at(index: int) -> float:
        if index not in cache:
            cache[index] = score(full[index].image)
        return cache[index]

    index = first_crossing(len(full), target, score_at, stride)
    if index is None:
        return Crossing(None, None, None, None)
    hit = full[index]
    return Crossing(index, hit.seconds, hit.evaluations, hit.full_equivalent)


def full_equivalent(
    steps: Sequence[tuple[int, tuple[int, int]]], full_size: tuple[int, int]
) -> list[float]:
    """Cumulative full-size-equivalent evaluations of (cumulative evaluations, image size) steps.

    Each step's new evaluations are charged at its image's share of the full size's pixels,
    which is what an evaluation costs (VGG16's work is proportional to the pixel count).
    """
    pixels = full_size[0] * full_size[1]
    out: list[float] = []
    done, total = 0, 0.0
    for evaluations, (h, w) in steps:
        total += (evaluations - done) * (h * w) / pixels
        done = evaluations
        out.append(total)
    return out


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """`preset[,option=value...]` -> (preset, overrides), values typed after `StyleOptions`.

    Tuple options take `+`-separated items (`style_layers=block1_conv2+block2_conv2`).
    """
    preset, *pairs = [part.strip() for part in spec.split(",") if part.strip()]
    hints = typing.get_type_hints(StyleOptions)
    overrides: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in hints:
            raise ValueError(f"{spec!r}: {pair!r} is not option=value for a StyleOptions field")
        overrides[name] = _typed(hints[name], raw)
    return preset, overrides


def _typed(hint: Any, raw: str) -> Any:
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_typed(item, part) for part in raw.split("+") if part)
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    if raw.lower() == "none" and type(None) in typing.get_args(hint):
        return None
    if kinds[0] is bool:
        return raw.lower() in ("1", "true", "yes")
    if kinds[0] in (int, float):
        return kinds[0](raw)
    return raw


# --- runs ----------------------------------------------------------------------------------------


def load_inputs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Content and style resized once (Lanczos) to the tutorial's size x size square."""
    from styletx import images

    content = images.resize_to(images.decode_image(CONTENT), size, size)
    style = images.resize_to(images.decode_image(STYLE), size, size)
    return content, style


def run_engine(
    stylizer: Any, content: np.ndarray, style: np.ndarray, method: str, options: StyleOptions
) -> Trace:
    """One timed engine run with a preview at every iteration (the iterates scored later)."""
    options = options.replace(preview_every=1)
    steps: list[tuple[float, int, np.ndarray]] = []

    def on_progress(p: Any) -> None:
        if p.preview is not None:
            steps.append((p.elapsed_seconds, p.evaluations, p.preview))

    started = time.perf_counter()
    result = stylizer.stylize(content, [style], options, on_progress=on_progress)
    seconds = time.perf_counter() - started
    full = content.shape[:2]
    equivalents = full_equivalent(
        [(e, img.shape[:2]) for _, e, img in steps] + [(result.evaluations, full)], full
    )
    iterates = [
        Iterate(s, e, fe, img, img.shape[:2] == full)
        for (s, e, img), fe in zip(steps, equivalents, strict=False)
    ]
    return Trace(
        method=method,
        iterates=iterates,
        seconds=seconds,
        evaluations=result.evaluations,
        full_equivalent=equivalents[-1],
        final=result.image,
        options=options.as_dict(),
        precision=result.precision,
    )


def run_reference_way(
    model: Any,
    content: np.ndarray,
    style: np.ndarray,
    seed: int,
    rounds: int,
    maxfun: int,
) -> Trace:
    """The tutorial's schedule, timed, recording scipy's accepted iterates."""
    from scipy.optimize import fmin_l_bfgs_b

    from bench.reference import ReferenceEvaluator
    from styletx import vgg

    h, w = content.shape[:2]
    options = StyleOptions(size=max(h, w))
    ev = ReferenceEvaluator(model, content, style, options)
    # The tutorial's (and the engine's) random init: uniform noise in preprocessed space.
    noise = np.random.default_rng(seed).uniform(0, 255, (h, w, 3)) - 128.0
    x0 = noise.astype(np.float32).ravel().astype(np.float64)
    ev.loss(x0)  # compile outside the timing, as the engine's warm-up run does
    ev.evaluations = 0
    recorded: list[tuple[float, int, np.ndarray]] = []
    started = time.perf_counter()

    def callback(xk: np.ndarray) -> None:
        recorded.append((time.perf_counter() - started, ev.evaluations, xk.copy()))

    x = x0
    for _ in range(rounds):  # bench/reference.py's reference_schedule, with a callback
        x, _, _ = fmin_l_bfgs_b(ev.loss, x, fprime=ev.grads, maxfun=maxfun, callback=callback)
    seconds = time.perf_counter() - started
    iterates = [
        Iterate(s, e, float(e), vgg.deprocess(xk.reshape(h, w, 3))) for s, e, xk in recorded
    ]
    return Trace(
        method=REFERENCE_WAY,
        iterates=iterates,
        seconds=seconds,
        evaluations=ev.evaluations,
        full_equivalent=float(ev.evaluations),
        final=vgg.deprocess(x.reshape(h, w, 3)),
        options={"rounds": rounds, "maxfun": maxfun, **options.as_dict()},
    )


def warm_up(stylizer: Any, content: np.ndarray, style: np.ndarray, options: StyleOptions) -> None:
    """Trace this option set's shapes before timing it (a server is warm too)."""
    stylizer.stylize(content, [style], options.replace(max_evaluations=2 * options.scales))


# --- report ------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", help="VGG16 weights (default: resolved like the engine)")
    parser.add_argument("--size", type=int, default=260, help="side of the square images")
    parser.add_argument(
        "--method",
        action="append",
        help="engine method 'preset[,option=value...]' (repeatable; default: reference fast high)",
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
    specs = args.method or list(DEFAULT_METHODS)
    if args.quick:
        args.size, args.rounds = 128, 3

    from styletx import images, vgg
    from styletx.engine import Stylizer

    # --precision auto, as the CLI and the server run: jobs run at what it picks for them. A
    # method 'preset,...@float32' runs on a Stylizer of that precision instead.
    stylizers = {args.precision: Stylizer(args.weights, precision=args.precision)}
    stylizer = stylizers[args.precision]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print(f"weights: {stylizer.weights.path} ({stylizer.weights.source})")
    content, style = load_inputs(args.size)
    scoring = StyleOptions(size=args.size)
    # Every picture is scored with the tutorial's loss in float32, whatever the method ran at.
    if stylizer.precision_for(scoring) != "float32":
        stylizer_scoring = Stylizer(args.weights, precision="float32")
    else:
        stylizer_scoring = stylizer

    def score(image: np.ndarray) -> float:
        return float(stylizer_scoring.evaluate(content, [style], image, scoring).total)

    methods: list[tuple[str, StyleOptions, Any]] = []
    for spec in specs:
        method, _, precision = spec.partition("@")
        preset, overrides = parse_method(method)
        options = StyleOptions.from_preset(preset, **overrides).replace(size=args.size)
        if args.seed is not None and options.seed is None:
            options = options.replace(seed=args.seed)
        if args.quick:
            options = options.replace(max_evaluations=min(options.max_evaluations, 60))
        precision = precision or args.precision
        if precision not in stylizers:
            stylizers[precision] = Stylizer(args.weights, precision=precision)
        methods.append((spec, options, stylizers[precision]))
        warm_up(stylizers[precision], content, style, options)
    score(content)  # trace the scoring function too

    model = vgg.build_vgg16(stylizer.weights.path)
    traces = [run_reference_way(model, content, style, args.seed, args.rounds, args.maxfun)]
    for spec, options, runner in methods:
        traces.append(run_engine(runner, content, style, spec, options))

    # Scoring, after every timed run.
    finals = [stylizer_scoring.evaluate(content, [style], t.final, scoring) for t in traces]
    target = finals[0].total
    crossings = [crossing(t, target, score, args.score_stride) for t in traces]
    # "The reference's time" is its whole run: what the tutorial makes a user wait for the picture
    # whose loss is the target. (Its own scored curve can dip to that loss earlier: the image it
    # delivers is clipped to 0..255, so the score is not monotone; its row shows where.)
    reference_seconds = traces[0].seconds

    print(
        f"\n{args.size} px, target = the reference way's final loss {target:.5g} "
        f"({traces[0].evaluations} evaluations, {reference_seconds:.1f} s)"
    )
    print(
        "to target: evaluations, full-size-equivalent evaluations, seconds, seconds / the "
        "reference way's run;\nthen the final image's scored losses (total / target) and the "
        "run (evaluations, seconds, / the reference way's run)"
    )
    print(
        f"{'method':<34} {'evals':>6} {'full-eq':>8} {'seconds':>8} {'x ref':>6} "
        f"{'final loss':>11} {'x tgt':>6} {'content':>10} {'style':>10} {'tv':>10} "
        f"{'evals':>6} {'seconds':>8} {'x ref':>6}"
    )
    rows = []
    for trace, hit, final in zip(traces, crossings, finals, strict=True):
        ratio = None if hit.seconds is None else hit.seconds / reference_seconds
        run_ratio = trace.seconds / reference_seconds
        tags = {"float32": "", "mixed_bfloat16": " [bf16]", "mixed_float16": " [fp16]"}
        label = trace.method + tags.get(trace.precision, f" [{trace.precision}]")
        print(
            f"{label:<34} {_fmt(hit.evaluations, 'd'):>6} "
            f"{_fmt(hit.full_equivalent, '.1f'):>8} {_fmt(hit.seconds, '.2f'):>8} "
            f"{_fmt(ratio, '.3f'):>6} {final.total:>11.5g} {final.total / target:>6.3f} "
            f"{final.content:>10.4g} {final.style:>10.4g} {final.tv:>10.4g} "
            f"{trace.evaluations:>6d} {trace.seconds:>8.2f} {run_ratio:>6.3f}"
        )
        rows.append(
            {
                "method": trace.method,
                "to_target": dataclasses.asdict(hit) | {"ratio": ratio},
                "final_losses": dataclasses.asdict(final),
                "final_vs_target": final.total / target,
                "evaluations": trace.evaluations,
                "full_equivalent": trace.full_equivalent,
                "seconds": trace.seconds,
                "run_ratio": run_ratio,
                "precision": trace.precision,
                "options": trace.options,
            }
        )
    if args.images:
        args.images.mkdir(parents=True, exist_ok=True)
        for trace in traces:
            name = trace.method.replace(",", "_").replace("=", "-").replace("+", "-")
            (args.images / f"{name}.png").write_bytes(images.encode_image(trace.final))
        strip = images.side_by_side([content, style, *(t.final for t in traces)])
        (args.images / "strip.png").write_bytes(images.encode_image(strip))
        print(f"\nimages: {args.images}/ (strip.png: content | style | methods in table order)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"size": args.size, "target": target, "methods": rows}
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
