"""The gauges that follow the scheduling and jobs rooms' counts (queue, tenants, calls, stored
results): each room reports its counts to one of these methods as they change."""

from __future__ import annotations

import contextlib
import threading

from styletx_server.observe.metrics import ServerMetrics
from styletx_server.scheduling.admission import TenantCounts
from styletx_server.security.tenants import TenantDirectory


class Gauges:
    """Sets the server's gauges from the counts the other rooms report."""

    def __init__(self, metrics: ServerMetrics, tenants: TenantDirectory, workers: int) -> None:
        self._metrics = metrics
        self._tenants = tenants
        self._workers = workers
        self._lock = threading.Lock()
        #: The names the per-tenant gauges were last set for.
        self._shown: set[str] = set()

    def queue_changed(self, waiting: int, running: int) -> None:
        self._metrics.busyness.set((waiting + running) / self._workers)

    def tenants_changed(self, counts: TenantCounts) -> None:
        """Per-tenant queue depth and running jobs: every name the tokens file has held (a
        bounded label set) gets a value, 0 when it has no job."""
        names = set(self._tenants.names) | set(counts)
        with self._lock:
            gone, self._shown = self._shown - names, names
            for name in sorted(names):
                waiting, running = counts.get(name, (0, 0))
                self._metrics.queue_depth.labels(tenant=name).set(waiting)
                self._metrics.jobs_in_flight.labels(tenant=name).set(running)
            for name in gone:
                with contextlib.suppress(KeyError):
                    self._metrics.queue_depth.remove(name)
                with contextlib.suppress(KeyError):
                    self._metrics.jobs_in_flight.remove(name)

    def tenants_reloaded(self, names: frozenset[str], removed: frozenset[str]) -> None:
        """A new tokens file is in force: the tenants it no longer names lose every series (a
        tenant with jobs still in the queue keeps its gauges until they end)."""
        for name in removed:
            self._metrics.drop_tenant(name)
        self.tenants_changed({})

    def calls_changed(self, open_calls: int, stalled: int) -> None:
        self._metrics.calls_in_flight.set(open_calls)
        self._metrics.calls_stalled.set(stalled)

    def store_changed(self, results: int, size: int) -> None:
        self._metrics.stored_results.set(results)
        self._metrics.stored_result_bytes.set(size)


__all__ = ["Gauges"]
