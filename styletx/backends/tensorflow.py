"""TensorFlow backend: `tf.function` + `GradientTape`, traced once for every image shape.

Both compiled functions carry an input signature whose batch, height and width are unknown
(`[None, None, None, 3]`), so TensorFlow traces each once per `LossStep` and reuses that graph
for every aspect ratio and every coarse-to-fine scale: no per-shape trace.

TensorFlow's oneDNN kernels still build and keep primitives (JIT code) for every shape they
meet, a few MiB per shape, so with a `shape_step` the network runs an image padded to the shape
`geometry.padded_size` gives, and many aspect ratios share one shape, whatever ran before
(`styletx.shapes.ShapePlanner`). The padding does not change a single result: the pad is
zeros in preprocessed space (what a 'same' convolution reads past the border anyway), and after
every layer the activations outside the image's own part are multiplied by zero, so each
convolution at the border sees the zeros it would have seen, each 2x2 pooling of the image's part
reads only that part, and the pad adds nothing to a Gram matrix. The losses and the gradient are
the unpadded image's (tests/unit/test_padding.py). A function of each kind is traced for padded
and for unpadded images, so an image that needs no padding pays nothing for the masks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf

from styletx import losses
from styletx.backends.base import (
    Array,
    Backend,
    DeviceTargets,
    LossStep,
    OutOfMemoryBoundary,
    canonical_device,
    check_step_inputs,
    check_target_shapes,
    check_weights,
    gram_columns,
)
from styletx.precision import cpu_bfloat16_flags
from styletx.shapes import ShapePlanner

_IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
_WEIGHTS = tf.TensorSpec([None, len(losses.WEIGHT_FIELDS)], tf.float32, name="weights")
_PADDED = tf.TensorSpec([2], tf.int32, name="padded")

#: TensorFlow reports an allocation that fails, on a device or the host, as ResourceExhausted.
_OUT_OF_MEMORY = OutOfMemoryBoundary(lambda exc: isinstance(exc, tf.errors.ResourceExhaustedError))


def _mask(features: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """`[1, H, W, 1]` ones on the top-left `height` x `width` of `features`, zeros elsewhere."""
    shape = tf.shape(features)
    rows = tf.sequence_mask(height, shape[1], dtype=features.dtype)
    cols = tf.sequence_mask(width, shape[2], dtype=features.dtype)
    return rows[None, :, None, None] * cols[None, None, :, None]


class TensorFlowStep(LossStep):
    """The loss-and-gradient step and the target function of one layer set, on one device."""

    def __init__(
        self, extractor: Any, layers: tuple[str, ...], device: str, shape_step: int = 1
    ) -> None:
        self.layers = layers
        self.shapes = ShapePlanner(shape_step)
        self._device = f"/device:{device}"
        self._extractor = extractor
        # VGG16 is a chain: the extractor's layers in order, up to the deepest one `layers` needs.
        self._chain = [
            layer for layer in extractor.layers if not isinstance(layer, keras.layers.InputLayer)
        ]
        channels = [int(output.shape[-1]) for output in extractor.outputs]
        content = tf.TensorSpec([None, None, None, channels[0]], tf.float32, name="content")
        grams = tuple(tf.TensorSpec([None, c, c], tf.float32, name="gram") for c in channels[1:])
        # Two versions of each function, keyed by whether the image is padded: an image the
        # network runs at its own shape (a square, a side already on the step) takes the plain
        # model and pays nothing for the masks. Each is traced once, on first use.
        self._targets = {
            pad: tf.function(
                functools.partial(self._targets_graph, pad=pad),
                input_signature=[_IMAGES, _PADDED],
            )
            for pad in (False, True)
        }
        self._loss_and_grad = {
            pad: tf.function(
                functools.partial(self._loss_and_grad_graph, pad=pad),
                input_signature=[_IMAGES, _PADDED, content, grams, _WEIGHTS],
            )
            for pad in (False, True)
        }

    def _features(self, images: tf.Tensor, padded: tf.Tensor, pad: bool) -> list[tf.Tensor]:
        """The outputs of `layers` for `images`; with `pad`, run at the `padded` (height, width):
        the content layer's cropped to the image's own part, the style layers' zero outside it."""
        if not pad:
            return list(self._extractor(images, training=False))
        shape = tf.shape(images)
        height, width = shape[1], shape[2]
        x = tf.pad(images, [[0, 0], [0, padded[0] - height], [0, padded[1] - width], [0, 0]])
        wanted = set(self.layers)
        outputs: dict[str, tuple[tf.Tensor, tf.Tensor, tf.Tensor]] = {}
        for layer in self._chain:
            x = layer(x, training=False)
            if isinstance(layer, keras.layers.MaxPooling2D):
                # 2x2, stride 2, no padding: the image's part of the output is floor(h / 2).
                height, width = height // 2, width // 2
            x = x * _mask(x, height, width)
            if layer.name in wanted:
                outputs[layer.name] = (x, height, width)
        content, content_height, content_width = outputs[self.layers[0]]
        return [
            content[:, :content_height, :content_width, :],
            *(outputs[name][0] for name in self.layers[1:]),
        ]

    def _targets_graph(
        self, images: tf.Tensor, padded: tf.Tensor, pad: bool
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        features = self._features(images, padded, pad)
        # float32 targets whatever the compute dtype (16 bits under mixed precision).
        content = tf.cast(features[0], tf.float32)
        return content, [losses.gram_matrix(f) for f in features[1:]]

    def _loss_and_grad_graph(
        self,
        images: tf.Tensor,
        padded: tf.Tensor,
        content: tf.Tensor,
        grams: tuple[tf.Tensor, ...],
        weights: tf.Tensor,
        pad: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(images)
            features = self._features(images, padded, pad)
            terms = losses.loss_terms(features, images, content, grams, weights)
            # Samples are independent, so the gradient of the batch's summed total is each
            # sample's own gradient.
            total = tf.reduce_sum(terms[:, 0])
        return terms, tape.gradient(total, images)

    @property
    def shape_step(self) -> int:
        """The step the planner pads shorter sides to (1: no padding)."""
        return self.shapes.step

    def run_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the network runs a `height` x `width` image at (`ShapePlanner`)."""
        return self.shapes.shape(height, width)

    def _padded(self, images: Array) -> tuple[bool, tf.Tensor]:
        """Whether `images` run padded, and the (height, width) they run at."""
        shape = images.shape[1:3]
        padded = self.run_shape(*shape)
        return padded != tuple(shape), tf.constant(padded, dtype=tf.int32)

    @_OUT_OF_MEMORY
    def targets(self, images: Array) -> tuple[Array, list[Array]]:
        pad, padded = self._padded(images)
        with tf.device(self._device):
            content, grams = self._targets[pad](tf.constant(images, dtype=tf.float32), padded)
        return content.numpy(), [g.numpy() for g in grams]

    @_OUT_OF_MEMORY
    def put(self, content: Array, grams: Sequence[Array], weights: Array) -> DeviceTargets:
        check_target_shapes(content, grams, weights)
        with tf.device(self._device):
            return DeviceTargets(
                content=tf.constant(content, dtype=tf.float32),
                grams=tuple(tf.constant(g, dtype=tf.float32) for g in grams),
                weights=tf.constant(weights, dtype=tf.float32),
            )

    @_OUT_OF_MEMORY
    def with_weights(self, targets: DeviceTargets, weights: Array) -> DeviceTargets:
        check_weights(targets, weights)
        with tf.device(self._device):
            return dataclasses.replace(targets, weights=tf.constant(weights, dtype=tf.float32))

    @_OUT_OF_MEMORY
    def concat(self, parts: Sequence[DeviceTargets]) -> DeviceTargets:
        with tf.device(self._device):
            return DeviceTargets(
                content=tf.concat([p.content for p in parts], axis=0),
                grams=tuple(tf.concat(g, axis=0) for g in gram_columns(parts)),
                weights=tf.concat([p.weights for p in parts], axis=0),
            )

    @_OUT_OF_MEMORY
    def loss_and_grad(self, images: Array, targets: DeviceTargets) -> tuple[Array, Array]:
        batch = check_step_inputs(images, targets)
        pad, padded = self._padded(batch)
        with tf.device(self._device):
            terms, grad = self._loss_and_grad[pad](
                tf.constant(batch), padded, targets.content, targets.grams, targets.weights
            )
        return terms.numpy(), grad.numpy()

    @property
    def compilations(self) -> int:
        functions = [*self._targets.values(), *self._loss_and_grad.values()]
        return sum(int(f.experimental_get_tracing_count()) for f in functions)


class TensorFlowBackend(Backend):
    """Keras on TensorFlow: the default backend, the one the images and CI run."""

    name = "tensorflow"

    def __init__(self) -> None:
        self._configured = False

    def version(self) -> str:
        return str(tf.__version__)

    def configure(self) -> None:
        if self._configured:
            return
        for gpu in tf.config.list_physical_devices("GPU"):
            # Allocate GPU memory as jobs need it rather than all of it up front, so the memory
            # figures mean something and a sidecar or profiler can share the card. Only possible
            # before TensorFlow initialises the GPU (a no-op afterwards).
            with contextlib.suppress(RuntimeError, ValueError):
                tf.config.experimental.set_memory_growth(gpu, True)
        self._configured = True

    def accelerators(self) -> list[str]:
        return [canonical_device(d.name) for d in tf.config.list_logical_devices("GPU")]

    def device_name(self, requested: str | None) -> str:
        if requested:
            return canonical_device(requested)
        gpus = self.accelerators()
        return gpus[0] if gpus else "CPU:0"

    @contextlib.contextmanager
    def placement(self, device: str) -> Iterator[None]:
        # tf.device is thread-local: every entry point run on a worker thread enters it.
        with tf.device(f"/device:{device}"), _OUT_OF_MEMORY:
            yield

    def bfloat16_native(self, device: str) -> tuple[bool, str]:
        if not device.startswith("CPU"):
            return super().bfloat16_native(device)
        # oneDNN (on by default on x86 Linux) runs bfloat16 convolutions on the CPU's bfloat16
        # instructions; without it TensorFlow's own kernels emulate them, slower than float32.
        if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() in ("0", "false"):
            return False, "TensorFlow's oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0)"
        flags = cpu_bfloat16_flags()
        if not flags:
            return False, "CPU without AVX512_BF16 or AMX-BF16"
        return True, f"CPU flags {', '.join(flags)}, TensorFlow with oneDNN"

    def compute_capability(self, device: str) -> tuple[int, int] | None:
        kind, _, index = device.partition(":")
        gpus = tf.config.list_physical_devices(kind)
        if kind != "GPU" or int(index or 0) >= len(gpus):
            return None
        details = tf.config.experimental.get_device_details(gpus[int(index or 0)])
        found = details.get("compute_capability")
        return (int(found[0]), int(found[1])) if found else None

    def memory_info(self, device: str) -> dict[str, int]:
        if device.startswith("CPU"):
            return {}
        info = tf.config.experimental.get_memory_info(device)
        return {device: int(info["current"])}

    def memory_capacity(self, device: str) -> int | None:
        # TensorFlow reports no total for a GPU (with memory growth on it grows until the card
        # is full): the operator states it (styletx-server --device-memory-bytes).
        return None

    def peak_memory(self, device: str) -> int | None:
        if device.startswith("CPU"):
            return None
        return int(tf.config.experimental.get_memory_info(device)["peak"])

    def reset_peak_memory(self, device: str) -> bool:
        if device.startswith("CPU"):
            return False
        tf.config.experimental.reset_memory_stats(device)
        return True

    @_OUT_OF_MEMORY
    def make_step(
        self, extractor: Any, layers: tuple[str, ...], device: str, shape_step: int = 1
    ) -> LossStep:
        return TensorFlowStep(extractor, layers, device, shape_step)


BACKEND = TensorFlowBackend()

__all__ = ["BACKEND", "TensorFlowBackend", "TensorFlowStep"]
