"""Accelerator checks at start: `--require-gpu` makes a GPU image fail fast on a CPU node."""

from __future__ import annotations

import os


class NoGpuError(RuntimeError):
    """No usable GPU is visible to the engine's framework."""


def visible_gpus() -> list[str]:
    """Names of the GPUs the engine's Keras backend can use (empty on CPU-only hosts)."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow").lower()
    if backend == "jax":
        import jax  # type: ignore[import-not-found,unused-ignore]

        try:
            return [str(d) for d in jax.devices("gpu")]
        except RuntimeError:  # jax raises when the platform has no device
            return []
    if backend == "torch":
        import torch  # type: ignore[import-not-found,unused-ignore]

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    import tensorflow as tf

    return [device.name for device in tf.config.list_physical_devices("GPU")]


def require_gpu() -> list[str]:
    """The visible GPUs; NoGpuError (with what to check) when there is none."""
    gpus = visible_gpus()
    if not gpus:
        raise NoGpuError(
            "--require-gpu: no usable GPU is visible (check the node's GPU, the device plugin's "
            "nvidia.com/gpu resource, the driver libraries on LD_LIBRARY_PATH and "
            "CUDA_VISIBLE_DEVICES)"
        )
    return gpus


__all__ = ["NoGpuError", "require_gpu", "visible_gpus"]
