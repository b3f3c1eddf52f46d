"""Pure logic of `bench/quality_bench.py` (unit-tested on synthetic curves): recorded runs, where
a run first reaches a target loss, full-size-equivalent evaluations, and the method and target
specifications of the command line."""

from __future__ import annotations

import statistics
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from styletx.options import StyleOptions

#: The tutorial's way (`bench/reference.py`), the run whose final loss is the default target.
REFERENCE_WAY = "reference-way"
#: `--target` naming the tutorial's final loss.
TUTORIAL_TARGET = "tutorial"
#: Method-spec keys that are not `StyleOptions` fields but engine constants the bench varies for
#: one run (`bench.quality.runs.knobs`): `first_step` (`styletx.scales.FIRST_STEP`, pixel levels
#: RMS of L-BFGS-B's first trial step of a bounded job; `none`: scipy's own `x - g`) and
#: `coarse_evaluations` (evaluations of each coarser scale, instead of an even split).
KNOBS = ("first_step", "coarse_evaluations")


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
    #: CPU seconds of this process when it was reached (less sensitive than `seconds` to other
    #: processes on a busy machine).
    cpu_seconds: float = 0.0


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
    #: Seconds of each loss-and-gradient evaluation (how busy the machine was during the run).
    evaluation_seconds: list[float] = field(default_factory=list)
    #: CPU seconds of this process over the run.
    cpu_seconds: float = 0.0

    @property
    def median_evaluation(self) -> float | None:
        return statistics.median(self.evaluation_seconds) if self.evaluation_seconds else None


@dataclass(frozen=True)
class Crossing:
    """Where a trace first reached the target loss (None fields: never)."""

    index: int | None
    seconds: float | None
    evaluations: int | None
    full_equivalent: float | None
    cpu_seconds: float | None = None


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
    return Crossing(index, hit.seconds, hit.evaluations, hit.full_equivalent, hit.cpu_seconds)


def iterate_at(trace: Trace, evaluations: int) -> Iterate:
    """The last full-size iterate `trace` reached within `evaluations` evaluations."""
    reached = [it for it in trace.iterates if it.full_size and it.evaluations <= evaluations]
    if not reached:
        raise ValueError(f"{trace.method}: no full-size iterate within {evaluations} evaluations")
    return reached[-1]


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


def split_knobs(spec: str) -> tuple[str, dict[str, Any]]:
    """`preset,first_step=6,lbfgs_memory=5` -> (`preset,lbfgs_memory=5`, {"first_step": 6.0}).

    The knobs (`KNOBS`) are taken out of a method spec; the rest is `parse_method`'s.
    `first_step=none` is L-BFGS-B's own first step; `coarse_evaluations` must be >= 1.
    """
    kept: list[str] = []
    knobs: dict[str, Any] = {}
    for part in (p.strip() for p in spec.split(",")):
        name, sep, raw = part.partition("=")
        if not sep or name not in KNOBS:
            kept.append(part)
        elif name == "first_step":
            knobs[name] = None if raw.lower() == "none" else float(raw)
            if knobs[name] is not None and not knobs[name] > 0:
                raise ValueError(f"{spec!r}: first_step must be > 0 or none")
        else:
            knobs[name] = int(raw)
            if knobs[name] < 1:
                raise ValueError(f"{spec!r}: coarse_evaluations must be >= 1")
    return ",".join(kept), knobs


def parse_target(spec: str, methods: Sequence[str]) -> tuple[str, int] | None:
    """`--target`: None for the tutorial's final loss, or (method, N) for `method:N`, the score
    of that method's last full-size iterate within N evaluations (the method one of `methods`)."""
    if spec == TUTORIAL_TARGET:
        return None
    method, sep, raw = spec.rpartition(":")
    if not sep or not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"--target {spec!r}: '{TUTORIAL_TARGET}' or 'METHOD:EVALUATIONS'")
    if method not in methods:
        raise ValueError(f"--target {spec!r}: {method!r} is not one of the --method specs")
    return method, int(raw)


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
