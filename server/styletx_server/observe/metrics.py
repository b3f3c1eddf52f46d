"""Prometheus metrics of the server on an injectable registry, and their HTTP endpoint.

Each metric is declared once: a `ServerMetrics` field whose annotation is its type and whose
`metric(...)` gives its name, help, labels and buckets, grouped by concern (calls, queue and
scheduling, jobs and the engine, the store of results, the process and its GPUs). The figures
the engine reports at each scrape are declared as `MetricSpec`s beside their collectors.
"""

# ruff: noqa: RUF009 (`metric(...)` returns a dataclasses.field, not a shared default value)

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from styletx.protocol import Engine

log = logging.getLogger(__name__)

#: Reaching ten minutes: a 1024 px job on CPU takes minutes, a tiny one milliseconds.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
)  # fmt: skip
#: Pixel counts from a thumbnail to the largest image the server may accept.
PIXEL_BUCKETS: tuple[float, ...] = (
    1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6, 16e6, 64e6,
)  # fmt: skip


@dataclass(frozen=True)
class MetricSpec:
    """One metric's declaration: its exported name, help, labels and (histograms) buckets."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None


_METADATA_KEY = "styletx_metric"


def metric(
    name: str,
    help: str,
    *,
    labels: tuple[str, ...] = (),
    buckets: tuple[float, ...] | None = None,
) -> Any:
    """Declare a ServerMetrics field as a metric; its type (Counter, Gauge, Histogram) is the
    field's annotation, and `ServerMetrics.create` builds it on the registry."""
    spec = MetricSpec(name, help, labels, buckets)
    return field(metadata={_METADATA_KEY: spec})


# -- Reported by the loaded engine at each scrape (collectors below, not ServerMetrics fields).
GPU_MEMORY = MetricSpec(
    "styletx_gpu_memory_bytes",
    "GPU memory the engine's framework holds now, per device",
    ("device",),
)
GPU_MEMORY_CAPACITY = MetricSpec(
    "styletx_gpu_memory_capacity_bytes",
    "GPU memory jobs are planned against, per device (--device-memory-bytes or what the "
    "framework reports)",
    ("device",),
)
BATCHES = MetricSpec(
    "styletx_batches",
    "Batched loss-and-gradient step calls (each carries the evaluations of one or more jobs of "
    "one shape); 0 while batching is off",
)
BATCHED_EVALUATIONS = MetricSpec(
    "styletx_batched_evaluations",
    "Evaluations run in batched step calls; divided by styletx_batches_total: the mean batch size",
)


def _per_device(spec: MetricSpec, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    for device, value in sorted(values.items()):
        family.add_metric([device], float(value))
    return family


class GpuMemoryCollector(Collector):
    """`styletx_gpu_memory_bytes{device}` (in use) and `styletx_gpu_memory_capacity_bytes`
    (what jobs are planned against) from the loaded engine, whatever its Keras backend.

    Nothing until the server sets `engine`, and nothing on CPUs (the engine reports no device).
    """

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        if engine is None:
            return
        try:
            in_use = engine.memory_info()
            capacity = engine.memory_capacity()
        except Exception:  # a scrape must never fail because of a driver hiccup
            log.debug("GPU memory query failed", exc_info=True)
            return
        if in_use:
            yield _per_device(GPU_MEMORY, in_use)
        if capacity:
            yield _per_device(GPU_MEMORY_CAPACITY, capacity)


class BatchingCollector(Collector):
    """Cross-job batching counters of the loaded engine (its `batch_stats`)."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def collect(self) -> Iterator[Metric]:
        if self.engine is None:
            return
        stats = self.engine.batch_stats
        yield CounterMetricFamily(BATCHES.name, BATCHES.help, value=float(stats.batches))
        yield CounterMetricFamily(
            BATCHED_EVALUATIONS.name, BATCHED_EVALUATIONS.help, value=float(stats.evaluations)
        )


@dataclass
class ServerMetrics:
    """Every metric of the service, each declared once below and grouped by concern;
    `create` builds them on a registry (by default prometheus_client's global one)."""

    registry: CollectorRegistry

    # -- Calls: every RPC's outcome and duration, and the Stylize streams open now.
    requests: Counter = metric(
        "styletx_requests_total",
        "gRPC calls by method, final status code, reason (the ErrorInfo reason lower-cased, or "
        "ok, cancelled, deadline_exceeded) and tenant (a name of the tokens file, else default)",
        labels=("method", "code", "reason", "tenant"),
    )
    request_duration: Histogram = metric(
        "styletx_request_duration_seconds",
        "End-to-end duration of a call, from arrival to final status, by its status code "
        "(refusals end in milliseconds: latency alerts look at code OK)",
        labels=("method", "code"),
        buckets=BUCKETS,
    )
    time_to_first_progress: Histogram = metric(
        "styletx_time_to_first_progress_seconds",
        "Time from a call's arrival to its first progress event",
        buckets=BUCKETS,
    )
    calls_in_flight: Gauge = metric(
        "styletx_calls_in_flight",
        "Stylize calls holding a call slot now (streams attached to a job included)",
    )
    calls_stalled: Gauge = metric(
        "styletx_calls_stalled",
        "Stylize calls ended for a reader that accepted no bytes (--stall-timeout) that gRPC "
        "still holds until the reader comes back or its connection closes; they hold neither a "
        "call slot nor their caller's share",
    )

    # -- Queue and scheduling: admission, waiting, workers, the autoscaler's signal.
    queue_wait: Histogram = metric(
        "styletx_queue_wait_seconds", "Time an admitted job waited for a worker", buckets=BUCKETS
    )
    queue_depth: Gauge = metric(
        "styletx_queue_depth", "Admitted jobs waiting for a worker, by tenant", labels=("tenant",)
    )
    queue_capacity: Gauge = metric(
        "styletx_queue_capacity",
        "Jobs that may wait before calls are refused with RESOURCE_EXHAUSTED",
    )
    jobs_in_flight: Gauge = metric(
        "styletx_jobs_in_flight", "Jobs a worker is running now, by tenant", labels=("tenant",)
    )
    workers: Gauge = metric("styletx_workers", "Worker threads running jobs")
    busyness: Gauge = metric(
        "styletx_busyness",
        "(running + queued jobs) / workers: 1 means every worker is busy and nothing waits, "
        "above 1 jobs queue; the autoscaler's signal",
    )
    inflight_pixels: Gauge = metric(
        "styletx_inflight_pixels",
        "Input pixels (header sizes) reserved by calls being decoded, queued or running",
    )
    inflight_pixels_limit: Gauge = metric(
        "styletx_inflight_pixels_limit", "The in-flight pixel budget (--max-inflight-pixels)"
    )

    # -- Jobs and the engine: the work itself.
    compute_duration: Histogram = metric(
        "styletx_compute_duration_seconds",
        "Time a worker spent on a job (preparation, optimisation, encoding)",
        buckets=BUCKETS,
    )
    lbfgs_iterations: Counter = metric("styletx_lbfgs_iterations_total", "L-BFGS iterations run")
    lbfgs_evaluations: Counter = metric(
        "styletx_lbfgs_evaluations_total",
        "Loss-and-gradient evaluations run, by tenant",
        labels=("tenant",),
    )
    evaluation_duration: Histogram = metric(
        "styletx_evaluation_duration_seconds",
        "Duration of each loss-and-gradient evaluation, by the precision the job ran at "
        "(--precision auto resolves per device and job)",
        labels=("precision",),
        buckets=BUCKETS,
    )
    image_pixels: Histogram = metric(
        "styletx_image_pixels",
        "Pixels of decoded inputs and of outputs",
        labels=("role",),
        buckets=PIXEL_BUCKETS,
    )

    # -- The store of results kept for callers that re-attach.
    stored_results: Gauge = metric(
        "styletx_stored_results", "Results of keyed jobs kept for callers that re-attach"
    )
    stored_result_bytes: Gauge = metric(
        "styletx_stored_result_bytes", "Bytes of the results kept for callers that re-attach"
    )

    # -- The fleet: replicas sharing one job store (--store redis://...); nothing per key.
    store_errors: Counter = metric(
        "styletx_store_errors_total",
        "Calls to the shared job store that failed or timed out, by operation",
        labels=("operation",),
    )
    store_call_duration: Histogram = metric(
        "styletx_store_call_duration_seconds",
        "Duration of the calls made to the shared job store on behalf of API calls",
        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    )
    fleet_leases_reclaimed: Counter = metric(
        "styletx_fleet_leases_reclaimed_total",
        "Jobs taken back from replicas that stopped renewing their leases (requeued, or failed "
        "after --max-attempts), counted by the replica that reclaimed them",
    )
    fleet_attempts: Counter = metric(
        "styletx_fleet_attempts_total",
        "Jobs of the fleet this replica started, by attempt: first, or again (an earlier attempt "
        "lost its lease or was handed back)",
        labels=("attempt",),
    )
    fleet_stale_results: Counter = metric(
        "styletx_fleet_stale_results_total",
        "Outcomes of attempts whose lease was no longer current: refused by the store, never "
        "delivered",
    )
    fleet_jobs: Gauge = metric(
        "styletx_fleet_jobs",
        "Jobs of the whole fleet queued and running, by state and tenant (read from the store)",
        labels=("state", "tenant"),
    )

    # -- The process and its GPUs (process_* come from prometheus_client's ProcessCollector).
    build_info: Gauge = metric(
        "styletx_build_info",
        "Always 1; the labels say the server's version, engine backend and precision",
        labels=("version", "backend", "precision"),
    )
    #: Engine-reported figures; the server points them at the engine once it is loaded.
    gpu_memory: GpuMemoryCollector = field(default_factory=GpuMemoryCollector)
    batching: BatchingCollector = field(default_factory=BatchingCollector)

    def watch(self, engine: Engine) -> None:
        """Report `engine`'s device memory and batching counters from now on."""
        self.gpu_memory.engine = engine
        self.batching.engine = engine

    def drop_tenant(self, name: str) -> None:
        """Remove every series labelled with tenant `name` (a tenant the tokens file no longer
        names), so that the label set stays bounded by the tenants in force."""
        for attribute, spec in self.specs().items():
            if "tenant" not in spec.labels:
                continue
            family = getattr(self, attribute)
            found = {
                tuple(sample.labels[label] for label in spec.labels)
                for metric in family.collect()
                for sample in metric.samples
                if sample.labels.get("tenant") == name
            }
            for values in found:
                with contextlib.suppress(KeyError):
                    family.remove(*values)

    @classmethod
    def specs(cls) -> dict[str, MetricSpec]:
        """Each declared metric field's name and its declaration, in declaration order."""
        return {
            f.name: f.metadata[_METADATA_KEY] for f in fields(cls) if _METADATA_KEY in f.metadata
        }

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ServerMetrics:
        """Build and register every metric on `registry` (plus process_* and GPU collectors)."""
        reg = REGISTRY if registry is None else registry
        if reg is not REGISTRY:
            # The global registry already has the process collector; a fresh one needs its own.
            ProcessCollector(registry=reg)
        kinds = typing.get_type_hints(cls)
        built: dict[str, Any] = {}
        for attribute, spec in cls.specs().items():
            extra = {} if spec.buckets is None else {"buckets": spec.buckets}
            built[attribute] = kinds[attribute](
                spec.name, spec.help, spec.labels, registry=reg, **extra
            )
        gpu_memory, batching = GpuMemoryCollector(), BatchingCollector()
        reg.register(gpu_memory)
        reg.register(batching)
        return cls(registry=reg, gpu_memory=gpu_memory, batching=batching, **built)


class MetricsHttpServer:
    """The `/metrics` endpoint on its own port, in a daemon thread.

    By default on every address, IPv6 and IPv4 like the gRPC port (`[::]`: a dual-stack socket),
    so scrapers reach it on either family; where the host has no IPv6, on every IPv4 address.
    """

    def __init__(self, registry: CollectorRegistry, port: int, address: str | None = None) -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        if address is not None:
            self._server, self._thread = start_http_server(port, addr=address, registry=registry)
            return
        try:
            self._server, self._thread = _dual_stack(registry, port)
        except OSError:  # no IPv6 on this host (or in this pod)
            self._server, self._thread = start_http_server(port, addr="0.0.0.0", registry=registry)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 asked for a free one)."""
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _dual_stack(registry: CollectorRegistry, port: int) -> tuple[WSGIServer, threading.Thread]:
    """`start_http_server` on `::` with IPV6_V6ONLY off, whatever the host's default
    (net.ipv6.bindv6only), so that one socket takes IPv4 connections too."""
    if not socket.has_dualstack_ipv6():
        raise OSError("no dual-stack IPv6 on this host")
    server, thread = start_http_server(port, addr="::", registry=registry)
    if server.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
        # The host binds IPv6-only by default: serve IPv4 from a plain socket instead.
        server.shutdown()
        server.server_close()
        raise OSError("IPv6 sockets are IPv6-only on this host")
    return server, thread


__all__ = [
    "BUCKETS",
    "PIXEL_BUCKETS",
    "BatchingCollector",
    "GpuMemoryCollector",
    "MetricSpec",
    "MetricsHttpServer",
    "ServerMetrics",
    "metric",
]
