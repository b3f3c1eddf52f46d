"""The engine's side of the assembly: how many workers the devices call for, and loading and
warming the engine in the background (health says SERVING only after that)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import styletx
from styletx.pool import load_stylizer
from styletx.protocol import Engine
from styletx_server.observe.logs import log_event
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.ops.config import ServerConfig

log = logging.getLogger(__name__)

#: Jobs per GPU when batching is on and the operator names no number: enough concurrent jobs
#: of one shape for the batcher to fill batches (bench/gpu_bench.py measures 4 x 256 px).
GPU_JOBS_PER_DEVICE = 4


def auto_jobs_per_device(config: ServerConfig, gpus: int) -> int:
    """--jobs-per-device, else `GPU_JOBS_PER_DEVICE` on GPUs with batching on, else 1."""
    if config.jobs_per_device:
        return config.jobs_per_device
    batching = config.batch_window_ms is None or config.batch_window_ms > 0
    return GPU_JOBS_PER_DEVICE if gpus and batching else 1


def load_engine(config: ServerConfig, *, workers: int, jobs_per_device: int) -> Engine:
    """The engine the config asks for (weights, backend, precision, batching, memory)."""
    window = config.batch_window_ms
    return load_stylizer(
        config.weights,
        workers=workers,
        backend=config.backend,
        jobs_per_device=jobs_per_device,
        precision=config.precision,
        batch_window=None if window is None else window / 1000.0,
        memory_capacity=config.device_memory_bytes or None,
        shape_step=config.shape_step,
    )


def load_and_warm(
    load: Callable[[], Engine], *, warmup: bool, metrics: ServerMetrics, jobs_per_device: int
) -> Engine:
    """Load the engine, warm it up, and report it (build info, memory gauges, a log line)."""
    started = time.monotonic()
    stylizer = load()
    if warmup:
        stylizer.warmup()
    backend, precision = stylizer.backend, stylizer.precision
    metrics.build_info.labels(
        version=styletx.__version__, backend=backend, precision=precision
    ).set(1)
    metrics.watch(stylizer)
    log_event(
        log,
        "engine",
        backend=backend,
        precision=precision,
        device=stylizer.device,
        jobs_per_device=jobs_per_device,
        batch_window_ms=round(1000 * stylizer.batch_window, 3),
        memory_capacity=stylizer.memory_capacity(),
        load_seconds=round(time.monotonic() - started, 3),
    )
    return stylizer


__all__ = [
    "GPU_JOBS_PER_DEVICE",
    "auto_jobs_per_device",
    "load_and_warm",
    "load_engine",
]
