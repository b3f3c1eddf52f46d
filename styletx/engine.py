"""`Stylizer`: the engine, one loaded VGG16 on one device: device lifecycle and the public API.

It knows no framework: the compiled loss-and-gradient step comes from `styletx.backends` (one
module per Keras backend) with numpy arrays in and out. A job's targets are `styletx.targets`',
its objective `styletx.objective`'s, its coarse-to-fine L-BFGS runs `styletx.scales`'. Steps are
cached per layer set in a small LRU (`STEPS_PER_STYLIZER`); on TensorFlow each is traced once
for every image shape.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from styletx import backends, geometry, heap, images, memory, vgg
from styletx.batcher import DEFAULT_WINDOW_SECONDS, MAX_BATCH, Batcher, BatchStats, Seat
from styletx.blas import limit_blas_threads
from styletx.errors import InvalidImage
from styletx.inputs import check_inputs
from styletx.lru import LRUCache
from styletx.objective import losses_of, make_objective
from styletx.options import StyleOptions
from styletx.precision import (
    DEFAULT_PRECISION,
    LossScale,
    Precision,
    PrecisionPolicy,
    check_setting,
    with_policy,
)
from styletx.presets import PRESETS
from styletx.protocol import ProgressCallback, StopCallback
from styletx.result import Image, Losses, Result
from styletx.scales import run_scales
from styletx.space import Space
from styletx.targets import blend_weights, luminance_inputs, style_targets
from styletx.weights import ResolvedWeights, resolve_weights

if TYPE_CHECKING:
    from styletx.backends.base import Backend, LossStep

log = logging.getLogger(__name__)

#: Layer sets (content layer + style layers) whose compiled step a Stylizer keeps, least recently
#: used evicted first. The presets share one layer set; a few custom ones stay warm.
STEPS_PER_STYLIZER = 4


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
            limit_blas_threads(blas_threads)
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
        check_inputs(content, styles, options)
        started = time.perf_counter()
        height, width = self.output_size(content.shape[0], content.shape[1], options.size)
        pixels = self.check_fits(content.shape[:2], [s.shape[:2] for s in styles], options)
        try:
            # Waits while the jobs running on this device leave too little memory (GPUs only).
            model = self.memory_model_for(options)
            with self.memory.reserve(pixels, should_stop, model):
                return run_scales(
                    self.step(options),
                    content,
                    styles,
                    options,
                    precision=self.precision_for(options),
                    output=(height, width),
                    started=started,
                    seat_for=self._seat,
                    on_evaluation=self._count_evaluation,
                    on_progress=on_progress,
                    should_stop=should_stop,
                )
        finally:
            # The job's activations are freed; give their pages back (styletx.heap).
            heap.trim()

    def _count_evaluation(self) -> None:
        with self._lock:
            self._evaluations_total += 1

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
        check_inputs(content, styles, options)
        h, w = self.output_size(content.shape[0], content.shape[1], options.size)
        grey = options.preserve_colors == "luminance"
        if grey:
            content, styles = luminance_inputs(content, styles)
        step = self.step(options)
        base = images.resize_to(content, h, w)
        targets = style_targets(step, base, styles, blend_weights(options, len(styles)), options)
        space = Space(h, w, grey)
        scale = LossScale(self.precision_for(options))
        objective = make_objective(
            step, targets, space, scale=scale, on_evaluation=self._count_evaluation
        )
        terms, _ = objective(space.point(images.resize_to(image, h, w)))
        return losses_of(terms)

    @contextlib.contextmanager
    def _seat(self, key: tuple[object, ...]) -> Iterator[Seat | None]:
        """A seat at the batcher for one scale of a job (None: batching is off)."""
        if self._batcher is None:
            yield None
            return
        with self._batcher.join(key) as seat:
            yield seat


__all__ = ["STEPS_PER_STYLIZER", "Stylizer"]
