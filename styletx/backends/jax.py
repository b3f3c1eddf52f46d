"""JAX backend: `jax.jit(jax.value_and_grad)` over the Keras model's `stateless_call`.

XLA compiles for static shapes, so unlike TensorFlow each new (batch, height, width) costs one
compilation. Each step keeps its compiled executables (ahead-of-time: `jit(...).lower().compile()`)
in a bounded LRU (`EXECUTABLES_PER_STEP` per function), so the shapes in use stay compiled and a
stream of new aspect ratios cannot grow memory. JAX's own tracing and compilation caches would
still hold an evicted executable, so an eviction also clears them (`jax.clear_caches()`); the
executables in our LRU are held directly and stay usable. The TensorFlow backend's exact padding
(`shape_step`) is not done here: the pad amounts are static under `jit`, so padded images would
still compile once per shape.

Losses are summed in float64 (see `styletx.losses`), which JAX allows only with x64 enabled: the
functions are traced and run inside `jax.enable_x64(True)`, a thread-local switch, so the rest
of the process keeps JAX's float32 defaults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
from styletx.lru import LRUCache
from styletx.precision import parse_capability

log = logging.getLogger(__name__)

#: Compiled shapes kept per function of a step: a job at s scales uses s shapes, and batched
#: jobs (styletx.batcher) a few batch sizes (1, 2, 4, 8) of each.
EXECUTABLES_PER_STEP = 16

_ShapeKey = tuple[Any, tuple[tuple[tuple[int, ...], str], ...]]

#: XLA reports a failed allocation as a JaxRuntimeError whose message starts RESOURCE_EXHAUSTED.
_OUT_OF_MEMORY = OutOfMemoryBoundary(
    lambda exc: isinstance(exc, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(exc)
)


def _shape_key(args: tuple[Any, ...]) -> _ShapeKey:
    leaves, tree = jax.tree_util.tree_flatten(args)
    return tree, tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves)


class _Executables:
    """A jitted function's ahead-of-time compiled executables, one per input shape, in an LRU."""

    def __init__(self, jitted: Any, capacity: int) -> None:
        self._jitted = jitted
        self._cache: LRUCache[_ShapeKey, Any] = LRUCache(capacity, on_evict=self._evicted)
        self.compilations = 0

    def _evicted(self, key: _ShapeKey, executable: Any) -> None:
        # JAX's internal caches (keyed by traced jaxpr and lowered module) also reference the
        # executable; drop them so the eviction frees its memory.
        log.debug("jax executable evicted", extra={"shapes": key[1]})
        jax.clear_caches()  # type: ignore[no-untyped-call]

    def __call__(self, *args: Any) -> Any:
        with jax.enable_x64(True):
            executable = self._cache.get_or_create(_shape_key(args), lambda: self._compile(args))
            return executable(*args)

    def _compile(self, args: tuple[Any, ...]) -> Any:
        self.compilations += 1
        return self._jitted.lower(*args).compile()

    def __len__(self) -> int:
        return len(self._cache)


class JaxStep(LossStep):
    """The loss-and-gradient step and the target function of one layer set, on one device."""

    compiles_per_shape = True

    def __init__(
        self,
        extractor: Any,
        layers: tuple[str, ...],
        device: Any,
        capacity: int,
    ) -> None:
        self.layers = layers
        self._device = device
        # The weights are arguments of the compiled functions, not constants closed over: XLA
        # would otherwise copy all 58 MB into every executable.
        self._trainable = [jax.device_put(v.value, device) for v in extractor.trainable_variables]
        self._frozen = [jax.device_put(v.value, device) for v in extractor.non_trainable_variables]

        def features(trainable: Any, frozen: Any, images: Any) -> list[Any]:
            outputs, _ = extractor.stateless_call(trainable, frozen, images, training=False)
            return list(outputs)

        def targets(trainable: Any, frozen: Any, images: Any) -> tuple[Any, list[Any]]:
            found = features(trainable, frozen, images)
            # float32 targets whatever the compute dtype (16 bits under mixed precision).
            content = found[0].astype(jnp.float32)
            return content, [losses.gram_matrix(f) for f in found[1:]]

        def total(
            images: Any, trainable: Any, frozen: Any, content: Any, grams: Any, weights: Any
        ) -> tuple[Any, Any]:
            found = features(trainable, frozen, images)
            terms = losses.loss_terms(found, images, content, grams, weights)
            # Samples are independent: the gradient of the summed total is per-sample.
            return jnp.sum(terms[:, 0]), terms

        value_and_grad: Callable[..., Any] = jax.value_and_grad(total, has_aux=True)
        self._targets = _Executables(jax.jit(targets), capacity)
        self._loss_and_grad = _Executables(jax.jit(value_and_grad), capacity)

    def _put(self, array: Array) -> Any:
        return jax.device_put(np.asarray(array, dtype=np.float32), self._device)

    @_OUT_OF_MEMORY
    def targets(self, images: Array) -> tuple[Array, list[Array]]:
        content, grams = self._targets(self._trainable, self._frozen, self._put(images))
        return np.asarray(content), [np.asarray(g) for g in grams]

    @_OUT_OF_MEMORY
    def put(self, content: Array, grams: Sequence[Array], weights: Array) -> DeviceTargets:
        check_target_shapes(content, grams, weights)
        return DeviceTargets(
            content=self._put(content),
            grams=tuple(self._put(g) for g in grams),
            weights=self._put(weights),
        )

    @_OUT_OF_MEMORY
    def with_weights(self, targets: DeviceTargets, weights: Array) -> DeviceTargets:
        check_weights(targets, weights)
        return dataclasses.replace(targets, weights=self._put(weights))

    @_OUT_OF_MEMORY
    def concat(self, parts: Sequence[DeviceTargets]) -> DeviceTargets:
        return DeviceTargets(
            content=jnp.concatenate([p.content for p in parts], axis=0),
            grams=tuple(jnp.concatenate(g, axis=0) for g in gram_columns(parts)),
            weights=jnp.concatenate([p.weights for p in parts], axis=0),
        )

    @_OUT_OF_MEMORY
    def loss_and_grad(self, images: Array, targets: DeviceTargets) -> tuple[Array, Array]:
        batch = self._put(check_step_inputs(images, targets))
        (_, terms), grad = self._loss_and_grad(
            batch,
            self._trainable,
            self._frozen,
            targets.content,
            list(targets.grams),
            targets.weights,
        )
        return np.asarray(terms, dtype=np.float64), np.asarray(grad)

    @property
    def compilations(self) -> int:
        return self._targets.compilations + self._loss_and_grad.compilations


class JaxBackend(Backend):
    """Keras on JAX (CPU, or the GPUs of a jax[cuda] install)."""

    name = "jax"

    def version(self) -> str:
        return str(jax.__version__)

    def configure(self) -> None:
        # JAX preallocates most of a GPU's memory by default; that is set by environment
        # variables read at its first use (XLA_PYTHON_CLIENT_PREALLOCATE), left to the operator.
        return None

    def _device(self, name: str) -> Any:
        kind, _, index = name.partition(":")
        platform = "cpu" if kind == "CPU" else "gpu"
        try:
            devices = jax.devices(platform)
        except RuntimeError as exc:
            raise ValueError(f"no {kind} device in this JAX install: {exc}") from exc
        if int(index) >= len(devices):
            raise ValueError(f"no device {name}: JAX sees {len(devices)} {kind} device(s)")
        return devices[int(index)]

    def accelerators(self) -> list[str]:
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            return []
        return [f"GPU:{i}" for i in range(len(gpus))]

    def device_name(self, requested: str | None) -> str:
        if requested:
            name = canonical_device(requested)
            self._device(name)  # refuse a device that does not exist now, not at the first job
            return name
        gpus = self.accelerators()
        return gpus[0] if gpus else "CPU:0"

    @contextlib.contextmanager
    def placement(self, device: str) -> Iterator[None]:
        with jax.default_device(self._device(device)), _OUT_OF_MEMORY:
            yield

    def bfloat16_native(self, device: str) -> tuple[bool, str]:
        if device.startswith("CPU"):
            # XLA's CPU backend converts bfloat16 convolutions to float32 and back: slower than
            # float32 (bench/RESULTS.md, GPU section), whatever the CPU's flags.
            return False, "JAX on a CPU computes bfloat16 convolutions in float32"
        return super().bfloat16_native(device)

    def compute_capability(self, device: str) -> tuple[int, int] | None:
        if device.startswith("CPU"):
            return None
        return parse_capability(getattr(self._device(device), "compute_capability", None))

    def _stats(self, device: str) -> dict[str, Any]:
        if device.startswith("CPU"):
            return {}
        stats: dict[str, Any] = self._device(device).memory_stats() or {}
        return stats

    def memory_info(self, device: str) -> dict[str, int]:
        if device.startswith("CPU"):
            return {}
        return {device: int(self._stats(device).get("bytes_in_use", 0))}

    def memory_capacity(self, device: str) -> int | None:
        # XLA's allocator pool: 75% of the GPU by default, XLA_PYTHON_CLIENT_MEM_FRACTION else.
        limit = self._stats(device).get("bytes_limit")
        return None if limit is None else int(limit)

    def peak_memory(self, device: str) -> int | None:
        peak = self._stats(device).get("peak_bytes_in_use")
        return None if peak is None else int(peak)

    @_OUT_OF_MEMORY
    def make_step(
        self, extractor: Any, layers: tuple[str, ...], device: str, shape_step: int = 1
    ) -> LossStep:
        # `shape_step` is TensorFlow's: padding here would still compile per image shape (the pad
        # amounts are static under jit), so JAX keeps its LRU of executables instead.
        return JaxStep(extractor, layers, self._device(device), EXECUTABLES_PER_STEP)


BACKEND = JaxBackend()

__all__ = ["BACKEND", "EXECUTABLES_PER_STEP", "JaxBackend", "JaxStep"]
