"""A replica's share of a fleet's work: it claims jobs from the shared store (`store.JobStore`)
while it has a free worker, runs each as a local job, publishes its events to the store and
commits its outcome there, fenced by the attempt's lease.

Leases are renewed by a thread of their own with its own connection to the store, so neither a
busy engine thread nor a blocked event loop can starve them. A lease the store says is lost (the
replica was cut off past its lease and the job went to another) stops the local job; its late
outcome is refused by the store (`Fenced`) and counted, never delivered. A stopping replica
(`stop`) claims nothing more and hands back at once what it will not finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors import statuses
from styletx_server.errors.refusals import InvalidRequest, Refused
from styletx_server.errors.statuses import Reason, StopReason
from styletx_server.jobs import stored
from styletx_server.jobs.job import StylizeJob
from styletx_server.jobs.mailbox import Final, Mailbox
from styletx_server.jobs.views import ended_view
from styletx_server.observe.logs import log_event
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.scheduling.admission import AdmissionQueue
from styletx_server.store.protocol import (
    Claim,
    Fenced,
    JobStore,
    Lease,
    Outcome,
    ResultFate,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

#: Builds and queues the local job of a claimed request (intake, pixel budget, decoding); raises
#: a refusal when this replica cannot take it after all.
OpenJob = Callable[[pb.StylizeRequest, str, Claim], Awaitable[StylizeJob]]

#: Refusals that mean "not here, not now": the job goes back to the fleet's queue.
_NOT_NOW = (
    Reason.OVER_BUDGET,
    Reason.QUEUE_FULL,
    Reason.DRAINING,
    Reason.LOADING,
    Reason.TENANT_QUOTA,
)


#: After a kick, the claim loop naps this long, this many times, before its usual poll.
HURRY_SECONDS, HURRY_NAPS = 0.003, 20
#: Longest pause between heartbeats (they also carry cancel requests to the running replica).
BEAT_SECONDS = 0.5
#: After a failed claim the loop waits this long, not its poll: a store that is down or full
#: gets two tries a second from each replica (and its log two lines), not twenty.
FAILED_CLAIM_SECONDS = 0.5


def payload_of(request_id: str, request: pb.StylizeRequest) -> bytes:
    """What a job is admitted with: the admitting call's request id and the request."""
    return request_id.encode() + b"\n" + request.SerializeToString()


def request_of(payload: bytes) -> tuple[str, pb.StylizeRequest]:
    """The request id and request of a stored payload."""
    request_id, _, data = payload.partition(b"\n")
    return request_id.decode(errors="replace"), pb.StylizeRequest.FromString(data)


@dataclass
class _Held:
    job: StylizeJob
    lease: Lease


class FleetWorker:
    """Claims, runs and commits the fleet's jobs on this replica (one per server)."""

    def __init__(
        self,
        store: JobStore,
        *,
        owner: str,
        admission: AdmissionQueue,
        workers: int,
        open_job: OpenJob,
        metrics: ServerMetrics,
        beat_store: Callable[[], JobStore],
        on_store: Callable[[bool], None] = lambda ok: None,
        poll: float = 0.05,
        recent: stored.RecentResults | None = None,
    ) -> None:
        self.owner = owner
        #: Results committed here, handed to this replica's callers without a store read.
        self.recent = recent or stored.RecentResults()
        self._store = store
        self._admission = admission
        self._workers = workers
        self._open_job = open_job
        self._metrics = metrics
        self._beat_store = beat_store
        self._on_store = on_store
        self._poll = poll
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        #: Jobs given back to the fleet by this replica: their local end is not an outcome.
        self._given_back: set[str] = set()
        self._claiming = True
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = threading.Event()
        self._beat_thread: threading.Thread | None = None
        #: Set when a claim may find work now: a job admitted here, a worker freed here.
        self._wake: asyncio.Event | None = None
        self._hurry = 0

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    # -- the loops -------------------------------------------------------------------------------

    def kick(self) -> None:
        """Claim now rather than at the next poll (call on the loop); for a moment the claim
        loop looks again every few milliseconds, as a worker that just ended a job may still be
        counted busy for as long."""
        self._hurry = HURRY_NAPS
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        """Start claiming and reaping (on the running loop) and renewing leases (a thread)."""
        self._wake = asyncio.Event()
        self._spawn(self._claim_loop())
        self._spawn(self._reap_loop())
        self._beat_thread = threading.Thread(
            target=self._beat_thread_main, name="styletx-lease", daemon=True
        )
        self._beat_thread.start()

    async def _claim_loop(self) -> None:
        while self._claiming:
            free = self._workers - self._admission.waiting - self._admission.running
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = await self._store.claim(self.owner, free)
                    self._on_store(True)
                except StoreError as exc:  # any: this loop must outlive it
                    self._store_failed("claim", exc)
                    await asyncio.sleep(FAILED_CLAIM_SECONDS)
            for claim in claims:
                try:
                    await self._take(claim)
                except Exception as exc:  # one bad job must not stop this replica claiming
                    log_event(
                        log,
                        "claim_failed",
                        level=logging.ERROR,
                        exc_info=exc,
                        job_id=claim.lease.job_id,
                    )
                    await self._hand_back([claim.lease])
            if not claims:
                await self._nap()

    async def _nap(self) -> None:
        """Until the next poll, or a kick (work admitted or a worker freed on this replica)."""
        assert self._wake is not None
        pause = self._poll
        if self._hurry > 0:
            self._hurry -= 1
            pause = min(pause, HURRY_SECONDS)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await self._wake.wait()
        self._wake.clear()

    async def _reap_loop(self) -> None:
        period = self._store.config.lease_seconds / 2
        while self._claiming:
            await asyncio.sleep(period)
            try:
                reaped = await self._store.reap()
            except StoreError as exc:  # any: this loop must outlive it
                self._store_failed("reap", exc)
                continue
            await self._count()
            if reaped.requeued or reaped.failed:
                self._metrics.fleet_leases_reclaimed.inc(len(reaped.requeued) + len(reaped.failed))
                log_event(
                    log,
                    "leases_reclaimed",
                    requeued=len(reaped.requeued),
                    failed=len(reaped.failed),
                )

    async def _count(self) -> None:
        """The fleet's queued and running jobs per tenant, for `styletx_fleet_jobs`."""
        try:
            counts = await self._store.counts()
        except StoreError as exc:  # any: this loop must outlive it
            self._store_failed("counts", exc)
            return
        gauge = self._metrics.fleet_jobs
        gauge.clear()
        for tenant, tenant_counts in counts.tenants.items():
            gauge.labels(state="queued", tenant=tenant).set(tenant_counts.queued)
            gauge.labels(state="running", tenant=tenant).set(tenant_counts.running)

    def _beat_thread_main(self) -> None:
        asyncio.run(self._beat_loop())

    async def _beat_loop(self) -> None:
        store = self._beat_store()
        # A third of the lease keeps it; half a second at most, so a cancel request made on
        # another replica stops the job within one evaluation plus that.
        period = min(store.config.lease_seconds / 3, BEAT_SECONDS)
        try:
            while not self._stopped.is_set():
                with self._lock:
                    leases = [held.lease for held in self._held.values()]
                try:
                    beat = await store.heartbeat(self.owner, leases)
                except StoreError as exc:  # any: this loop must outlive it
                    self._store_failed("heartbeat", exc)
                else:
                    self._beaten(beat.renewed, beat.lost, beat.cancel)
                await asyncio.to_thread(self._stopped.wait, period)
        finally:
            await store.close()

    def _beaten(
        self, renewed: tuple[Lease, ...], lost: tuple[str, ...], cancel: Mapping[str, str]
    ) -> None:
        with self._lock:
            for lease in renewed:
                held = self._held.get(lease.job_id)
                if held is not None and held.lease.token == lease.token:
                    held.lease = lease
            gone = [self._held.pop(job_id) for job_id in lost if job_id in self._held]
            stop = [self._held[job_id].job for job_id in cancel if job_id in self._held]
        for held in gone:
            log_event(log, "lease_lost", level=logging.WARNING, job_id=held.lease.job_id)
            held.job.stop(StopReason.SHUTDOWN)
        for job in stop:
            job.stop(StopReason.JOB_CANCELLED)

    # -- one claimed job -------------------------------------------------------------------------

    async def _take(self, claim: Claim) -> None:
        lease = claim.lease
        try:
            payload = await self._store.payload(lease.job_id)
            if payload is None:  # cancelled or ended between the claim and now
                return
            request_id, request = request_of(payload)
            job = await self._open_job(request, request_id, claim)
        except StoreUnavailable as exc:
            self._store_failed("payload", exc)
            return
        except Refused as exc:
            status = statuses.for_refusal(exc, 1.0)
            if status.reason in _NOT_NOW and not isinstance(exc, InvalidRequest):
                await self._hand_back([lease])
                await asyncio.sleep(self._poll)  # not claim it straight back
            else:
                await self._commit(lease, None, Final(status=status))
            return
        with self._lock:
            self._held[lease.job_id] = _Held(job, lease)
        again = claim.record.attempt > 1
        self._metrics.fleet_attempts.labels(attempt="again" if again else "first").inc()
        self._spawn(self._publish(job, lease.job_id))

    async def _publish(self, job: StylizeJob, job_id: str) -> None:
        """Append the job's events to the store until its outcome, then commit that."""
        mailbox = Mailbox(asyncio.get_running_loop())
        job.subscribe(mailbox)
        try:
            while True:
                item = await mailbox.get()
                lease = self._lease(job_id)
                if lease is None:  # lost or given back: the store refuses this attempt's writes
                    if isinstance(item, Final):
                        with self._lock:
                            given_back = job_id in self._given_back
                            self._given_back.discard(job_id)
                        if not given_back:
                            self._stale(job_id)
                        return
                    continue
                if isinstance(item, Final):
                    await self._finish(job, lease, item)
                    return
                if item.WhichOneof("event") == "queued":  # the fleet's queue says where it is
                    continue
                kind, data = stored.event_bytes(item)
                try:
                    await self._store.append(lease, kind, data)
                except Fenced:
                    self._drop(job_id)
                    job.stop(StopReason.SHUTDOWN)
                except StoreError as exc:  # events are best effort; the outcome is not
                    self._store_failed("append", exc)
        except Exception as exc:  # never a dead publisher whose lease lives on
            # The heartbeat renews every held lease: drop this one so that it lapses and
            # another attempt runs the job (within --max-attempts), and stop the computation.
            log_event(log, "publish_failed", level=logging.ERROR, exc_info=exc, job_id=job_id)
            self._drop(job_id)
            job.stop(StopReason.SHUTDOWN)
        finally:
            job.unsubscribe(mailbox)

    async def _finish(self, job: StylizeJob, lease: Lease, final: Final) -> None:
        reason = final.status.reason if final.status is not None else None
        if reason in (Reason.SHUTDOWN, Reason.DRAINING) and not self._claiming:
            # This replica is leaving: another one runs the job, from the start.
            self._drop(lease.job_id)
            await self._hand_back([lease])
            return
        await self._commit(lease, job, final)

    async def _commit(self, lease: Lease, job: StylizeJob | None, final: Final) -> None:
        """Commit the outcome, retrying a store that is down until the lease would lapse."""
        state = stored.job_state_of(final)
        view = b"" if job is None else ended_view(job, final).SerializeToString()
        result = None if final.response is None else final.response.SerializeToString()
        kind, data = stored.final_bytes(final)
        reason = "" if final.status is None else final.status.reason.value
        outcome = Outcome(state, reason=reason, detail=view, result=result, event=(kind, data))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._store.config.lease_seconds
        kept: bytes | None = None
        self.recent.open(lease.job_id)
        try:
            while True:
                try:
                    completed = await self._store.complete(lease, outcome)
                    self._on_store(True)
                    if completed.record.result is ResultFate.KEPT:
                        kept = result  # the store holds these very bytes
                    return
                except Fenced:
                    self._stale(lease.job_id)
                    return
                except StoreUnavailable as exc:
                    self._store_failed("complete", exc)
                    if loop.time() > give_up:
                        return  # the lease lapses: another replica redoes the job
                    await asyncio.sleep(0.2)
        finally:
            self.recent.settle(lease.job_id, kept)
            self._drop(lease.job_id)
            self.kick()  # a worker is free

    # -- stopping --------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Claim nothing more and hand back every job not yet running here."""
        self._claiming = False
        with self._lock:
            waiting = [h for h in self._held.values() if h.job.times.started is None]
        for held in waiting:
            self._drop(held.lease.job_id)
            self._admission.withdraw(held.job)
        await self._hand_back([held.lease for held in waiting])
        for held in waiting:
            held.job.stop(StopReason.SHUTDOWN)

    async def close(self) -> None:
        """Hand back what is still held, stop renewing leases and cancel the loops."""
        self._claiming = False
        with self._lock:
            rest = list(self._held.values())
            self._held.clear()
        await self._hand_back([held.lease for held in rest])
        self._stopped.set()
        for task in list(self._tasks):
            task.cancel()
        if self._beat_thread is not None:
            await asyncio.to_thread(self._beat_thread.join, 5.0)

    async def _hand_back(self, leases: list[Lease]) -> None:
        if not leases:
            return
        with self._lock:
            self._given_back.update(lease.job_id for lease in leases)
        try:
            requeued = await self._store.hand_back(leases)
        except StoreUnavailable as exc:  # the leases lapse instead
            self._store_failed("hand_back", exc)
            return
        log_event(log, "handed_back", jobs=len(requeued), job_ids=requeued[:16])

    # -- bookkeeping -----------------------------------------------------------------------------

    def _lease(self, job_id: str) -> Lease | None:
        with self._lock:
            held = self._held.get(job_id)
            return None if held is None else held.lease

    def _drop(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def _stale(self, job_id: str) -> None:
        self._drop(job_id)
        self._metrics.fleet_stale_results.inc()
        log_event(log, "stale_result_dropped", level=logging.WARNING, job_id=job_id)

    def _store_failed(self, operation: str, exc: StoreError) -> None:
        self._metrics.store_errors.labels(operation=operation).inc()
        self._on_store(False)
        if isinstance(exc, StoreUnavailable):
            log_event(
                log, "store_unavailable", level=logging.WARNING, operation=operation, error=str(exc)
            )
        else:  # an answer the store should never give: a fault of ours or of its setup
            log_event(log, "store_failed", level=logging.ERROR, operation=operation, error=str(exc))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = ["FleetWorker", "OpenJob", "payload_of", "request_of"]
