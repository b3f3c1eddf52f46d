"""In-process measurements of `bench/shape_bench.py`: (a) seconds per evaluation at one shape,
(b) what a job at a new shape costs extra."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.shapes.old_engine import Objective, OldEngine
from styletx import images
from styletx.engine import Stylizer
from styletx.objective import make_objective
from styletx.options import StyleOptions
from styletx.space import Space
from styletx.targets import style_targets

ROOT = Path(__file__).resolve().parents[2]
CONTENT = ROOT / "examples" / "content_chelsea.png"
STYLE = ROOT / "examples" / "style_starry_night.jpg"
SIZE = 260


def pictures() -> tuple[np.ndarray, np.ndarray]:
    return images.decode_image(CONTENT), images.decode_image(STYLE)


def aspect_ratios(count: int, offset: int = 0) -> list[tuple[int, int]]:
    """`count` distinct content shapes giving distinct outputs at 260 px, landscape and portrait
    in turn (with offset >= 25, none is the warm shape: the Chelsea photo's 173 x 260)."""
    shapes = []
    for i in range(offset, offset + count):
        short = 131 + 2 * (i // 2)  # 131, 133, ...: never 195
        shapes.append((short, SIZE) if i % 2 == 0 else (SIZE, short))
    return shapes


def _new_objective(stylizer: Stylizer, options: StyleOptions, base: np.ndarray, style: Any) -> Any:
    step = stylizer.step(options)
    targets = style_targets(step, base, [style], [1.0], options)
    return make_objective(step, targets, Space(base.shape[0], base.shape[1], grey=False))


def _timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of `work()`. On a shared machine
    the CPU time is the steadier figure: waiting for a core does not count."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def per_evaluation(
    stylizer: Stylizer, exact: Stylizer, old: OldEngine, evaluations: int, repeats: int
) -> dict[str, Any]:
    """(a) Median seconds per evaluation at one fixed 260 px shape, warm, interleaved."""
    content, style = pictures()
    h, w = Stylizer.output_size(content.shape[0], content.shape[1], SIZE)
    base = images.resize_to(content, h, w)
    x = np.random.default_rng(0).uniform(0, 255, (h, w, 3)).ravel() - 128.0
    objectives: dict[str, Objective] = {
        # The old engine resized the style to the output's shape; that does not change the
        # cost of an evaluation, which never touches the style image.
        "old": old.objective(old.targets(base, style), h, w),
        "padded": _new_objective(stylizer, old.options, base, style),
        "exact": _new_objective(exact, old.options, base, style),
    }
    shapes = {
        "padded": stylizer.step(old.options).run_shape(h, w),
        "exact": exact.step(old.options).run_shape(h, w),
    }
    assert shapes == {"padded": (176, 260), "exact": (h, w)}, shapes
    for objective in objectives.values():
        objective(x)  # trace / warm up outside the timing
    timed: dict[str, list[tuple[float, float]]] = {name: [] for name in objectives}
    order = list(objectives.items())
    for i in range(repeats):
        for name, objective in order[i % len(order) :] + order[: i % len(order)]:

            def run(f: Objective = objective) -> None:
                for _ in range(evaluations):
                    f(x)

            wall, cpu = _timed(run)
            timed[name].append((wall / evaluations, cpu / evaluations))
    out: dict[str, Any] = {"shape": [h, w], "padded_shape": list(shapes["padded"])}
    for k, label in enumerate(("wall", "cpu")):
        row = {name: statistics.median(t[k] for t in runs) for name, runs in timed.items()}
        row["exact_ratio"] = row["exact"] / row["old"]
        row["padded_ratio"] = row["padded"] / row["old"]
        row["padded_over_exact"] = row["padded"] / row["exact"]
        out[label] = row
    return out


def new_shape_cost(
    stylizer: Stylizer, old: OldEngine, shapes: list[tuple[int, int]], evaluations: int
) -> dict[str, Any]:
    """(b) First job at each never-seen shape minus the same job again, now warm (medians).

    Both runs do the same work at the same shape, so the difference is what a new shape costs
    (tracing, kernel set-up), not what bigger or smaller images cost.
    """
    content, style = pictures()
    options = old.options.replace(max_evaluations=evaluations, seed=0)
    jobs: dict[str, Callable[[np.ndarray], object]] = {
        "old": lambda picture: old.job(picture, style, evaluations),
        "new": lambda picture: stylizer.stylize(picture, [style], options),
    }
    out: dict[str, Any] = {}
    for name, job in jobs.items():
        first, second, warm = [], [], []
        for shape in shapes:
            picture = images.resize_to(content, *shape)

            def run(p: np.ndarray = picture, j: Callable[[np.ndarray], object] = job) -> None:
                j(p)

            first.append(_timed(run))
            second.append(_timed(run))
            warm.append(_timed(run))
        row: dict[str, float] = {}
        for k, label in enumerate(("wall", "cpu")):
            extras = [f[k] - a[k] for f, a in zip(first, warm, strict=True)]
            row[f"{label}_warm_job"] = statistics.median(a[k] for a in warm)
            row[f"{label}_extra_median"] = statistics.median(extras)
            row[f"{label}_extra_max"] = max(extras)
            row[f"{label}_second_extra_median"] = statistics.median(
                s[k] - a[k] for s, a in zip(second, warm, strict=True)
            )
        out[name] = row
    return out
