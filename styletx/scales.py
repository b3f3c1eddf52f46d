"""One job's optimisation: coarse-to-fine scales, each an L-BFGS run from the previous one's
picture, with its targets, budget share, progress events and the colours put back at the end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from styletx import colors, geometry, images, tracing, vgg
from styletx.batcher import Seat
from styletx.objective import losses_of, make_objective
from styletx.optimize import Vector, minimize
from styletx.options import StyleOptions
from styletx.precision import LossScale, Precision
from styletx.protocol import ProgressCallback, StopCallback
from styletx.result import Image, Progress, Result
from styletx.space import Space
from styletx.targets import blend_weights, luminance_inputs, style_targets

if TYPE_CHECKING:
    from styletx.backends.base import LossStep

#: With `pixel_bounds`, the root-mean-square change (pixel levels) of L-BFGS-B's first trial
#: point (`optimize.minimize`'s `first_step`). Left to itself, L-BFGS-B first tries `x - g`,
#: which at the tutorial's loss scale throws every pixel onto 0 or 255, and backtracks from
#: there. Measured (`fast`, 260 px, three content/style pairs, float32 and bfloat16): the loss
#: the default reached after 14 evaluations, after 12-13 (first steps of 6, 11 and 16 did as
#: well or one or two worse on some pair; 1 and 4 worse than none; bench/RESULTS.md).
FIRST_STEP = 8.0

#: A seat at the batcher for one scale of a job, by (precision, layers, height, width); None
#: when batching is off.
SeatFor = Callable[[tuple[object, ...]], contextlib.AbstractContextManager[Seat | None]]


def run_scales(
    step: LossStep,
    content: Image,
    styles: Sequence[Image],
    options: StyleOptions,
    *,
    precision: Precision,
    output: tuple[int, int],
    started: float,
    seat_for: SeatFor,
    on_evaluation: Callable[[], None] | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
) -> Result:
    """Stylize `content` (already checked) at the `output` size with the compiled `step`.

    `started` is when the job began (perf_counter), for its setup time and progress events.
    """
    height, width = output
    # A budget smaller than the scale count drops the coarsest scales: one evaluation each
    # at least, and never more than the budget.
    levels = geometry.scale_sizes(height, width, options.scales)[-options.max_evaluations :]
    budgets = split_budget(options.max_evaluations, len(levels))
    original = content
    grey = options.preserve_colors == "luminance"
    if grey:
        # Luminance only; the content's colours come back at the end.
        content, styles = luminance_inputs(content, styles)
    blend = blend_weights(options, len(styles))
    rng = np.random.default_rng(options.seed)
    loss_scale = LossScale(precision)
    setup = time.perf_counter() - started
    optimize_started = time.perf_counter()
    v: Vector | None = None
    space: Space | None = None
    iterations = evaluations = 0
    terms: tuple[float, ...] = ()
    timings: list[float] = []
    for scale_index, ((h, w), budget) in enumerate(zip(levels, budgets, strict=True)):
        prep_started = time.perf_counter()
        base = images.resize_to(content, h, w)
        with tracing.child("style_targets", **{"styletx.scale": scale_index}):
            targets = style_targets(step, base, styles, blend, options, should_stop)
        level = Space(h, w, grey)
        if v is None or space is None:
            v0 = initial_point(level, options, base, styles, rng, blend)
        else:
            v0 = space.resized(v, h, w)
        space = level
        recolor = recolorer(options, original, h, w)
        prep = time.perf_counter() - prep_started
        setup += prep
        optimize_started += prep

        def report(
            iteration: int,
            evals: int,
            vk: Vector,
            step_terms: tuple[float, ...],
            *,
            _space: Space = level,
            _recolor: Callable[[Image], Image] = recolor,
            _scale: int = scale_index,
            _offset: int = evaluations,
        ) -> None:
            durations = tuple(timings)
            timings.clear()
            if on_progress is None:
                return
            preview = None
            if options.preview_every and iteration % options.preview_every == 0:
                preview = _recolor(vgg.deprocess(_space.image(vk)))
            on_progress(
                Progress(
                    iteration=iteration,
                    evaluations=_offset + evals,
                    losses=losses_of(step_terms),
                    elapsed_seconds=time.perf_counter() - started,
                    scale=_scale,
                    preview=preview,
                    evaluation_seconds=durations,
                )
            )

        with (
            tracing.child("optimisation", **_scale_attributes(scale_index, h, w, budget)) as span,
            seat_for((precision, step.layers, h, w)) as seat,
        ):
            objective = make_objective(
                step, targets, level, timings, seat, should_stop, loss_scale, on_evaluation
            )
            found = minimize(
                objective,
                v0,
                max_evaluations=budget,
                restart_every=options.restart_every,
                memory=options.lbfgs_memory,
                should_stop=should_stop,
                on_iteration=report,
                iteration_offset=iterations,
                # The reference lets pixels stray outside 0..255 and clips only the
                # delivered picture, which undoes part of the style (bench/RESULTS.md).
                bounds=level.bounds() if options.pixel_bounds else None,
                first_step=FIRST_STEP if options.pixel_bounds else None,
            )
            if span is not None:
                span.set_attribute("styletx.iterations", found.iterations)
                span.set_attribute("styletx.evaluations", found.evaluations)
        v, terms = found.x, found.terms
        iterations += found.iterations
        evaluations += found.evaluations
    assert v is not None and space is not None
    image = recolor(vgg.deprocess(space.image(v)))
    return Result(
        image=image,
        losses=losses_of(terms),
        iterations=iterations,
        evaluations=evaluations,
        setup_seconds=setup,
        optimize_seconds=time.perf_counter() - optimize_started,
        precision=precision,
    )


def _scale_attributes(scale: int, height: int, width: int, budget: int) -> dict[str, int]:
    """What an optimisation span says of its scale: index, size and evaluation budget."""
    return {
        "styletx.scale": scale,
        "styletx.height": height,
        "styletx.width": width,
        "styletx.max_evaluations": budget,
    }


def split_budget(total: int, parts: int) -> list[int]:
    """`parts` shares of the evaluation budget adding up to exactly `total` (parts <= total):
    equal shares per scale, the finest (last) scale gets the remainder."""
    if not 1 <= parts <= total:
        raise ValueError(f"cannot split {total} evaluations into {parts} scales")
    share = total // parts
    return [*([share] * (parts - 1)), total - share * (parts - 1)]


def initial_point(
    space: Space,
    options: StyleOptions,
    base: Image,
    styles: Sequence[Image],
    rng: np.random.Generator,
    blend: Sequence[float],
) -> Vector:
    """The first scale's starting point for `options.init`."""
    if options.init == "content":
        return space.point(base)
    if options.init == "content_matched":
        # Not in the tutorial: the content's colours moved to the style's, so the optimiser
        # starts where the shallow layers' Grams (mostly colour) already fit (bench/RESULTS.md).
        return space.point(colors.match_colors(base, styles, blend))
    if options.init == "style":
        # The first style image covering the output, aspect ratio kept, centre cropped.
        return space.point(images.resize_cover(styles[0], space.height, space.width))
    return space.noise(rng)


def recolorer(options: StyleOptions, original: Image, h: int, w: int) -> Callable[[Image], Image]:
    """The last step of preserve_colors: the picture's luminance in the content's colours
    (`swap`: neural-style's -original_colors; `luminance`: Gatys et al.); identity when off."""
    if options.preserve_colors == "off":
        return lambda picture: picture
    chroma = images.resize_to(original, h, w)
    return lambda picture: colors.transfer_luminance(picture, chroma)


__all__ = ["FIRST_STEP", "initial_point", "recolorer", "run_scales", "split_budget"]
