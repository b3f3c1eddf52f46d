"""Accelerator checks at start: `--require-gpu` makes a GPU image fail fast on a CPU node."""

from __future__ import annotations


class NoGpuError(RuntimeError):
    """No usable GPU is visible to the engine's framework."""


def visible_gpus() -> list[str]:
    """Names of the GPUs the engine's Keras backend can use (empty on CPU-only hosts)."""
    from styletx import backends

    found = backends.load()
    found.configure()  # before the first device query: TensorFlow's memory growth needs it
    return found.accelerators()


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
