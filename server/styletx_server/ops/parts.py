"""Building the rooms' parts from the settings: call slots, the pixel budget, the admission queue,
the job registry and board, and the servicer's share of them."""

from __future__ import annotations

from concurrent.futures import Executor

from styletx_server.jobs.board import JobBoard
from styletx_server.jobs.registry import JobRegistry
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.ops.config import ServerConfig, limits_of
from styletx_server.ops.gauges import Gauges
from styletx_server.rpc.servicer import ServicerParts
from styletx_server.rpc.stylize import Lifecycle
from styletx_server.scheduling.admission import AdmissionQueue, Throughput
from styletx_server.scheduling.budget import PixelBudget
from styletx_server.scheduling.slots import CallSlots, share_limit
from styletx_server.security.tenants import TenantDirectory
from styletx_server.store.protocol import JobStore


def build_parts(
    config: ServerConfig,
    *,
    workers: int,
    metrics: ServerMetrics,
    tenants: TenantDirectory,
    lifecycle: Lifecycle,
    decode_pool: Executor,
    store: JobStore | None = None,
) -> ServicerParts:
    """Every part the servicer works with, each reporting its counts to the gauges."""
    c = config
    gauges = Gauges(metrics, tenants, workers)
    tenants.subscribe(gauges.tenants_reloaded)
    admission = AdmissionQueue(
        c.queue_size, workers, on_change=gauges.queue_changed, on_tenants=gauges.tenants_changed
    )
    registry = JobRegistry(
        result_ttl=c.result_ttl,
        max_results=c.max_stored_results,
        max_result_bytes=c.max_stored_result_bytes,
        on_change=gauges.store_changed,
    )
    metrics.queue_capacity.set(c.queue_size)
    metrics.workers.set(workers)
    metrics.inflight_pixels_limit.set(c.max_inflight_pixels)
    gauges.tenants_changed({})
    return ServicerParts(
        limits=limits_of(c),
        admission=admission,
        budget=PixelBudget(c.max_inflight_pixels, metrics.inflight_pixels.set),
        board=JobBoard(registry, admission),
        metrics=metrics,
        lifecycle=lifecycle,
        throughput=Throughput(),
        decode_pool=decode_pool,
        slots=CallSlots(
            c.max_calls, share_limit(c.max_calls, c.max_peer_share), gauges.calls_changed
        ),
        linger=c.linger,
        stall_timeout=c.stall_timeout,
        tenants=tenants,
        store=store,
    )


__all__ = ["build_parts"]
