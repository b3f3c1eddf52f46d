"""`Stylizer`: loads VGG16 once, compiles the loss-and-gradient function once per shape, runs jobs.

What the reference tutorial did per evaluation and we do once per job instead: the content and
style targets (features and Gram matrices) are computed once, so every evaluation pushes only
the optimised image through VGG16. The compiled `tf.function` is cached per layer set and traced
once per image shape, so later jobs of the same size reuse it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from styletx import images, losses, vgg
from styletx.errors import InvalidImage, InvalidOptions
from styletx.optimize import Vector, minimize
from styletx.options import StyleOptions
from styletx.result import Image, Losses, Progress, Result
from styletx.weights import ResolvedWeights, resolve_weights

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]
StopCallback = Callable[[], bool]


@dataclass(frozen=True)
class _Targets:
    content: tf.Tensor
    grams: tuple[tf.Tensor, ...]


class _LayerSet:
    """Feature extractor and compiled loss/gradient for one (content layer, style layers) choice."""

    def __init__(self, vgg16: Any, content_layer: str, style_layers: tuple[str, ...]) -> None:
        self.layers = (content_layer, *style_layers)
        self.extractor = vgg.feature_extractor(vgg16, self.layers)
        self.features = tf.function(self._features, reduce_retracing=False)
        self.loss_and_grad = tf.function(self._loss_and_grad, reduce_retracing=False)

    def _features(self, image: tf.Tensor) -> list[tf.Tensor]:
        return [f[0] for f in self.extractor(image[tf.newaxis], training=False)]

    def _loss_and_grad(
        self,
        x: tf.Tensor,
        content_target: tf.Tensor,
        target_grams: tuple[tf.Tensor, ...],
        weights: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        # weights = [content, style per layer, tv, tv power]
        pixels = tf.cast(tf.shape(x)[0] * tf.shape(x)[1], tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x)
            feats = self._features(x)
            content = weights[0] * losses.content_loss(feats[0], content_target)
            style = tf.add_n(
                [
                    losses.style_layer_loss(losses.gram_matrix(f), g, pixels)
                    for f, g in zip(feats[1:], target_grams, strict=True)
                ]
            )
            style = weights[1] * style
            tv = weights[2] * losses.total_variation_loss(x[tf.newaxis], weights[3])
            total = content + style + tv
        grad = tape.gradient(total, x)
        return total, content, style, tv, grad


class Stylizer:
    """The engine: one loaded VGG16, shared by every job (and thread) of the process."""

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        device: str | None = None,
        blas_threads: int | None = 1,
    ) -> None:
        self.weights: ResolvedWeights = resolve_weights(weights)
        if blas_threads is not None:
            _limit_blas_threads(blas_threads)
        #: TensorFlow device this Stylizer's model and jobs are pinned to (None: TF's choice).
        self.device = device
        with self._placement():
            self._vgg = vgg.build_vgg16(self.weights.path)
        self._layer_sets: dict[tuple[str, ...], _LayerSet] = {}
        self._lock = threading.Lock()
        self._evaluations_total = 0

    @property
    def evaluations_total(self) -> int:
        """Loss-and-gradient evaluations run by this Stylizer, all jobs together."""
        return self._evaluations_total

    def _placement(self) -> contextlib.AbstractContextManager[object]:
        # tf.device is thread-local, so every entry point (run on a worker thread) enters it.
        return tf.device(self.device) if self.device else contextlib.nullcontext()

    @staticmethod
    def output_size(height: int, width: int, size: int) -> tuple[int, int]:
        """(height, width) of the output: longest side `size`, aspect ratio kept."""
        if height <= 0 or width <= 0:
            raise InvalidImage("image has no pixels")
        return images.fit_longest(height, width, size)

    def warmup(self, size: int = 64) -> None:
        """Run a tiny job so the model's kernels are loaded before the first real request."""
        probe = np.full((size, size, 3), 128, dtype=np.uint8)
        self.stylize(probe, [probe], StyleOptions(size=size, max_evaluations=2, seed=0))

    def _layer_set(self, options: StyleOptions) -> _LayerSet:
        key = (options.content_layer, *options.style_layers)
        with self._lock:
            found = self._layer_sets.get(key)
            if found is None:
                found = _LayerSet(self._vgg, options.content_layer, options.style_layers)
                self._layer_sets[key] = found
            return found

    def stylize(
        self,
        content: Image,
        styles: Sequence[Image],
        options: StyleOptions | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Result:
        """Stylize `content` in the blended style of `styles`; see `StyleOptions` for the knobs."""
        with self._placement():
            return self._stylize(content, styles, options, on_progress, should_stop)

    def _stylize(
        self,
        content: Image,
        styles: Sequence[Image],
        options: StyleOptions | None,
        on_progress: ProgressCallback | None,
        should_stop: StopCallback | None,
    ) -> Result:
        options = options or StyleOptions()
        _check_inputs(content, styles, options)
        started = time.perf_counter()
        colors = content
        if options.preserve_colors == "luminance":
            # Gatys et al. (2016): optimise luminance only, against the style's luminance matched
            # to the content's mean and spread; the content's colours are added back at the end.
            content = images.to_luminance(content)
            styles = [images.match_luminance(style, content) for style in styles]
        layer_set = self._layer_set(options)
        blend = _blend_weights(options, len(styles))
        height, width = self.output_size(content.shape[0], content.shape[1], options.size)
        rng = np.random.default_rng(options.seed)
        weights = _loss_weights(options)
        setup = time.perf_counter() - started
        optimize_started = time.perf_counter()
        x: Vector | None = None
        iterations = evaluations = 0
        terms: tuple[float, ...] = ()
        scale_sizes = _scale_sizes(height, width, options.scales)
        timings: list[float] = []
        budgets = _split_budget(options.max_evaluations, len(scale_sizes))
        for scale_index, ((h, w), budget) in enumerate(zip(scale_sizes, budgets, strict=True)):
            prep_started = time.perf_counter()
            base = images.resize_to(content, h, w)
            targets = self._targets(layer_set, base, styles, blend, options)
            if x is None:
                x0 = _initial_image(options, base, styles, rng).ravel().astype(np.float64)
            else:
                x0 = _upsample(x, scale_sizes[scale_index - 1], (h, w))
            objective = self._objective(layer_set, targets, weights, h, w, timings)
            prep = time.perf_counter() - prep_started
            setup += prep
            optimize_started += prep

            def report(
                iteration: int,
                evals: int,
                xk: Vector,
                step_terms: tuple[float, ...],
                *,
                _h: int = h,
                _w: int = w,
                _scale: int = scale_index,
                _offset: int = evaluations,
            ) -> None:
                durations = tuple(timings)
                timings.clear()
                if on_progress is None:
                    return
                preview = None
                if options.preview_every and iteration % options.preview_every == 0:
                    preview = vgg.deprocess(xk.reshape(_h, _w, 3))
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

            found = minimize(
                objective,
                x0,
                max_evaluations=budget,
                restart_every=options.restart_every,
                memory=options.lbfgs_memory,
                should_stop=should_stop,
                on_iteration=report,
                iteration_offset=iterations,
            )
            x, terms = found.x, found.terms
            iterations += found.iterations
            evaluations += found.evaluations
        assert x is not None
        h, w = scale_sizes[-1]
        image = vgg.deprocess(x.reshape(h, w, 3))
        if options.preserve_colors != "off":
            image = images.transfer_luminance(image, images.resize_to(colors, h, w))
        return Result(
            image=image,
            losses=_losses(terms),
            iterations=iterations,
            evaluations=evaluations,
            setup_seconds=setup,
            optimize_seconds=time.perf_counter() - optimize_started,
        )

    def evaluate(
        self,
        content: Image,
        styles: Sequence[Image],
        image: Image,
        options: StyleOptions | None = None,
    ) -> Losses:
        """Losses of `image` (resized to the output size) for this content, styles and options."""
        with self._placement():
            return self._evaluate(content, styles, image, options or StyleOptions())

    def _evaluate(
        self, content: Image, styles: Sequence[Image], image: Image, options: StyleOptions
    ) -> Losses:
        _check_inputs(content, styles, options)
        layer_set = self._layer_set(options)
        h, w = self.output_size(content.shape[0], content.shape[1], options.size)
        base = images.resize_to(content, h, w)
        targets = self._targets(
            layer_set, base, styles, _blend_weights(options, len(styles)), options
        )
        objective = self._objective(layer_set, targets, _loss_weights(options), h, w)
        terms, _ = objective(
            vgg.preprocess(images.resize_to(image, h, w)).ravel().astype(np.float64)
        )
        return _losses(terms)

    def _targets(
        self,
        layer_set: _LayerSet,
        base: Image,
        styles: Sequence[Image],
        blend: Sequence[float],
        options: StyleOptions,
    ) -> _Targets:
        """Content features and blended style Gram matrices, computed once per job and scale."""
        h, w = base.shape[:2]
        content_target = layer_set.features(tf.constant(vgg.preprocess(base)))[0]
        grams: list[tf.Tensor] | None = None
        for style, weight in zip(styles, blend, strict=True):
            sh = max(1, round(h * options.style_scale))
            sw = max(1, round(w * options.style_scale))
            feats = layer_set.features(tf.constant(vgg.preprocess(images.resize_to(style, sh, sw))))
            # The tutorial's style loss divides by the *output's* pixel count, so a style image
            # rescaled by style_scale would shift the Gram magnitudes: bring them back to the
            # output's pixel count.
            ratio = (h * w) / (sh * sw)
            layer_grams = [weight * ratio * losses.gram_matrix(f) for f in feats[1:]]
            grams = (
                layer_grams
                if grams is None
                else [a + b for a, b in zip(grams, layer_grams, strict=True)]
            )
        assert grams is not None
        return _Targets(content=content_target, grams=tuple(grams))

    def _objective(
        self,
        layer_set: _LayerSet,
        targets: _Targets,
        weights: tf.Tensor,
        h: int,
        w: int,
        timings: list[float] | None = None,
    ) -> Callable[[Vector], tuple[tuple[float, ...], Vector]]:
        """The L-BFGS objective at h x w; appends each evaluation's wall time to `timings`."""
        durations: list[float] = [] if timings is None else timings

        def objective(x: Vector) -> tuple[tuple[float, ...], Vector]:
            began = time.perf_counter()
            image = tf.constant(x.reshape(h, w, 3), dtype=tf.float32)
            total, content, style, tv, grad = layer_set.loss_and_grad(
                image, targets.content, targets.grams, weights
            )
            terms = (float(total), float(content), float(style), float(tv))
            gradient = grad.numpy().astype(np.float64).ravel()
            with self._lock:
                self._evaluations_total += 1
            durations.append(time.perf_counter() - began)
            return terms, gradient

        return objective


def _limit_blas_threads(threads: int) -> None:
    """Cap numpy/scipy's BLAS thread pools for the whole process.

    L-BFGS only does vector (level-1) BLAS work, which gains nothing from threads, but OpenBLAS'
    threads keep spinning after each call and steal the cores TensorFlow's next evaluation needs:
    measured at 260 px on 2 cores, evaluations called from inside scipy took 0.265 s instead of
    0.233 s. The pools are process-wide, so the cap is too (pass blas_threads=None to keep yours).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


class StylizerPool:
    """One `Stylizer` per device (e.g. each GPU), lent to one job at a time.

    Worker threads share the pool as they would share one Stylizer; a job runs on whichever
    device is free, so N workers over N GPUs keep every GPU busy instead of all using GPU:0.
    """

    def __init__(self, weights: str | Path | None, devices: Sequence[str]) -> None:
        if not devices:
            raise ValueError("a StylizerPool needs at least one device")
        self.members = [Stylizer(weights, device=d) for d in devices]
        self.weights = self.members[0].weights
        self._free: queue.SimpleQueue[Stylizer] = queue.SimpleQueue()
        for member in self.members:
            self._free.put(member)

    output_size = staticmethod(Stylizer.output_size)

    @property
    def evaluations_total(self) -> int:
        """Evaluations of every member together."""
        return sum(m.evaluations_total for m in self.members)

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[Stylizer]:
        member = self._free.get()
        try:
            yield member
        finally:
            self._free.put(member)

    def warmup(self, size: int = 64) -> None:
        """Warm every device up."""
        for member in self.members:
            member.warmup(size)

    def stylize(
        self,
        content: Image,
        styles: Sequence[Image],
        options: StyleOptions | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Result:
        """`Stylizer.stylize` on a free device (blocks while every device is busy)."""
        with self._borrow() as member:
            return member.stylize(content, styles, options, on_progress, should_stop)

    def evaluate(
        self,
        content: Image,
        styles: Sequence[Image],
        image: Image,
        options: StyleOptions | None = None,
    ) -> Losses:
        """`Stylizer.evaluate` on a free device."""
        with self._borrow() as member:
            return member.evaluate(content, styles, image, options)


def load_stylizer(
    weights: str | Path | None = None, *, workers: int = 1
) -> Stylizer | StylizerPool:
    """A Stylizer, or a pool of one per GPU when several GPUs serve several workers."""
    for gpu in tf.config.list_physical_devices("GPU"):
        # Allocate GPU memory as jobs need it rather than all of it up front, so the memory
        # metric means something and a sidecar or profiler can share the card. Only possible
        # before TensorFlow initialises the GPU (it is a no-op afterwards).
        with contextlib.suppress(RuntimeError, ValueError):
            tf.config.experimental.set_memory_growth(gpu, True)
    gpus = tf.config.list_logical_devices("GPU")
    if workers > 1 and len(gpus) > 1:
        return StylizerPool(weights, [d.name for d in gpus[:workers]])
    return Stylizer(weights)


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


def _loss_weights(options: StyleOptions) -> tf.Tensor:
    """[content, style per layer, tv, tv power] as one tensor, so new values never retrace."""
    return tf.constant(
        [
            options.content_weight,
            options.style_weight / len(options.style_layers),
            options.tv_weight,
            options.tv_power,
        ],
        dtype=tf.float32,
    )


def _blend_weights(options: StyleOptions, count: int) -> list[float]:
    raw = list(options.style_blend_weights) or [1.0] * count
    total = sum(raw)
    return [w / total for w in raw]


def _scale_sizes(height: int, width: int, scales: int) -> list[tuple[int, int]]:
    """Sizes of the coarse-to-fine pyramid, coarsest first, each half the next."""
    return [
        (max(1, round(height / 2**k)), max(1, round(width / 2**k)))
        for k in range(scales - 1, -1, -1)
    ]


def _split_budget(total: int, parts: int) -> list[int]:
    """Equal shares of the evaluation budget per scale; the finest scale gets the remainder."""
    share = max(1, total // parts)
    budgets = [share] * (parts - 1)
    return [*budgets, max(1, total - sum(budgets))]


def _initial_image(
    options: StyleOptions, base: Image, styles: Sequence[Image], rng: np.random.Generator
) -> vgg.FloatImage:
    h, w = base.shape[:2]
    if options.init == "content":
        return vgg.preprocess(base)
    if options.init == "style":
        return vgg.preprocess(images.resize_to(styles[0], h, w))
    # The tutorial's init: uniform noise in preprocessed (mean-subtracted BGR) space.
    return (rng.uniform(0, 255, (h, w, 3)) - 128.0).astype(np.float32)


def _upsample(x: Vector, previous: tuple[int, int], size: tuple[int, int]) -> Vector:
    """Bicubic upsampling of a preprocessed image to `size` for the next, finer scale."""
    image = tf.image.resize(x.reshape(1, *previous, 3), size, method="bicubic")
    return np.asarray(image, dtype=np.float64).ravel()


def _losses(terms: tuple[float, ...]) -> Losses:
    return Losses(total=terms[0], content=terms[1], style=terms[2], tv=terms[3])


#: What the server runs jobs on: one Stylizer, or one per device.
Engine = Stylizer | StylizerPool
