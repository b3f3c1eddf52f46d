"""`Stylizer`: one job's orchestration (targets, scales, L-BFGS, progress, colours).

It knows no framework: the compiled loss-and-gradient step comes from `styletx.backends` (one
module per Keras backend) with numpy arrays in and out. What the reference tutorial did at every
evaluation and we do once per job and scale: the content features and the style Gram matrices,
so each evaluation pushes only the optimised image through VGG16. Steps are cached per layer set
in a small LRU (`STEPS_PER_STYLIZER`); on TensorFlow each is traced once for every image shape.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image as PILImage

from styletx import backends, geometry, heap, images, memory, vgg
from styletx.batcher import DEFAULT_WINDOW_SECONDS, MAX_BATCH, Batcher, BatchStats, Seat
from styletx.errors import Cancelled, InvalidImage, InvalidOptions, NonFiniteLoss
from styletx.lru import LRUCache
from styletx.optimize import Vector, minimize
from styletx.options import PRESETS, StyleOptions
from styletx.precision import (
    DEFAULT_PRECISION,
    LossScale,
    Precision,
    PrecisionPolicy,
    check_setting,
    with_policy,
)
from styletx.result import Image, Losses, Progress, Result
from styletx.weights import ResolvedWeights, resolve_weights

if TYPE_CHECKING:
    from styletx.backends.base import Array, Backend, DeviceTargets, LossStep
    from styletx.pool import Engine as Engine
    from styletx.pool import StylizerPool as StylizerPool
    from styletx.pool import load_stylizer as load_stylizer

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]
StopCallback = Callable[[], bool]

#: Layer sets (content layer + style layers) whose compiled step a Stylizer keeps, least recently
#: used evicted first. The presets share one layer set; a few custom ones stay warm.
STEPS_PER_STYLIZER = 4

#: With `pixel_bounds`, the root-mean-square change (pixel levels) of L-BFGS-B's first trial
#: point (`optimize.minimize`'s `first_step`). Left to itself, L-BFGS-B first tries `x - g`,
#: which at the tutorial's loss scale throws every pixel onto 0 or 255, and backtracks from
#: there. Measured (`fast`, 260 px, three content/style pairs, float32 and bfloat16): the loss
#: the default reached after 14 evaluations, after 12-13 (first steps of 6, 11 and 16 did as
#: well or one or two worse on some pair; 1 and 4 worse than none; bench/RESULTS.md).
FIRST_STEP = 8.0

#: Leading columns of the loss weights (`losses.WEIGHT_FIELDS`, not imported here: it imports
#: Keras) that multiply a loss term: content, style per layer, tv; not the TV power.
SCALED_WEIGHTS = 3

# Luminance (Y of YIQ, as `images.rgb_to_yiq`) of an RGB pixel.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclass(frozen=True)
class _Space:
    """What L-BFGS optimises at one scale, and how VGG16 sees it.

    In colour, the preprocessed (BGR, mean-subtracted) image itself. For luminance-only transfer
    (Gatys et al. 2016) one luminance value per pixel, shown to VGG16 as the grey image that has
    it in all three channels: the optimisation cannot invent colours, and has a third of the
    unknowns.
    """

    height: int
    width: int
    grey: bool

    @property
    def channels(self) -> int:
        return 1 if self.grey else 3

    def image(self, v: Vector) -> vgg.FloatImage:
        """The preprocessed `[H, W, 3]` float32 image VGG16 gets for the point `v`."""
        if not self.grey:
            return v.reshape(self.height, self.width, 3).astype(np.float32)
        luminance = v.reshape(self.height, self.width, 1)
        return (luminance - vgg.BGR_MEAN).astype(np.float32)

    def gradient(self, grad: vgg.FloatImage) -> Vector:
        """The gradient with respect to `v`, from the gradient with respect to `image(v)`."""
        g = np.asarray(grad, dtype=np.float64)
        return (g.sum(axis=-1) if self.grey else g).ravel()

    def point(self, picture: Image) -> Vector:
        """The point whose image is `picture` (RGB uint8; its luminance when grey)."""
        if not self.grey:
            return vgg.preprocess(picture).ravel().astype(np.float64)
        return (picture.astype(np.float64) @ _LUMA).ravel()

    def noise(self, rng: np.random.Generator) -> Vector:
        """The tutorial's random init: uniform noise in preprocessed space (its luminance when
        grey), drawn the same way in both so a seed means one picture."""
        x = rng.uniform(0, 255, (self.height, self.width, 3)) - 128.0
        if not self.grey:
            return x.astype(np.float32).ravel().astype(np.float64)
        return ((x + vgg.BGR_MEAN)[..., ::-1] @ _LUMA).ravel()

    def bounds(self) -> tuple[Vector, Vector]:
        """Per-element (lower, upper) of the points whose pixels lie in 0..255."""
        low = np.zeros(self.channels) if self.grey else -vgg.BGR_MEAN.astype(np.float64)
        shape = (self.height, self.width, self.channels)
        return (np.broadcast_to(low, shape).ravel(), np.broadcast_to(low + 255.0, shape).ravel())

    def resized(self, v: Vector, height: int, width: int) -> Vector:
        """`v` upsampled (bicubic) to the next scale's size."""
        planes = v.reshape(self.height, self.width, self.channels).astype(np.float32)
        out = np.empty((height, width, self.channels), dtype=np.float64)
        for c in range(self.channels):
            plane = PILImage.fromarray(np.ascontiguousarray(planes[..., c]))  # mode "F"
            out[..., c] = np.asarray(plane.resize((width, height), PILImage.Resampling.BICUBIC))
        return out.ravel()


class Stylizer:
    """The engine: one loaded VGG16 on one device, shared by every job (and thread) of the process.

    `backend` names the Keras backend ("tensorflow", "jax"); None takes the one Keras runs
    (`KERAS_BACKEND`, default TensorFlow). `device` is any name the backend understands
    ("CPU:0", "GPU:1", TensorFlow's "/job:.../device:GPU:0"); None: the first GPU, else the CPU.
    `precision` is "auto" (bfloat16 where the device runs it natively, float32 elsewhere and for
    the jobs the quality guard keeps in float32: `styletx.precision.PrecisionPolicy`) or a Keras
    dtype policy: "float32", or "mixed_bfloat16" / "mixed_float16" for 16-bit activations
    (`styletx.precision`). `batch_window` (seconds) turns on cross-job
    batching of concurrent jobs' evaluations (`styletx.batcher`); None: on (10 ms) on an
    accelerator, off on a CPU. `memory_capacity` (bytes) bounds the device memory jobs are
    predicted to use (`styletx.memory`); None asks the backend (unknown, so unchecked, on a CPU).
    `shape_step` (px): the network runs an image with its shorter side padded up to a multiple of
    it, with masks that keep every loss and gradient exact, so many aspect ratios share the
    framework's per-shape kernels and memory (TensorFlow; `geometry.padded_size`); always the
    same shape for an image, so the same request gives the same bytes (`styletx.shapes`); 1: no
    padding.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        device: str | None = None,
        blas_threads: int | None = 1,
        backend: str | None = None,
        precision: str = DEFAULT_PRECISION,
        batch_window: float | None = None,
        max_batch: int = MAX_BATCH,
        memory_capacity: int | None = None,
        memory_model: memory.MemoryModel | None = None,
        shape_step: int = geometry.DEFAULT_SHAPE_STEP,
    ) -> None:
        if shape_step < 1:
            raise ValueError(f"shape_step must be at least 1, got {shape_step}")
        self.shape_step = shape_step
        setting = check_setting(precision)
        self.weights: ResolvedWeights = resolve_weights(weights)
        if blas_threads is not None:
            _limit_blas_threads(blas_threads)
        self._backend: Backend = backends.load(backend)
        self._backend.configure()
        self._device = self._backend.device_name(device)
        accelerated = not self._device.startswith("CPU")
        native, why = (
            self._backend.bfloat16_native(self._device) if setting == "auto" else (False, "")
        )
        self.precision_policy = PrecisionPolicy(setting, native, why)
        self._precision: Precision = self.precision_policy.default
        self._lock = threading.Lock()
        # One model per precision a job may run at, the default built now, others on first use.
        self._models: dict[Precision, Any] = {}
        self._vgg = self._model(self._precision)
        self._steps: LRUCache[tuple[str, ...], LossStep] = LRUCache(STEPS_PER_STYLIZER)
        self._evaluations_total = 0
        if batch_window is None:
            batch_window = DEFAULT_WINDOW_SECONDS if accelerated else 0.0
        self._batcher = Batcher(batch_window, max_batch) if batch_window > 0 else None
        capacity = memory_capacity or self._backend.memory_capacity(self._device)
        self._memory_model = memory_model
        self.memory = memory.MemoryBudget(
            self._memory_model_of(self._precision), capacity, self._device
        )
        log.info(
            "stylizer ready",
            extra={
                "backend": self.backend,
                "device": self.device,
                "precision": self.precision,
                "precision_policy": self.precision_policy.describe(),
                "batch_window": batch_window,
                "memory_capacity": capacity,
                "shape_step": shape_step,
                "weights": str(self.weights.path),
            },
        )

    @property
    def backend(self) -> str:
        """Keras backend computing the loss and gradient ("tensorflow", "jax")."""
        return self._backend.name

    @property
    def precision(self) -> str:
        """Keras dtype policy of this Stylizer's jobs ("float32", "mixed_bfloat16" or
        "mixed_float16": activations in 16 bits, Gram matrices and losses summed in float32 or
        wider), `auto` resolved for this device; `precision_for` gives a given job's."""
        return self._precision

    def precision_for(self, options: StyleOptions) -> Precision:
        """The precision a job with `options` runs at (`auto` keeps some jobs in float32)."""
        return self.precision_policy.for_job(options)

    def _model(self, precision: Precision) -> Any:
        """VGG16 computing under `precision`, built (on this device) on first use."""
        with self._lock:
            model = self._models.get(precision)
            if model is None:
                with self._backend.placement(self._device):
                    model = with_policy(vgg.build_vgg16(self.weights.path), precision)
                self._models[precision] = model
            return model

    def memory_model_for(self, options: StyleOptions) -> memory.MemoryModel:
        """The device-memory model of a job with `options` (at the precision it runs at)."""
        return self._memory_model_of(self.precision_for(options))

    def _memory_model_of(self, precision: Precision) -> memory.MemoryModel:
        """The device-memory model of a job at `precision` (the one given, else the default
        of this precision where its activations are stored: `memory.default_model`)."""
        if self._memory_model is not None:
            return self._memory_model
        # XLA's CPU backend computes 16-bit convolutions in float32 and keeps both copies;
        # GPUs, and TensorFlow's CPU kernels, keep 16-bit activations in 2 bytes.
        widened = self.backend == "jax" and self._device.startswith("CPU")
        return memory.default_model(precision, two_bytes=not widened)

    @property
    def device(self) -> str:
        """Device the model and every job run on ("CPU:0", "GPU:0", ...)."""
        return self._device

    @property
    def batch_window(self) -> float:
        """Seconds a forming batch waits for the other jobs of its shape; 0: batching off."""
        return 0.0 if self._batcher is None else self._batcher.window

    @property
    def batch_stats(self) -> BatchStats:
        """Batched step calls and the evaluations they carried (zeros when batching is off)."""
        return BatchStats(0, 0, 0) if self._batcher is None else self._batcher.stats

    def memory_info(self) -> dict[str, int]:
        """Bytes the framework holds now on this Stylizer's accelerator; empty on a CPU."""
        return self._backend.memory_info(self._device)

    def memory_capacity(self) -> dict[str, int]:
        """{device: bytes} jobs may be planned against on this Stylizer's device (the
        framework's capacity or the one given); empty where unknown (a CPU)."""
        capacity = self.memory.capacity
        return {} if capacity is None else {self._device: capacity}

    def peak_memory(self) -> int | None:
        """Most bytes the framework held on this Stylizer's accelerator; None on a CPU."""
        return self._backend.peak_memory(self._device)

    def check_fits(
        self,
        content: tuple[int, int],
        styles: Sequence[tuple[int, int]],
        options: StyleOptions,
    ) -> int:
        """The pixels of the job's largest pass; DeviceMemoryExceeded (an InvalidOptions on
        `size`, naming the largest size that fits) when the job cannot fit on the device alone.
        `content` and `styles` are (height, width) of the input images."""
        pixels = memory.job_pixels(
            content, styles, options.size, options.style_scale, self.shape_step
        )
        model = self.memory_model_for(options)

        def largest(fits: Callable[[int], bool]) -> int:
            return memory.largest_size(
                lambda size: fits(
                    memory.job_pixels(content, styles, size, options.style_scale, self.shape_step)
                ),
                options.size,
            )

        self.memory.check(pixels, largest, model)
        return pixels

    @property
    def evaluations_total(self) -> int:
        """Loss-and-gradient evaluations run by this Stylizer, all jobs together."""
        return self._evaluations_total

    @staticmethod
    def output_size(height: int, width: int, size: int) -> tuple[int, int]:
        """(height, width) of the output: longest side `size`, aspect ratio kept.

        InvalidOptions (field `size`) when the shorter side would fall under VGG16's 16 px.
        """
        if height <= 0 or width <= 0:
            raise InvalidImage("image has no pixels")
        return geometry.output_size(height, width, size)

    def warmup(self, size: int = 64) -> None:
        """Run tiny jobs so the default step is compiled and the kernels are loaded before the
        first request (on TensorFlow those traces serve every image shape): a square one and,
        with a `shape_step`, one the network runs padded; once per precision the presets'
        jobs run at (`auto` may run some in float32)."""
        square = np.full((size, size, 3), 128, dtype=np.uint8)
        warmed: set[str] = set()
        for preset in PRESETS:
            options = StyleOptions.from_preset(preset, size=size, max_evaluations=2, seed=0)
            if self.precision_for(options) in warmed:
                continue
            warmed.add(self.precision_for(options))
            self.stylize(square, [square], options)
            if self.shape_step > 1:
                # size x (size - 1): the shorter side rounds up to size whatever the step.
                oblong = np.full((size, size - 1, 3), 128, dtype=np.uint8)
                self.stylize(oblong, [square], options)

    def step(self, options: StyleOptions) -> LossStep:
        """The compiled step for `options`' layer set on this device (built on first use, kept in
        an LRU of `STEPS_PER_STYLIZER`): what each evaluation of such a job calls, and what a
        cross-job batcher calls with several jobs' rows at once."""
        layers = (options.content_layer, *options.style_layers)
        precision = self.precision_for(options)
        return self._steps.get_or_create(
            (precision, *layers),
            lambda: self._backend.make_step(
                vgg.feature_extractor(self._model(precision), layers),
                layers,
                self._device,
                self.shape_step,
            ),
        )

    def stylize(
        self,
        content: Image,
        styles: Sequence[Image],
        options: StyleOptions | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Result:
        """Stylize `content` in the blended style of `styles`; see `StyleOptions` for the knobs.

        `should_stop` is polled before every evaluation and before each image's target features;
        it ends the job with `Cancelled`. At most `options.max_evaluations` evaluations run, all
        scales together.
        """
        options = options or StyleOptions()
        _check_inputs(content, styles, options)
        started = time.perf_counter()
        height, width = self.output_size(content.shape[0], content.shape[1], options.size)
        pixels = self.check_fits(content.shape[:2], [s.shape[:2] for s in styles], options)
        try:
            # Waits while the jobs running on this device leave too little memory (GPUs only).
            model = self.memory_model_for(options)
            with self.memory.reserve(pixels, should_stop, model):
                return self._stylize(
                    content, styles, options, on_progress, should_stop, started, (height, width)
                )
        finally:
            # The job's activations are freed; give their pages back (styletx.heap).
            heap.trim()

    def _stylize(
        self,
        content: Image,
        styles: Sequence[Image],
        options: StyleOptions,
        on_progress: ProgressCallback | None,
        should_stop: StopCallback | None,
        started: float,
        output: tuple[int, int],
    ) -> Result:
        height, width = output
        # A budget smaller than the scale count drops the coarsest scales: one evaluation each
        # at least, and never more than the budget.
        levels = geometry.scale_sizes(height, width, options.scales)[-options.max_evaluations :]
        budgets = _split_budget(options.max_evaluations, len(levels))
        colors = content
        grey = options.preserve_colors == "luminance"
        if grey:
            # Gatys et al. (2016): transfer luminance only, against the style's luminance matched
            # to the content's mean and spread; the content's colours come back at the end.
            content = images.to_luminance(content)
            styles = [images.match_luminance(style, content) for style in styles]
        step = self.step(options)
        precision = self.precision_for(options)
        blend = _blend_weights(options, len(styles))
        rng = np.random.default_rng(options.seed)
        loss_scale = LossScale(precision)
        setup = time.perf_counter() - started
        optimize_started = time.perf_counter()
        v: Vector | None = None
        space: _Space | None = None
        iterations = evaluations = 0
        terms: tuple[float, ...] = ()
        timings: list[float] = []
        for scale_index, ((h, w), budget) in enumerate(zip(levels, budgets, strict=True)):
            prep_started = time.perf_counter()
            base = images.resize_to(content, h, w)
            targets = self._targets(step, base, styles, blend, options, should_stop)
            level = _Space(h, w, grey)
            if v is None or space is None:
                v0 = _initial_point(level, options, base, styles, rng, blend)
            else:
                v0 = space.resized(v, h, w)
            space = level
            recolor = _recolorer(options, colors, h, w)
            prep = time.perf_counter() - prep_started
            setup += prep
            optimize_started += prep

            def report(
                iteration: int,
                evals: int,
                vk: Vector,
                step_terms: tuple[float, ...],
                *,
                _space: _Space = level,
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
                        losses=_losses(step_terms),
                        elapsed_seconds=time.perf_counter() - started,
                        scale=_scale,
                        preview=preview,
                        evaluation_seconds=durations,
                    )
                )

            with self._seat((precision, step.layers, h, w)) as seat:
                objective = self._objective(
                    step, targets, level, timings, seat, should_stop, loss_scale
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
            v, terms = found.x, found.terms
            iterations += found.iterations
            evaluations += found.evaluations
        assert v is not None and space is not None
        image = recolor(vgg.deprocess(space.image(v)))
        return Result(
            image=image,
            losses=_losses(terms),
            iterations=iterations,
            evaluations=evaluations,
            setup_seconds=setup,
            optimize_seconds=time.perf_counter() - optimize_started,
            precision=precision,
        )

    def evaluate(
        self,
        content: Image,
        styles: Sequence[Image],
        image: Image,
        options: StyleOptions | None = None,
    ) -> Losses:
        """Losses of `image` (resized to the output size) for this content, styles and options.

        With preserve_colors="luminance" the losses are those the job optimises: of the image's
        luminance against the content's and the luminance-matched styles'.
        """
        options = options or StyleOptions()
        _check_inputs(content, styles, options)
        h, w = self.output_size(content.shape[0], content.shape[1], options.size)
        grey = options.preserve_colors == "luminance"
        if grey:
            content = images.to_luminance(content)
            styles = [images.match_luminance(style, content) for style in styles]
        step = self.step(options)
        base = images.resize_to(content, h, w)
        targets = self._targets(step, base, styles, _blend_weights(options, len(styles)), options)
        space = _Space(h, w, grey)
        scale = LossScale(self.precision_for(options))
        objective = self._objective(step, targets, space, scale=scale)
        terms, _ = objective(space.point(images.resize_to(image, h, w)))
        return _losses(terms)

    @contextlib.contextmanager
    def _seat(self, key: tuple[object, ...]) -> Iterator[Seat | None]:
        """A seat at the batcher for one scale of a job (None: batching is off)."""
        if self._batcher is None:
            yield None
            return
        with self._batcher.join(key) as seat:
            yield seat

    def _targets(
        self,
        step: LossStep,
        base: Image,
        styles: Sequence[Image],
        blend: Sequence[float],
        options: StyleOptions,
        should_stop: StopCallback | None = None,
    ) -> DeviceTargets:
        """Content features and blended style Gram matrices at `base`'s size, on the device.

        Computed once per job and scale; `should_stop` is polled before each image's VGG16 pass
        (a job with many large style images spends seconds here).
        """
        h, w = base.shape[:2]
        _check_stop(should_stop)
        content, _ = step.targets(vgg.preprocess(base)[np.newaxis])
        grams: list[Any] | None = None
        for style, weight in zip(styles, blend, strict=True):
            _check_stop(should_stop)
            if weight == 0.0:
                continue  # blended in with weight 0: its VGG16 pass would change nothing
            sh, sw = geometry.style_size(
                style.shape[0], style.shape[1], (h, w), options.style_scale
            )
            _, style_grams = step.targets(vgg.preprocess(images.resize_to(style, sh, sw))[None])
            # The style loss divides by the *output's* pixel count (the tutorial's), and a Gram
            # matrix sums over pixels: rescale the style's Grams from its own pixel count to the
            # output's, so the style loss means the same whatever the style image's size.
            factor = weight * (h * w) / (sh * sw)
            scaled = [factor * g.astype(np.float64) for g in style_grams]
            grams = scaled if grams is None else [a + b for a, b in zip(grams, scaled, strict=True)]
        assert grams is not None  # blend weights are validated: at least one is positive
        return step.put(content, [g.astype(np.float32) for g in grams], _loss_weights(options))

    def _objective(
        self,
        step: LossStep,
        targets: DeviceTargets,
        space: _Space,
        timings: list[float] | None = None,
        seat: Seat | None = None,
        should_stop: StopCallback | None = None,
        scale: LossScale | None = None,
    ) -> Callable[[Vector], tuple[tuple[float, ...], Vector]]:
        """The L-BFGS objective in `space`; appends each evaluation's wall time to `timings`.

        With a `seat`, each evaluation goes through the batcher (with other jobs' of the same
        shape). Under mixed_float16, an overflow lowers the job's loss `scale` and evaluates again.
        """
        durations: list[float] = [] if timings is None else timings
        base, scaled = _target_weights(step, targets, scale)
        current = [scaled]  # the targets under the job's loss scale now
        evaluated = [0]

        def evaluate(image: Array) -> tuple[Array, Array]:
            if seat is not None:
                return seat.evaluate(step, image, current[0], should_stop)
            terms, grad = step.loss_and_grad(image[np.newaxis], current[0])
            return terms[0], grad[0]

        def objective(v: Vector) -> tuple[tuple[float, ...], Vector]:
            began = time.perf_counter()
            image = space.image(v)
            terms, grad = evaluate(image)
            # Only float16 is checked: elsewhere the O(pixels) scan would buy nothing.
            while (
                scale is not None
                and scale.enabled
                and not (np.isfinite(grad).all() and np.isfinite(terms).all())
            ):
                if not scale.overflowed():
                    raise _non_finite(
                        terms,
                        evaluated[0] + 1,
                        f" (not finite even with the loss scaled by {scale.value:g} in "
                        f"{self._precision}: use mixed_bfloat16 or float32)",
                    )
                current[0] = step.with_weights(current[0], _scaled(base, scale.value))
                terms, grad = evaluate(image)
            evaluated[0] += 1
            # 4 numbers and one pass over the gradient (~0.1 ms at 260 px): an overflow ends the
            # job with a reason instead of an "OK" with inf or an optimiser lost in NaNs.
            if not (np.isfinite(terms).all() and np.isfinite(grad).all()):
                raise _non_finite(terms, evaluated[0])
            with self._lock:
                self._evaluations_total += 1
            unscale = 1.0 if scale is None else 1.0 / scale.value
            gradient = space.gradient(grad)
            if unscale != 1.0:
                gradient *= unscale
            durations.append(time.perf_counter() - began)
            return tuple(float(t) * unscale for t in terms), gradient

        return objective


def _target_weights(
    step: LossStep, targets: DeviceTargets, scale: LossScale | None
) -> tuple[Array, DeviceTargets]:
    """(the unscaled `[1, 4]` loss weights, `targets` under the job's current loss scale).

    A later scale of a job starts at the loss scale its earlier scales settled on.
    """
    weights = np.asarray(targets.weights, dtype=np.float32)
    if scale is None or scale.value == 1.0:
        return weights, targets
    return weights, step.with_weights(targets, _scaled(weights, scale.value))


def _scaled(weights: Array, factor: float) -> Array:
    """Loss weights `[B, 4]` with the three loss weights times `factor` (not the TV power:
    the loss is linear in the weights, not in the power)."""
    out = np.array(weights, dtype=np.float32, copy=True)
    out[:, :SCALED_WEIGHTS] *= factor
    return out


#: The option that weighs each loss term (`losses.TERM_FIELDS` after the total).
_TERM_WEIGHTS = (("content", "content_weight"), ("style", "style_weight"), ("tv", "tv_weight"))


def _non_finite(terms: Array, evaluation: int, context: str = "") -> NonFiniteLoss:
    """NonFiniteLoss naming the weight of the first term that overflowed (else of the largest
    one: only the gradient did)."""
    values = [float(t) for t in np.asarray(terms, dtype=np.float64).ravel()[1:4]]
    bad = [i for i, v in enumerate(values) if not np.isfinite(v)]
    index = bad[0] if bad else int(np.argmax(np.abs(values)))
    term, field = _TERM_WEIGHTS[index]
    what = f"the {term} loss became {values[index]}" if bad else "the loss gradient overflowed"
    hint = " or tv_power" if term == "tv" else ""
    return NonFiniteLoss(
        field,
        f"{what} at evaluation {evaluation}{context}; lower {field}{hint} or use a smaller "
        f"image (losses: content {values[0]:.3g}, style {values[1]:.3g}, tv {values[2]:.3g})",
        evaluation=evaluation,
    )


def _limit_blas_threads(threads: int) -> None:
    """Cap numpy/scipy's BLAS thread pools for the whole process.

    L-BFGS only does vector (level-1) BLAS work, which gains nothing from threads, but OpenBLAS'
    threads keep spinning after each call and steal the cores the framework's next evaluation
    needs: measured at 260 px on 2 cores, evaluations called from inside scipy took 0.265 s
    instead of 0.233 s. The pools are process-wide, so the cap is too (blas_threads=None keeps
    yours).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


def _check_stop(should_stop: StopCallback | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("stylization cancelled")


def _check_inputs(content: Image, styles: Sequence[Image], options: StyleOptions) -> None:
    for name, image in [("content", content), *((f"styles[{i}]", s) for i, s in enumerate(styles))]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidImage("must be an H x W x 3 uint8 RGB array", field=name)
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise InvalidImage("has no pixels", field=name)
    if not styles:
        raise InvalidOptions("styles", "at least one style image is required")
    if options.style_blend_weights and len(options.style_blend_weights) != len(styles):
        raise InvalidOptions(
            "style_blend_weights",
            f"got {len(options.style_blend_weights)} weights for {len(styles)} style images",
        )


def _loss_weights(options: StyleOptions) -> vgg.FloatImage:
    """`[1, 4]`: content, style per layer, tv, tv power (`losses.WEIGHT_FIELDS`): data, not
    constants, so new values never recompile."""
    return np.array(
        [
            [
                options.content_weight,
                options.style_weight / len(options.style_layers),
                options.tv_weight,
                options.tv_power,
            ]
        ],
        dtype=np.float32,
    )


def _blend_weights(options: StyleOptions, count: int) -> list[float]:
    """Blend weights normalised to sum 1; scaled by the largest first, so that any finite
    weights (1e308 each) blend without their sum overflowing."""
    raw = list(options.style_blend_weights) or [1.0] * count
    largest = max(raw)
    relative = [w / largest for w in raw]
    total = sum(relative)
    return [w / total for w in relative]


def _split_budget(total: int, parts: int) -> list[int]:
    """`parts` shares of the evaluation budget adding up to exactly `total` (parts <= total):
    equal shares per scale, the finest (last) scale gets the remainder."""
    if not 1 <= parts <= total:
        raise ValueError(f"cannot split {total} evaluations into {parts} scales")
    share = total // parts
    return [*([share] * (parts - 1)), total - share * (parts - 1)]


def _initial_point(
    space: _Space,
    options: StyleOptions,
    base: Image,
    styles: Sequence[Image],
    rng: np.random.Generator,
    blend: Sequence[float],
) -> Vector:
    if options.init == "content":
        return space.point(base)
    if options.init == "content_matched":
        # Not in the tutorial: the content's colours moved to the style's, so the optimiser
        # starts where the shallow layers' Grams (mostly colour) already fit (bench/RESULTS.md).
        return space.point(images.match_colors(base, styles, blend))
    if options.init == "style":
        # The first style image covering the output, aspect ratio kept, centre cropped.
        return space.point(images.resize_cover(styles[0], space.height, space.width))
    return space.noise(rng)


def _recolorer(options: StyleOptions, colors: Image, h: int, w: int) -> Callable[[Image], Image]:
    """The last step of preserve_colors: the picture's luminance in the content's colours
    (`swap`: neural-style's -original_colors; `luminance`: Gatys et al.); identity when off."""
    if options.preserve_colors == "off":
        return lambda picture: picture
    chroma = images.resize_to(colors, h, w)
    return lambda picture: images.transfer_luminance(picture, chroma)


def _losses(terms: tuple[float, ...]) -> Losses:
    return Losses(total=terms[0], content=terms[1], style=terms[2], tv=terms[3])


def __getattr__(name: str) -> Any:
    # StylizerPool, load_stylizer and Engine live in styletx.pool (which imports this module);
    # the server still imports them from here.
    if name in {"Engine", "StylizerPool", "load_stylizer"}:
        from styletx import pool

        return getattr(pool, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Engine",
    "ProgressCallback",
    "STEPS_PER_STYLIZER",
    "StopCallback",
    "Stylizer",
    "StylizerPool",
    "load_stylizer",
]
