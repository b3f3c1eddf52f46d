"""Accelerator checks at start: `--require-gpu` makes a GPU image fail fast on a CPU node."""

from __future__ import annotations

import logging

from styletx_server.observe.logs import log_event

log = logging.getLogger(__name__)


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


def check_required_gpu(required: bool) -> None:
    """With --require-gpu: log the visible GPUs, or log and raise NoGpuError when none is."""
    if not required:
        return
    try:
        gpus = require_gpu()
    except RuntimeError as exc:
        log_event(log, "no_gpu", level=logging.ERROR, error=str(exc))
        raise
    log_event(log, "gpus", devices=gpus)


__all__ = ["NoGpuError", "check_required_gpu", "require_gpu", "visible_gpus"]
