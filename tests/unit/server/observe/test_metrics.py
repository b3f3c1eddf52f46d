"""Metric names, labels and buckets on an injected registry, and the /metrics endpoint."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from styletx_server.observe.metrics import (
    BATCHED_EVALUATIONS,
    BATCHES,
    BUCKETS,
    GPU_MEMORY,
    GPU_MEMORY_CAPACITY,
    MetricsHttpServer,
    ServerMetrics,
)

EXPECTED = {
    "styletx_requests": "counter",
    "styletx_request_duration_seconds": "histogram",
    "styletx_queue_wait_seconds": "histogram",
    "styletx_compute_duration_seconds": "histogram",
    "styletx_time_to_first_progress_seconds": "histogram",
    "styletx_jobs_in_flight": "gauge",
    "styletx_queue_depth": "gauge",
    "styletx_queue_capacity": "gauge",
    "styletx_workers": "gauge",
    "styletx_lbfgs_iterations": "counter",
    "styletx_lbfgs_evaluations": "counter",
    "styletx_evaluation_duration_seconds": "histogram",
    "styletx_image_pixels": "histogram",
    "styletx_calls_in_flight": "gauge",
    "styletx_busyness": "gauge",
    "styletx_inflight_pixels": "gauge",
    "styletx_inflight_pixels_limit": "gauge",
    "styletx_stored_results": "gauge",
    "styletx_stored_result_bytes": "gauge",
    "styletx_build_info": "gauge",
}


def test_every_metric_is_registered_on_the_given_registry() -> None:
    registry = CollectorRegistry()
    metrics = ServerMetrics.create(registry)
    metrics.requests.labels(method="Stylize", code="OK", reason="ok", tenant="default").inc()
    metrics.build_info.labels(version="1", backend="tensorflow", precision="float32").set(1)
    metrics.request_duration.labels(method="Stylize", code="OK").observe(1)
    metrics.image_pixels.labels(role="content").observe(100)
    families = {m.name: m.type for m in registry.collect()}
    for name, kind in EXPECTED.items():
        assert families.get(name) == kind, name
    # The process collector comes along with a fresh registry.
    assert registry.get_sample_value("process_resident_memory_bytes") is not None


def test_each_metric_is_declared_once_and_built_from_its_declaration() -> None:
    specs = ServerMetrics.specs()
    engine_reported = (GPU_MEMORY, GPU_MEMORY_CAPACITY, BATCHES, BATCHED_EVALUATIONS)
    names = [s.name for s in specs.values()] + [s.name for s in engine_reported]
    assert len(names) == len(set(names))
    registry = CollectorRegistry()
    metrics = ServerMetrics.create(registry)
    families = {m.name: m for m in registry.collect()}
    for attribute, spec in specs.items():
        family = families[spec.name.removesuffix("_total")]
        assert family.documentation == spec.help
        assert family.type == type(getattr(metrics, attribute)).__name__.lower()
        assert (spec.buckets is not None) == (family.type == "histogram"), attribute
    # Every styletx_* family of a fresh registry is one of the declarations.
    declared = {s.name.removesuffix("_total") for s in specs.values()}
    assert {n for n in families if n.startswith("styletx_")} == declared


def test_two_servers_can_have_separate_registries() -> None:
    first, second = (
        ServerMetrics.create(CollectorRegistry()),
        ServerMetrics.create(CollectorRegistry()),
    )
    first.workers.set(3)
    assert second.registry.get_sample_value("styletx_workers") == 0


def test_buckets_reach_ten_minutes() -> None:
    assert BUCKETS[0] == 0.005 and BUCKETS[-1] == 600
    assert list(BUCKETS) == sorted(BUCKETS)
    registry = CollectorRegistry()
    ServerMetrics.create(registry).queue_wait.observe(400)
    assert registry.get_sample_value("styletx_queue_wait_seconds_bucket", {"le": "300.0"}) == 0
    assert registry.get_sample_value("styletx_queue_wait_seconds_bucket", {"le": "600.0"}) == 1


def test_http_endpoint_serves_the_registry() -> None:
    registry = CollectorRegistry()
    ServerMetrics.create(registry).queue_capacity.set(16)
    server = MetricsHttpServer(registry, port=0, address="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.close()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["styletx_queue_capacity"] == 16
