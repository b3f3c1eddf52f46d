"""The gauges that follow the scheduling and jobs rooms' counts (queue, tenants, calls, stored
results): each room reports its counts to one of these methods as they change."""

from __future__ import annotations

from styletx_server.observe.metrics import ServerMetrics
from styletx_server.scheduling.admission import TenantCounts
from styletx_server.security.tenants import TenantDirectory


class Gauges:
    """Sets the server's gauges from the counts the other rooms report."""

    def __init__(self, metrics: ServerMetrics, tenants: TenantDirectory, workers: int) -> None:
        self._metrics = metrics
        self._tenants = tenants
        self._workers = workers

    def queue_changed(self, waiting: int, running: int) -> None:
        self._metrics.busyness.set((waiting + running) / self._workers)

    def tenants_changed(self, counts: TenantCounts) -> None:
        """Per-tenant queue depth and running jobs: every name the tokens file has held (a
        bounded label set) gets a value, 0 when it has no job."""
        for name in sorted(self._tenants.names | set(counts)):
            waiting, running = counts.get(name, (0, 0))
            self._metrics.queue_depth.labels(tenant=name).set(waiting)
            self._metrics.jobs_in_flight.labels(tenant=name).set(running)

    def calls_changed(self, open_calls: int, stalled: int) -> None:
        self._metrics.calls_in_flight.set(open_calls)
        self._metrics.calls_stalled.set(stalled)

    def store_changed(self, results: int, size: int) -> None:
        self._metrics.stored_results.set(results)
        self._metrics.stored_result_bytes.set(size)


__all__ = ["Gauges"]
