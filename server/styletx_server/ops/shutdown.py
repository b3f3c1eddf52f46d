"""Leaving service: drain (refuse new work, let admitted work finish within a grace period, refuse
at once what cannot finish) and stop (cancel everything, close the port)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from styletx_server.errors.statuses import StopReason
from styletx_server.jobs.board import JobBoard
from styletx_server.jobs.fleet import FleetWorker
from styletx_server.jobs.job import StylizeJob
from styletx_server.observe.logs import log_event
from styletx_server.ops.health import HealthState
from styletx_server.rpc.stylize import Lifecycle
from styletx_server.scheduling.admission import AdmissionQueue, plan_drain

log = logging.getLogger(__name__)

#: How long final statuses may take to reach callers once the jobs have stopped.
STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Departure:
    """What draining and stopping act on."""

    lifecycle: Lifecycle
    health: HealthState
    admission: AdmissionQueue
    board: JobBoard
    workers: int
    #: This replica's share of a fleet's work (--store redis://...), None on its own.
    fleet: FleetWorker | None = None

    def cancel_jobs(self) -> None:
        """Stop every waiting and running job now (within one evaluation): UNAVAILABLE,
        SHUTDOWN."""
        self.lifecycle.shutting_down.set()
        self.board.stop(StopReason.SHUTDOWN)
        self.admission.drop_waiting()

    def late_jobs(self, grace: float) -> list[StylizeJob]:
        """Waiting jobs that cannot finish within `grace` seconds (see `plan_drain`)."""
        running = [j for j in self.admission.running_jobs() if isinstance(j, StylizeJob)]
        waiting = [j for j in self.admission.waiting_jobs() if isinstance(j, StylizeJob)]
        refused = plan_drain(
            grace,
            self.workers,
            [job.remaining_seconds() for job in running],
            [(job, job.estimated_seconds()) for job in waiting],
        )
        return [job for job in waiting if job in refused]

    async def drain(self, grace: float) -> bool:
        """True when every admitted job finished within `grace` seconds."""
        self.lifecycle.draining.set()
        await self.health.drain()
        if self.fleet is not None:  # claim nothing more; what waits here goes back to the fleet
            await self.fleet.stop()
        self.admission.close()
        late = self.late_jobs(grace)
        # Told at once, so their callers retry elsewhere now, not when the grace period ends.
        self.board.stop(StopReason.DRAINING, late)
        admission = self.admission
        log_event(
            log,
            "draining",
            grace_seconds=grace,
            running=admission.running,
            waiting=admission.waiting,
            refused=len(late),
        )
        # The port stays open and connections stay up until the running jobs are done: a new
        # call meanwhile gets UNAVAILABLE (DRAINING) and its client moves on at once, where a
        # closed port would have cost it a connection timeout; `stop()` then sends GOAWAY.
        if await asyncio.to_thread(admission.wait_idle, grace):
            log_event(log, "drained")
            return True
        log_event(
            log,
            "grace_period_over",
            level=logging.WARNING,
            running=admission.running,
            waiting=admission.waiting,
        )
        self.cancel_jobs()
        await asyncio.to_thread(admission.wait_idle, STOP_GRACE_SECONDS)
        return False

    async def stop(self, server: grpc.aio.Server | None) -> None:
        self.lifecycle.draining.set()
        await self.health.drain()
        if self.fleet is not None:
            await self.fleet.stop()
        self.admission.close()
        self.cancel_jobs()
        if server is not None or self.fleet is not None:
            # Let handlers of just-cancelled jobs send their final status (and a fleet's jobs
            # go back to its queue).
            await asyncio.to_thread(self.admission.wait_idle, STOP_GRACE_SECONDS)
        if self.fleet is not None:
            await self.fleet.close()
        if server is not None:
            await server.stop(STOP_GRACE_SECONDS)


__all__ = ["STOP_GRACE_SECONDS", "Departure"]
