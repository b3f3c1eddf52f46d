"""Precision, cross-job batching and the device-memory limit through a real in-process server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from styletx import Progress, StyleOptions, memory
from styletx.engine import Stylizer
from styletx.memory import HEADROOM, job_pixels
from styletx.protocol import Engine
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.ops.app import StyletxServer
from styletx_server.ops.config import ServerConfig
from tests.integration.conftest import WAIT, Consumer, collect, make_request, wait_for
from tests.integration.test_server_limits import limit_error
from tests.integration.test_server_metrics import free_port, scrape, value
from tests.support.engines import WrappedEngine


def started_server(stylizer: Engine | None = None, **config: Any) -> StyletxServer:
    base = ServerConfig(address="127.0.0.1:0", metrics_port=free_port(), warmup=False)
    server = StyletxServer(
        ServerConfig(**{**base.__dict__, **config}), stylizer=stylizer, registry=CollectorRegistry()
    )
    server.start()
    assert server.wait_until_ready(WAIT), server.failure
    return server


def stub_of(server: StyletxServer, channels: list[grpc.Channel]) -> Any:
    from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    channels.append(channel)
    return pb_grpc.StyleTransferServiceStub(channel)


@pytest.fixture
def channels() -> Any:
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def test_flags_build_the_engine_and_reach_started_metrics_and_workers(
    seeded_weights: Path, channels: list[grpc.Channel]
) -> None:
    server = started_server(
        weights=seeded_weights,
        precision="mixed_bfloat16",
        batch_window_ms=250.0,
        jobs_per_device=2,
        shape_step=32,
    )
    try:
        engine = server.stylizer
        assert isinstance(engine, Stylizer)
        assert (engine.precision, engine.batch_window) == ("mixed_bfloat16", 0.25)
        assert engine.shape_step == 32 and engine.step(StyleOptions()).run_shape(40, 64) == (
            64,
            64,
        )
        # Workers default to jobs per device x devices (one CPU here).
        assert server.workers == 2
        events = collect(stub_of(server, channels), make_request())
        started = events[0].started if events[0].HasField("started") else events[1].started
        assert (started.backend, started.precision, started.device) == (
            "tensorflow",
            "mixed_bfloat16",
            "CPU:0",
        )
        assert np.isfinite(events[-1].result.losses.total)
        assert server.metrics_port is not None
        samples = scrape(server.metrics_port)
        info = [s for s in samples if s.name == "styletx_build_info"]
        assert [s.labels["precision"] for s in info] == ["mixed_bfloat16"]
        # A job alone: its evaluations are (batches of one) step calls through the batcher.
        assert value(samples, "styletx_batched_evaluations_total") == engine.batch_stats.evaluations
        assert engine.batch_stats.evaluations >= 1
    finally:
        server.stop()


class HoldFirstProgress(WrappedEngine):
    """The real engine, every job held at its first progress event until `release()`: jobs that
    started apart then go on together."""

    def __init__(self, engine: Stylizer) -> None:
        super().__init__(engine)
        self.gate = threading.Event()
        self.held = 0
        self._lock = threading.Lock()

    def job_progress(
        self, event: Progress, first: bool, should_stop: Callable[[], bool] | None
    ) -> None:
        if first:
            with self._lock:
                self.held += 1
            assert self.gate.wait(WAIT)


def test_concurrent_jobs_of_one_shape_share_batches_through_the_server(
    seeded_weights: Path, channels: list[grpc.Channel]
) -> None:
    engine = HoldFirstProgress(Stylizer(seeded_weights, batch_window=1.0))
    server = started_server(engine, workers=2, queue_size=4)
    try:
        stub = stub_of(server, channels)
        request = make_request(options=pb.StyleOptions(size=48, max_evaluations=12, seed=7))
        consumers = [Consumer(stub, request) for _ in range(2)]
        wait_for(lambda: engine.held == 2)  # both seated at the batcher, held after evaluating
        engine.gate.set()
        for consumer in consumers:
            consumer.join()
            assert consumer.error is None, consumer.error
            assert consumer.events[-1].result.evaluations == 12
        assert engine.engine.batch_stats.largest == 2
        samples = scrape(server.metrics_port or 0)
        batches = value(samples, "styletx_batches_total")
        assert value(samples, "styletx_batched_evaluations_total") > batches  # some held 2 rows
    finally:
        server.stop()


def test_a_job_that_cannot_fit_the_device_memory_is_refused_naming_the_size_that_fits(
    seeded_weights: Path, channels: list[grpc.Channel]
) -> None:
    capacity = 200_000_000
    engine = Stylizer(seeded_weights, memory_capacity=capacity)
    # The requests below run the reference preset: float32 under auto, float32's model.
    model = engine.memory_model_for(StyleOptions())
    assert model == memory.default_model("float32")
    server = started_server(engine, workers=1, max_size=512, max_style_size=1024)
    try:
        stub = stub_of(server, channels)
        # make_request's 64x48 content and 40x40 style: the style pass (size x size) dominates.
        fits = max(
            s
            for s in range(16, 513)
            if job_pixels((48, 64), [(40, 40)], s, 1.0) * model.per_pixel + model.fixed
            <= capacity * HEADROOM
        )
        too_big = make_request(options=pb.StyleOptions(size=fits + 1, max_evaluations=2))
        with pytest.raises(grpc.RpcError) as caught:
            collect(stub, too_big)
        metadata, violations = limit_error(caught.value)
        assert metadata == {"max_size_for_device_memory": str(fits)}
        assert (
            f"largest size that fits at this aspect ratio is {fits}" in violations["options.size"]
        )
        assert "GiB of device memory on CPU:0" in violations["options.size"]
        # The size it names runs.
        events = collect(stub, make_request(options=pb.StyleOptions(size=fits, max_evaluations=2)))
        assert events[-1].result.evaluations == 2
        samples = scrape(server.metrics_port or 0)
        refused = {"method": "Stylize", "code": "INVALID_ARGUMENT", "reason": "limit_exceeded"}
        refused["tenant"] = "default"
        assert value(samples, "styletx_requests_total", **refused) == 1
        assert value(samples, "styletx_gpu_memory_capacity_bytes", device="CPU:0") == capacity
    finally:
        server.stop()


def test_auto_resolves_each_job_and_says_so_in_started_and_metrics(
    seeded_weights: Path, channels: list[grpc.Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    from styletx.backends.tensorflow import TensorFlowBackend

    # A device with native bfloat16 (this test's CPU may have none).
    monkeypatch.setattr(
        TensorFlowBackend, "bfloat16_native", lambda self, device: (True, "test device")
    )
    server = started_server(weights=seeded_weights)  # --precision defaults to auto
    try:
        assert server.config.precision == "auto"
        stub = stub_of(server, channels)
        precisions = {}
        for name, preset in (("fast", pb.PRESET_FAST), ("reference", pb.PRESET_REFERENCE)):
            options = pb.StyleOptions(size=32, max_evaluations=10, seed=1, preset=preset)
            events = collect(stub, make_request(options=options))
            started = next(e.started for e in events if e.HasField("started"))
            precisions[name] = started.precision
            assert np.isfinite(events[-1].result.losses.total)
        assert precisions == {"fast": "mixed_bfloat16", "reference": "float32"}
        assert server.metrics_port is not None
        samples = scrape(server.metrics_port)
        info = [s for s in samples if s.name == "styletx_build_info"]
        assert [s.labels["precision"] for s in info] == ["mixed_bfloat16"]
        counts = {
            s.labels["precision"]: s.value
            for s in samples
            if s.name == "styletx_evaluation_duration_seconds_count"
        }
        assert set(counts) == {"mixed_bfloat16", "float32"} and min(counts.values()) >= 1
    finally:
        server.stop()
