"""TensorFlow backend: `tf.function` + `GradientTape`, traced once for every image shape.

Both compiled functions carry an input signature whose batch, height and width are unknown
(`[None, None, None, 3]`), so TensorFlow traces each once per `LossStep` and reuses that graph
for every aspect ratio and every coarse-to-fine scale: no per-shape trace, no per-shape memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from styletx import losses
from styletx.backends.base import (
    Array,
    Backend,
    DeviceTargets,
    LossStep,
    canonical_device,
    check_step_inputs,
    check_target_shapes,
    check_weights,
    gram_columns,
)

_IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
_WEIGHTS = tf.TensorSpec([None, len(losses.WEIGHT_FIELDS)], tf.float32, name="weights")


class TensorFlowStep(LossStep):
    """The loss-and-gradient step and the target function of one layer set, on one device."""

    def __init__(self, extractor: Any, layers: tuple[str, ...], device: str) -> None:
        self.layers = layers
        self._extractor = extractor
        self._device = f"/device:{device}"
        channels = [int(output.shape[-1]) for output in extractor.outputs]
        content = tf.TensorSpec([None, None, None, channels[0]], tf.float32, name="content")
        grams = tuple(tf.TensorSpec([None, c, c], tf.float32, name="gram") for c in channels[1:])
        self._targets = tf.function(self._targets_graph, input_signature=[_IMAGES])
        self._loss_and_grad = tf.function(
            self._loss_and_grad_graph, input_signature=[_IMAGES, content, grams, _WEIGHTS]
        )

    def _targets_graph(self, images: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        features = self._extractor(images, training=False)
        # float32 targets whatever the compute dtype (16 bits under mixed precision).
        content = tf.cast(features[0], tf.float32)
        return content, [losses.gram_matrix(f) for f in features[1:]]

    def _loss_and_grad_graph(
        self,
        images: tf.Tensor,
        content: tf.Tensor,
        grams: tuple[tf.Tensor, ...],
        weights: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(images)
            features = self._extractor(images, training=False)
            terms = losses.loss_terms(features, images, content, grams, weights)
            # Samples are independent, so the gradient of the batch's summed total is each
            # sample's own gradient.
            total = tf.reduce_sum(terms[:, 0])
        return terms, tape.gradient(total, images)

    def targets(self, images: Array) -> tuple[Array, list[Array]]:
        with tf.device(self._device):
            content, grams = self._targets(tf.constant(images, dtype=tf.float32))
        return content.numpy(), [g.numpy() for g in grams]

    def put(self, content: Array, grams: Sequence[Array], weights: Array) -> DeviceTargets:
        check_target_shapes(content, grams, weights)
        with tf.device(self._device):
            return DeviceTargets(
                content=tf.constant(content, dtype=tf.float32),
                grams=tuple(tf.constant(g, dtype=tf.float32) for g in grams),
                weights=tf.constant(weights, dtype=tf.float32),
            )

    def with_weights(self, targets: DeviceTargets, weights: Array) -> DeviceTargets:
        check_weights(targets, weights)
        with tf.device(self._device):
            return dataclasses.replace(targets, weights=tf.constant(weights, dtype=tf.float32))

    def concat(self, parts: Sequence[DeviceTargets]) -> DeviceTargets:
        with tf.device(self._device):
            return DeviceTargets(
                content=tf.concat([p.content for p in parts], axis=0),
                grams=tuple(tf.concat(g, axis=0) for g in gram_columns(parts)),
                weights=tf.concat([p.weights for p in parts], axis=0),
            )

    def loss_and_grad(self, images: Array, targets: DeviceTargets) -> tuple[Array, Array]:
        batch = check_step_inputs(images, targets)
        with tf.device(self._device):
            terms, grad = self._loss_and_grad(
                tf.constant(batch), targets.content, targets.grams, targets.weights
            )
        return terms.numpy(), grad.numpy()

    @property
    def compilations(self) -> int:
        return int(
            self._targets.experimental_get_tracing_count()
            + self._loss_and_grad.experimental_get_tracing_count()
        )


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

    def placement(self, device: str) -> contextlib.AbstractContextManager[object]:
        # tf.device is thread-local: every entry point run on a worker thread enters it.
        placed: contextlib.AbstractContextManager[object] = tf.device(f"/device:{device}")
        return placed

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

    def make_step(self, extractor: Any, layers: tuple[str, ...], device: str) -> LossStep:
        return TensorFlowStep(extractor, layers, device)


BACKEND = TensorFlowBackend()

__all__ = ["BACKEND", "TensorFlowBackend", "TensorFlowStep"]
