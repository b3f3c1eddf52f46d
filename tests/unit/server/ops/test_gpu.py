"""Server wiring of the GPU options: flags, backend selection, workers per device, metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from styletx.batcher import BatchStats
from styletx.geometry import DEFAULT_SHAPE_STEP
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.ops.config import ServerConfig, load_config
from styletx_server.ops.loading import GPU_JOBS_PER_DEVICE, auto_jobs_per_device
from tests.support.engines import StubEngine

ROOT = Path(__file__).resolve().parents[4]


def test_gpu_options_come_from_flags_and_environment() -> None:
    config = load_config([], env={})
    assert (config.backend, config.precision, config.batch_window_ms) == (None, "auto", None)
    assert (config.jobs_per_device, config.device_memory_bytes) == (0, 0)
    assert config.shape_step == DEFAULT_SHAPE_STEP == 16
    env = {
        "STYLETX_SHAPE_STEP": "32",
        "STYLETX_BACKEND": "jax",
        "STYLETX_PRECISION": "mixed_bfloat16",
        "STYLETX_BATCH_WINDOW_MS": "2.5",
        "STYLETX_JOBS_PER_DEVICE": "3",
        "STYLETX_DEVICE_MEMORY_BYTES": "17179869184",
    }
    config = load_config(["--precision", "mixed_float16"], env=env)
    assert config.backend == "jax" and config.precision == "mixed_float16"  # the flag wins
    assert (config.batch_window_ms, config.jobs_per_device) == (2.5, 3)
    assert config.device_memory_bytes == 16 * 2**30
    assert config.shape_step == 32
    assert load_config(["--shape-step", "1"], env=env).shape_step == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--backend", "torch"],
        ["--precision", "float8"],
        ["--batch-window-ms", "-1"],
        ["--batch-window-ms", "5000"],
        ["--jobs-per-device", "-2"],
        ["--device-memory-bytes", "-1"],
        ["--shape-step", "0"],
        ["--shape-step", "257"],
    ],
)
def test_bad_gpu_options_exit_2_naming_the_flag(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        load_config(argv, env={})
    assert caught.value.code == 2
    assert argv[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "gpus", "expected"),
    [
        (ServerConfig(), 0, 1),
        (ServerConfig(), 2, GPU_JOBS_PER_DEVICE),
        (ServerConfig(batch_window_ms=0), 1, 1),  # no batching: one job per GPU
        (ServerConfig(batch_window_ms=5), 1, GPU_JOBS_PER_DEVICE),
        (ServerConfig(jobs_per_device=3), 0, 3),
    ],
)
def test_jobs_per_device_default_to_several_only_where_batching_fills_a_gpu(
    config: ServerConfig, gpus: int, expected: int
) -> None:
    assert auto_jobs_per_device(config, gpus) == expected


class FakeEngine(StubEngine):
    @property
    def batch_stats(self) -> BatchStats:
        return BatchStats(batches=3, evaluations=7, largest=4)

    def memory_info(self) -> dict[str, int]:
        return {"GPU:0": 123, "GPU:1": 456}

    def memory_capacity(self) -> dict[str, int]:
        return {"GPU:0": 1000}


def test_gpu_memory_and_batching_come_from_the_engine() -> None:
    registry = CollectorRegistry()
    metrics = ServerMetrics.create(registry)
    assert registry.get_sample_value("styletx_gpu_memory_bytes", {"device": "GPU:0"}) is None
    assert registry.get_sample_value("styletx_batches_total") is None
    metrics.watch(FakeEngine())
    assert registry.get_sample_value("styletx_gpu_memory_bytes", {"device": "GPU:1"}) == 456
    assert (
        registry.get_sample_value("styletx_gpu_memory_capacity_bytes", {"device": "GPU:0"}) == 1000
    )
    assert registry.get_sample_value("styletx_batches_total") == 3
    assert registry.get_sample_value("styletx_batched_evaluations_total") == 7


def test_an_engine_without_figures_or_a_failing_query_adds_no_series() -> None:
    class Broken(StubEngine):
        def memory_info(self) -> dict[str, int]:
            raise RuntimeError("driver hiccup")

    registry = CollectorRegistry()
    metrics = ServerMetrics.create(registry)
    assert not {m.name for m in registry.collect()} & {"styletx_gpu_memory", "styletx_batches"}
    for engine in (StubEngine(), Broken()):
        metrics.watch(engine)
        names = {m.name for m in registry.collect()}
        assert "styletx_gpu_memory" not in names, engine


def _server_main(env: dict[str, str], *argv: str, prelude: str = "") -> Any:
    code = (
        f"{prelude}\nimport sys\nfrom styletx_server.__main__ import main\n"
        f"rc = main({list(argv)!r})\n"
        "print('keras loaded' if 'keras' in sys.modules else 'keras not loaded')\n"
        "sys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_missing_backend_exits_2_before_keras_loads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    # jax made invisible to the import system: as on a machine without it installed.
    hide = (
        "import importlib.util as u\nreal = u.find_spec\n"
        "u.find_spec = lambda name, *a, **k: None if name == 'jax' else real(name, *a, **k)"
    )
    out = _server_main(env, "--backend", "jax", "--metrics-port", "0", prelude=hide)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "backend 'jax' is not installed: pip install 'styletx-server[jax]'" in out.stderr
    assert out.stdout.strip() == "keras not loaded"


def test_an_unknown_keras_backend_in_the_environment_exits_2() -> None:
    out = _server_main({**os.environ, "KERAS_BACKEND": "torch"}, "--metrics-port", "0")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "unknown backend 'torch'" in out.stderr


def test_importing_the_server_loads_no_framework() -> None:
    """__main__ selects the backend after these imports: none of them may import Keras."""
    code = (
        "import sys, styletx_server.ops.app, styletx_server.__main__, styletx.pool\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
