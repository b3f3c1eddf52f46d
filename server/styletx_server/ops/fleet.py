"""A replica's part in a fleet (--store redis://...): the shared store, the worker that claims
the fleet's jobs, and readiness that follows the store's health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import replace
from typing import Protocol

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.jobs.fleet import FleetWorker
from styletx_server.jobs.job import StylizeJob
from styletx_server.observe.logs import log_event
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.ops.config import ServerConfig
from styletx_server.ops.health import HealthState
from styletx_server.rpc.servicer import StyleTransferServicer
from styletx_server.rpc.stylize import Lifecycle
from styletx_server.scheduling.admission import AdmissionQueue
from styletx_server.security.tenants import TenantDirectory
from styletx_server.store import open_store
from styletx_server.store.protocol import Claim, JobStore, StoreConfig
from styletx_server.store.url import parse_store_url

log = logging.getLogger(__name__)


#: Seconds a fleet keeps an ended job at least, whatever --result-ttl says: a caller following
#: it from another replica reads its outcome from the store.
MIN_FLEET_TTL = 5.0


def store_config(config: ServerConfig) -> StoreConfig:
    """What the store is told of the settings."""
    return StoreConfig(
        result_ttl=max(config.result_ttl, MIN_FLEET_TTL),
        lease_seconds=config.lease_seconds,
        max_attempts=config.max_attempts,
        tenant_result_bytes=config.max_stored_result_bytes,
    )


def shared_store(config: ServerConfig) -> JobStore | None:
    """The store the replicas share, None for memory:// (this replica on its own)."""
    url = parse_store_url(config.store)
    return None if url.is_memory else open_store(url, store_config(config))


def owner_name() -> str:
    """This replica's name in the store's leases: the pod's host name, the process, a nonce."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Replica(Protocol):
    """The parts of the server a fleet worker works with (`app.StyletxServer`)."""

    servicer: StyleTransferServicer
    admission: AdmissionQueue
    workers: int
    tenants: TenantDirectory
    metrics: ServerMetrics
    health: HealthState
    lifecycle: Lifecycle
    loop: asyncio.AbstractEventLoop


class FleetPart:
    """Wires a `FleetWorker` to this replica's parts; readiness follows the store."""

    def __init__(self, store: JobStore, config: ServerConfig, server: Replica) -> None:
        self.store = store
        self._config = config
        self._servicer = server.servicer
        self._tenants = server.tenants
        self._health = server.health
        self._lifecycle = server.lifecycle
        self._loop = server.loop
        self._workers = server.workers
        self._store_ok = True
        self.worker = FleetWorker(
            store,
            owner=owner_name(),
            admission=server.admission,
            workers=server.workers,
            open_job=self._open_claimed,
            metrics=server.metrics,
            beat_store=self._beat_store,
            on_store=self._store_health,
        )
        if server.servicer.fleet is not None:
            server.servicer.fleet.on_admitted = self.worker.kick
            server.servicer.fleet.recent = self.worker.recent
        # A worker freed here: claim now, not at the next poll.
        server.admission.listen(self._queue_changed)

    def _beat_store(self) -> JobStore:
        """The heartbeat thread's own connection (a Redis client belongs to one event loop)."""
        url = parse_store_url(self._config.store)
        if url.is_memory:  # a store handed in by a test: in-process, shared by every loop
            return self.store
        return open_store(url, replace(self.store.config))

    async def _open_claimed(
        self, request: pb.StylizeRequest, request_id: str, claim: Claim
    ) -> StylizeJob:
        # The fleet holds the tenant to its quotas (admission and claims count fleet-wide); the
        # local queue holds only what this replica claimed.
        tenant = replace(
            self._tenants.tenant(claim.record.tenant), max_queued=None, max_running=None
        )
        return self._servicer.open_job(
            request, request_id=request_id, tenant=tenant, key=None, digest=None
        )

    def _queue_changed(self, waiting: int, running: int) -> None:
        if waiting + running < self._workers:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
                self._loop.call_soon_threadsafe(self.worker.kick)

    @property
    def store_ok(self) -> bool:
        """False since the store last failed a call, until it answers again."""
        return self._store_ok

    def _store_health(self, ok: bool) -> None:
        """Readiness NOT_SERVING while the store fails (liveness is not touched)."""
        if ok == self._store_ok:
            return
        self._store_ok = ok
        if self._lifecycle.stylizer is None or self._lifecycle.draining.is_set():
            return
        change = self._health.serving() if ok else self._health.not_serving()
        asyncio.run_coroutine_threadsafe(change, self._loop)

    async def start(self) -> None:
        """Check the store's own settings where it tells them, then claim the fleet's jobs."""
        check = getattr(self.store, "setting_problems", None)
        if check is not None:
            for problem in await check():
                log_event(log, "store_settings", level=logging.WARNING, problem=problem)
        self.worker.start()


__all__ = ["MIN_FLEET_TTL", "FleetPart", "owner_name", "shared_store", "store_config"]
