"""What every Keras backend module provides: a `Backend` (devices, memory) and its `LossStep`.

The engine talks to these two classes only, with numpy arrays in and out, so it never touches a
framework's gradient API. Each backend module (`tensorflow.py`, `jax.py`) implements them once.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from styletx.errors import OutOfMemory
from styletx.losses import TERM_FIELDS, WEIGHT_FIELDS
from styletx.precision import gpu_bfloat16

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class DeviceTargets:
    """One batch's targets on the step's device: row i belongs to sample (job) i.

    `content` is `[B, h, w, C]` (content-layer features), `grams` one `[B, C, C]` per style layer,
    `weights` `[B, 4]` (`losses.WEIGHT_FIELDS`). Rows of several jobs of one shape can be joined
    with `LossStep.concat` and evaluated as one batch.
    """

    content: Any
    grams: tuple[Any, ...]
    weights: Any

    @property
    def batch(self) -> int:
        return int(self.weights.shape[0])


class LossStep(ABC):
    """The compiled computations of one (content layer, style layers) choice on one device.

    `targets` maps images to content features and Gram matrices (computed once per job and
    scale); `loss_and_grad` is the per-evaluation step. Both take a batch `[B, H, W, 3]` of
    preprocessed images of any height and width.
    """

    #: Layers the step extracts: the content layer first, then the style layers.
    layers: tuple[str, ...]
    #: Whether each new input shape (batch size included) costs a compilation (XLA backends);
    #: the cross-job batcher then keeps to a few batch sizes.
    compiles_per_shape: bool = False

    @abstractmethod
    def targets(self, images: Array) -> tuple[Array, list[Array]]:
        """Content-layer features `[B, h, w, C]` and one Gram `[B, C, C]` per style layer
        (float32 numpy) of preprocessed `images` `[B, H, W, 3]`."""

    @abstractmethod
    def put(self, content: Array, grams: Sequence[Array], weights: Array) -> DeviceTargets:
        """Targets (numpy, float32-convertible) moved onto the device once, for many steps."""

    @abstractmethod
    def with_weights(self, targets: DeviceTargets, weights: Array) -> DeviceTargets:
        """`targets` with other loss weights `[B, 4]` (the same content and Grams on the device),
        e.g. scaled by a float16 loss scale."""

    @abstractmethod
    def concat(self, parts: Sequence[DeviceTargets]) -> DeviceTargets:
        """Several batches' targets as one batch (rows in order), for jobs of the same shape."""

    @abstractmethod
    def loss_and_grad(self, images: Array, targets: DeviceTargets) -> tuple[Array, Array]:
        """Per-sample loss terms `[B, 4]` (float64, `losses.TERM_FIELDS`) and the gradient of
        each sample's total with respect to its image, `[B, H, W, 3]` (float32)."""

    @property
    @abstractmethod
    def compilations(self) -> int:
        """How many times this step traced or compiled a function (a new shape costs one on
        XLA backends, nothing on TensorFlow after the first)."""


class Backend(ABC):
    """One Keras backend: device names, placement, memory figures, and `LossStep`s."""

    #: Keras' name of the backend ("tensorflow", "jax").
    name: str

    @abstractmethod
    def version(self) -> str:
        """The framework's version."""

    @abstractmethod
    def configure(self) -> None:
        """Process-wide settings to make before the first model is built (e.g. GPU memory
        growth); idempotent."""

    @abstractmethod
    def accelerators(self) -> list[str]:
        """Canonical names ("GPU:0", ...) of the accelerators this backend sees."""

    @abstractmethod
    def device_name(self, requested: str | None) -> str:
        """Canonical name ("CPU:0", "GPU:1") of `requested` (any spelling the framework takes),
        or of the backend's default device when None."""

    @abstractmethod
    def placement(self, device: str) -> contextlib.AbstractContextManager[object]:
        """Context in which new variables and computations land on `device`."""

    @abstractmethod
    def memory_info(self, device: str) -> dict[str, int]:
        """{device: bytes in use} for an accelerator; empty for a CPU."""

    @abstractmethod
    def memory_capacity(self, device: str) -> int | None:
        """Bytes the framework may allocate on `device`; None where it cannot tell (a CPU)."""

    @abstractmethod
    def peak_memory(self, device: str) -> int | None:
        """Most bytes in use on `device` so far (since the process started, or the last
        `reset_peak_memory`); None for a CPU."""

    def bfloat16_native(self, device: str) -> tuple[bool, str]:
        """Whether this backend computes bfloat16 convolutions natively on `device`, and what
        that was decided from (for `auto` precision, `styletx.precision.PrecisionPolicy`).
        By default a GPU of compute capability >= 8.0 (`compute_capability`) and no CPU."""
        if device.startswith("CPU"):
            return False, f"{self.name} on a CPU: no native bfloat16 convolutions"
        capability = self.compute_capability(device)
        if capability is None:
            return False, f"{device}: compute capability unknown"
        found = f"{device} compute capability {capability[0]}.{capability[1]}"
        return gpu_bfloat16(capability), found

    def compute_capability(self, device: str) -> tuple[int, int] | None:
        """CUDA compute capability (major, minor) of a GPU `device`; None where unknown."""
        return None

    def reset_peak_memory(self, device: str) -> bool:
        """Start `peak_memory` over from the bytes in use now; False where the framework
        cannot (then the peak keeps counting from the start of the process)."""
        return False

    @abstractmethod
    def make_step(
        self, extractor: Any, layers: tuple[str, ...], device: str, shape_step: int = 1
    ) -> LossStep:
        """A `LossStep` over `extractor`, the Keras model `vgg.feature_extractor` built for
        `layers` (content layer first). `shape_step` > 1 lets the step run an image padded to
        `geometry.padded_size` (exactly: same losses and gradient) where the backend gains
        from fewer shapes."""


class OutOfMemoryBoundary(contextlib.ContextDecorator):
    """Where a backend's code meets the framework: a framework's out-of-memory error (as
    `is_framework_oom` tells) or a MemoryError raised inside leaves as the engine's
    `OutOfMemory`, the original chained. A context manager, or a decorator of methods."""

    def __init__(self, is_framework_oom: Callable[[Exception], bool]) -> None:
        self._is_framework_oom = is_framework_oom

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not isinstance(exc, Exception) or isinstance(exc, OutOfMemory):
            return
        if isinstance(exc, MemoryError) or self._is_framework_oom(exc):
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise OutOfMemory(f"out of memory: {first}") from exc


def canonical_device(name: str) -> str:
    """'CPU:0' from '/job:localhost/replica:0/task:0/device:CPU:0', '/gpu:1', 'cuda:1', ..."""
    tail = name.rsplit("/", 1)[-1].removeprefix("device:")
    kind, _, index = tail.partition(":")
    kind = {"cuda": "GPU", "rocm": "GPU"}.get(kind.lower(), kind.upper())
    return f"{kind}:{int(index) if index else 0}"


def gram_columns(parts: Sequence[DeviceTargets]) -> list[list[Any]]:
    """Per style layer, the Gram batches of every part in order (what `concat` joins)."""
    return [list(layer) for layer in zip(*(p.grams for p in parts), strict=True)]


def check_step_inputs(images: Array, targets: DeviceTargets) -> Array:
    """`images` as contiguous float32 `[B, H, W, 3]`, its batch matching the targets'."""
    batch = np.ascontiguousarray(images, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {batch.shape}")
    if batch.shape[0] != targets.batch:
        raise ValueError(f"{batch.shape[0]} images for {targets.batch} rows of targets")
    return batch


def check_weights(targets: DeviceTargets, weights: Array) -> None:
    """New loss weights for `targets`: one row of `WEIGHT_FIELDS` per sample."""
    if np.shape(weights) != (targets.batch, len(WEIGHT_FIELDS)):
        raise ValueError(f"weights {np.shape(weights)} for {targets.batch} rows of targets")


def check_target_shapes(content: Array, grams: Sequence[Array], weights: Array) -> None:
    """Same batch everywhere and the documented ranks, before anything reaches a device."""
    batch = content.shape[0]
    if content.ndim != 4 or weights.shape != (batch, len(WEIGHT_FIELDS)):
        raise ValueError(f"content {content.shape} / weights {weights.shape}: bad shapes")
    for gram in grams:
        if gram.ndim != 3 or gram.shape[0] != batch or gram.shape[1] != gram.shape[2]:
            raise ValueError(f"gram {gram.shape} does not fit a batch of {batch}")


__all__ = [
    "Backend",
    "DeviceTargets",
    "LossStep",
    "OutOfMemoryBoundary",
    "TERM_FIELDS",
    "WEIGHT_FIELDS",
    "canonical_device",
    "check_step_inputs",
    "check_target_shapes",
    "check_weights",
    "gram_columns",
]
