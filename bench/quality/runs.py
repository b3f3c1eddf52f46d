"""Timed runs of `bench/quality_bench.py`: the inputs, one engine method's run, the tutorial's
way, and the engine constants a method spec may vary for its run (`knobs`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.scoring import REFERENCE_WAY, Iterate, Trace, full_equivalent
from styletx.options import StyleOptions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: name -> (content, style): the project's three example pairs, each photo with another painting
#: (`examples/PROVENANCE.md`); the first is the quality benchmark's own.
PAIRS: dict[str, tuple[Path, Path]] = {
    "chelsea_starry_night": (
        EXAMPLES / "content_chelsea.png",
        EXAMPLES / "style_starry_night.jpg",
    ),
    "coffee_the_scream": (EXAMPLES / "content_coffee.png", EXAMPLES / "style_the_scream.jpg"),
    "rocket_shipwreck": (EXAMPLES / "content_rocket.jpg", EXAMPLES / "style_shipwreck.jpg"),
    # Pairs `fast` was not tuned on: every subject with a second style, and a portrait.
    "chelsea_the_scream": (EXAMPLES / "content_chelsea.png", EXAMPLES / "style_the_scream.jpg"),
    "coffee_shipwreck": (EXAMPLES / "content_coffee.png", EXAMPLES / "style_shipwreck.jpg"),
    "rocket_starry_night": (
        EXAMPLES / "content_rocket.jpg",
        EXAMPLES / "style_starry_night.jpg",
    ),
    "astronaut_starry_night": (
        EXAMPLES / "content_astronaut.png",
        EXAMPLES / "style_starry_night.jpg",
    ),
    "astronaut_shipwreck": (
        EXAMPLES / "content_astronaut.png",
        EXAMPLES / "style_shipwreck.jpg",
    ),
}
DEFAULT_PAIR = "chelsea_starry_night"


def load_inputs(pair: str, size: int, keep_aspect: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Content and style of `pair`, resized once (Lanczos): both to the tutorial's size x size
    square (its way pushes them through VGG16 in one batch, so they share a shape), or, with
    `keep_aspect`, the content to `size` on its longest side and the style as it is (the engine
    sizes it, as a service does)."""
    from styletx import images

    content_path, style_path = PAIRS[pair]
    content = images.decode_image(content_path)
    style = images.decode_image(style_path)
    if keep_aspect:
        h, w = content.shape[:2]
        scale = size / max(h, w)
        return images.resize_to(content, round(h * scale), round(w * scale)), style
    return images.resize_to(content, size, size), images.resize_to(style, size, size)


@contextlib.contextmanager
def knobs(values: dict[str, Any]) -> Iterator[None]:
    """Run with the engine's `first_step` and scale budget split set as a method spec asks.

    A bench-side override of module globals of `styletx.scales` (read at every job), put back
    afterwards: `FIRST_STEP` (None: L-BFGS-B's own `x - g`) and `split_budget` (each coarser
    scale gets `coarse_evaluations`, the finest the rest).
    """
    from styletx import scales

    saved = scales.FIRST_STEP, scales.split_budget
    if "first_step" in values:
        setattr(scales, "FIRST_STEP", values["first_step"])  # noqa: B010 (None is not a float)
    if "coarse_evaluations" in values:
        coarse = int(values["coarse_evaluations"])

        def split(total: int, parts: int) -> list[int]:
            if parts > 1 and coarse * (parts - 1) >= total:
                raise ValueError(f"{coarse} coarse evaluations leave none of {total}")
            return [*([coarse] * (parts - 1)), total - coarse * (parts - 1)]

        scales.split_budget = split
    try:
        yield
    finally:
        scales.FIRST_STEP, scales.split_budget = saved


def run_engine(
    stylizer: Any, content: np.ndarray, style: np.ndarray, method: str, options: StyleOptions
) -> Trace:
    """One timed engine run with a preview at every iteration (the iterates scored later)."""
    options = options.replace(preview_every=1)
    steps: list[tuple[float, float, int, np.ndarray]] = []
    durations: list[float] = []

    def on_progress(p: Any) -> None:
        durations.extend(p.evaluation_seconds)
        if p.preview is not None:
            cpu = time.process_time() - cpu_started
            steps.append((p.elapsed_seconds, cpu, p.evaluations, p.preview))

    cpu_started = time.process_time()
    started = time.perf_counter()
    result = stylizer.stylize(content, [style], options, on_progress=on_progress)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    full = result.image.shape[:2]
    equivalents = full_equivalent(
        [(e, img.shape[:2]) for _, _, e, img in steps] + [(result.evaluations, full)], full
    )
    iterates = [
        Iterate(s, e, fe, img, img.shape[:2] == full, cpu)
        for (s, cpu, e, img), fe in zip(steps, equivalents, strict=False)
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
        evaluation_seconds=durations,
        cpu_seconds=cpu_seconds,
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
    recorded: list[tuple[float, float, int, np.ndarray]] = []
    durations: list[float] = []

    def loss(x: np.ndarray) -> float:
        begun = time.perf_counter()
        value = ev.loss(x)
        durations.append(time.perf_counter() - begun)
        return value

    cpu_started = time.process_time()
    started = time.perf_counter()

    def callback(xk: np.ndarray) -> None:
        cpu = time.process_time() - cpu_started
        recorded.append((time.perf_counter() - started, cpu, ev.evaluations, xk.copy()))

    x = x0
    for _ in range(rounds):  # bench/reference.py's reference_schedule, with a callback
        x, _, _ = fmin_l_bfgs_b(loss, x, fprime=ev.grads, maxfun=maxfun, callback=callback)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    iterates = [
        Iterate(s, e, float(e), vgg.deprocess(xk.reshape(h, w, 3)), True, cpu)
        for s, cpu, e, xk in recorded
    ]
    return Trace(
        method=REFERENCE_WAY,
        iterates=iterates,
        seconds=seconds,
        evaluations=ev.evaluations,
        full_equivalent=float(ev.evaluations),
        final=vgg.deprocess(x.reshape(h, w, 3)),
        options={"rounds": rounds, "maxfun": maxfun, **options.as_dict()},
        evaluation_seconds=durations,
        cpu_seconds=cpu_seconds,
    )


def warm_up(stylizer: Any, content: np.ndarray, style: np.ndarray, options: StyleOptions) -> None:
    """Trace this option set's shapes before timing it (a server is warm too)."""
    stylizer.stylize(content, [style], options.replace(max_evaluations=2 * options.scales))
