"""Metrics scraped over HTTP and parsed with prometheus_client's parser after known calls."""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import styletx
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.observe.metrics import BUCKETS
from tests.integration.conftest import EVALUATIONS, SIZE, ServerFactory, collect, make_request
from tests.support.server_process import free_port


def scrape(port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return float(found[0])


def test_metrics_after_one_success_and_one_invalid_call(
    server_factory: ServerFactory, stub_for: Any
) -> None:
    server = server_factory(metrics_port=free_port())
    assert server.metrics_port is not None
    stub = stub_for(server)
    events = collect(stub, make_request())
    result = events[-1].result
    with pytest.raises(grpc.RpcError):
        collect(stub, make_request(options=pb.StyleOptions(size=SIZE, tv_weight=-1.0)))

    samples = scrape(server.metrics_port)
    assert (
        value(
            samples,
            "styletx_requests_total",
            method="Stylize",
            code="OK",
            reason="ok",
            tenant="default",
        )
        == 1
    )
    invalid = {
        "method": "Stylize",
        "code": "INVALID_ARGUMENT",
        "reason": "invalid_input",
        "tenant": "default",
    }
    assert value(samples, "styletx_requests_total", **invalid) == 1
    # Durations by status code: the refusal (milliseconds) is kept apart from the completed call.
    duration = "styletx_request_duration_seconds"
    assert value(samples, f"{duration}_count", method="Stylize", code="OK") == 1
    assert value(samples, f"{duration}_count", method="Stylize", code="INVALID_ARGUMENT") == 1
    assert value(samples, f"{duration}_sum", method="Stylize", code="INVALID_ARGUMENT") < (
        value(samples, f"{duration}_sum", method="Stylize", code="OK")
    )
    for histogram in (
        "styletx_queue_wait_seconds",
        "styletx_compute_duration_seconds",
        "styletx_time_to_first_progress_seconds",
    ):
        assert value(samples, f"{histogram}_count") == 1
    assert value(samples, "styletx_compute_duration_seconds_sum") > 0
    assert value(samples, "styletx_lbfgs_evaluations_total", tenant="default") == EVALUATIONS
    assert value(samples, "styletx_lbfgs_iterations_total") == result.iterations
    # Each evaluation the engine reported (with its own wall time) is one observation.
    progress = [e.progress for e in events if e.HasField("progress")]
    # Labelled with the precision the job ran at, as its Started event says.
    precision = next(e.started.precision for e in events if e.HasField("started"))
    observed = value(samples, "styletx_evaluation_duration_seconds_count", precision=precision)
    assert observed == progress[-1].evaluations and 0 < observed <= EVALUATIONS
    assert value(samples, "styletx_evaluation_duration_seconds_sum", precision=precision) < value(
        samples, "styletx_compute_duration_seconds_sum"
    )
    assert value(samples, "styletx_image_pixels_count", role="content") == 1
    assert value(samples, "styletx_image_pixels_sum", role="content") == 48 * 64
    assert value(samples, "styletx_image_pixels_sum", role="style") == 40 * 40
    output_pixels = result.image.width * result.image.height
    assert value(samples, "styletx_image_pixels_sum", role="output") == output_pixels
    assert value(samples, "styletx_queue_capacity") == 4
    assert value(samples, "styletx_workers") == 1
    # The worker ends its job (running count, busyness, pixel reservation) just after the
    # result event is on its way to the caller: wait for the gauges to come to rest.
    at_rest = {
        ("styletx_jobs_in_flight", "default"): 0.0,
        ("styletx_queue_depth", "default"): 0.0,
        ("styletx_busyness", None): 0.0,
        ("styletx_inflight_pixels", None): 0.0,  # every reservation was given back
    }

    def gauges(samples: list[Sample]) -> dict[tuple[str, str | None], float]:
        return {
            (name, tenant): value(samples, name, **({"tenant": tenant} if tenant else {}))
            for name, tenant in at_rest
        }

    deadline = time.monotonic() + 10
    while gauges(samples) != at_rest:
        assert time.monotonic() < deadline, f"gauges never came to rest: {gauges(samples)}"
        time.sleep(0.02)
        samples = scrape(server.metrics_port)
    assert value(samples, "styletx_inflight_pixels_limit") == server.config.max_inflight_pixels
    # The handler gives its call slot back just after the caller has its status: wait for it.
    deadline = time.monotonic() + 10
    while value(scrape(server.metrics_port), "styletx_calls_in_flight") != 0:
        assert time.monotonic() < deadline, "a call slot was never given back"
        time.sleep(0.02)
    info = [s for s in samples if s.name == "styletx_build_info"]
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels["backend"] == "tensorflow"
    assert info[0].labels["version"] == styletx.__version__
    assert value(samples, "process_resident_memory_bytes") > 0
    # Buckets from 5 ms up to ten minutes (the longest allowed job).
    bounds = {
        float(s.labels["le"])
        for s in samples
        if s.name == "styletx_request_duration_seconds_bucket"
    }
    assert bounds == {*BUCKETS, float("inf")}
    assert max(BUCKETS) == 600


def test_gpu_memory_is_absent_without_a_gpu(server_factory: ServerFactory) -> None:
    import tensorflow as tf

    server = server_factory(metrics_port=free_port())
    assert server.metrics_port is not None
    names = {s.name for s in scrape(server.metrics_port)}
    has_gpu = bool(tf.config.list_logical_devices("GPU"))
    assert ("styletx_gpu_memory_bytes" in names) == has_gpu


def test_registry_is_injected_not_global(server_factory: ServerFactory) -> None:
    from prometheus_client import REGISTRY

    server = server_factory()
    assert server.metrics.registry is not REGISTRY
    assert REGISTRY.get_sample_value("styletx_workers") is None
    assert server.metrics.registry.get_sample_value("styletx_workers") == 1


def test_exposition_passes_promtool_check_metrics(
    server_factory: ServerFactory, stub_for: Any
) -> None:
    """Prometheus' own linter (naming, units, help) on a real scrape after a call."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (make test installs Debian's prometheus as root)")
    server = server_factory(metrics_port=free_port())
    assert server.metrics_port is not None
    collect(stub_for(server), make_request())
    with urllib.request.urlopen(
        f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10
    ) as response:
        text = response.read()
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    assert b"styletx_requests_total" in text


def test_busyness_counts_running_and_queued_jobs_per_worker(
    server_factory: ServerFactory, stub_for: Any, stylizer: Any
) -> None:
    from tests.integration.conftest import Consumer, GatedStylizer, wait_for

    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, queue_size=3)
    stub = stub_for(server)
    registry = server.metrics.registry
    running = Consumer(stub, make_request())
    assert gated.paused.wait(30)
    queued = [Consumer(stub, make_request()) for _ in range(2)]
    wait_for(lambda: server.admission.waiting == 2)
    assert registry.get_sample_value("styletx_busyness") == 3.0  # 1 running + 2 queued
    in_flight = registry.get_sample_value("styletx_inflight_pixels")
    assert in_flight == 3 * (48 * 64 + 40 * 40)  # header pixels of three requests
    gated.release()
    for consumer in (running, *queued):
        assert consumer.code() == grpc.StatusCode.OK
    wait_for(lambda: registry.get_sample_value("styletx_busyness") == 0)
    assert registry.get_sample_value("styletx_inflight_pixels") == 0


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_metrics_answer_on_ipv6_and_ipv4(server_factory: ServerFactory) -> None:
    """Like the gRPC port (`[::]`), /metrics listens on both families."""
    server = server_factory(metrics_port=free_port())
    for host in ("127.0.0.1", "[::1]"):
        url = f"http://{host}:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"styletx_busyness" in response.read()
