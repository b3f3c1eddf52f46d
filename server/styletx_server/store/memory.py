"""The in-process job store: `protocol.JobStore` in dictionaries, by the Redis store's rules
(one contract suite tests both). Servers in one process may share it (the fleet's in-process
tests); a server with `--store memory://` needs no store at all and keeps its jobs itself.

Every method works under one lock without awaiting anything: one atomic step for tasks and
threads alike. Time, for leases and TTLs, comes from an injectable clock (seconds since the
epoch), so tests can move it; what expired leaves at the next call.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import secrets
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from styletx_server.store.protocol import (
    CANCELLED,
    MAX_ATTEMPTS,
    Admission,
    AdmitRequest,
    Beat,
    Claim,
    Completed,
    Counts,
    Created,
    Event,
    Existing,
    Fenced,
    JobRecord,
    JobState,
    Lease,
    Outcome,
    Reaped,
    Refusal,
    ResultFate,
    StoreConfig,
    TenantCounts,
    Timings,
    fair_cost,
)


@dataclass
class _Job:
    record: JobRecord
    start: int
    seq: int
    max_running: int | None
    payload: bytes | None
    events: deque[Event]
    next_event: int = 1
    chunks: list[bytes] | None = None
    #: When everything of the job leaves (None while it lives).
    expires: float | None = None


@dataclass
class _Fair:
    """The fair queue's clock: virtual time, admission counter, each tenant's last finish tag."""

    virtual: int = 0
    seq: int = 0
    finish: dict[str, int] = field(default_factory=dict)
    #: When an idle store forgets all this (None while anything is queued or running).
    idle_until: float | None = None


class MemoryStore:
    """`protocol.JobStore` in this process; see the module's docstring."""

    def __init__(
        self, config: StoreConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._config = config or StoreConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        #: Jobs queued or running.
        self._live_ids: set[str] = set()
        #: (when, job id) of every ended job, soonest first.
        self._expiring: list[tuple[float, str]] = []
        self._keys: dict[tuple[str, str], str] = {}
        #: Queued job ids in fair order: (start tag, admission seq, job id).
        self._queue: list[tuple[int, int, str]] = []
        self._fair = _Fair()
        self._alive: dict[str, float] = {}
        #: Each tenant's stored results, oldest first: job id -> size; and their sum.
        self._held: dict[str, OrderedDict[str, int]] = {}
        self._held_bytes: Counter[str] = Counter()

    def __repr__(self) -> str:
        return "MemoryStore('memory://')"

    @property
    def config(self) -> StoreConfig:
        return self._config

    # -- filing ---------------------------------------------------------------------------

    async def admit(self, request: AdmitRequest) -> Admission:
        with self._lock:
            now = self._now()
            scoped = None if request.key is None else (request.tenant, request.key)
            if scoped is not None and (found := self._keys.get(scoped)) is not None:
                record = self._jobs[found].record
                kept = record.state is JobState.DONE and record.result is ResultFate.KEPT
                if record.live or kept:
                    return Existing(record, record.digest == request.digest)
            counts = self._counts()
            tenant = counts.tenants.get(request.tenant, TenantCounts())
            refused = None
            held = counts.queued + (counts.running if request.count_running else 0)
            if held >= request.capacity:
                refused = ("queue", request.capacity)
            elif request.max_queued is not None and tenant.queued >= request.max_queued:
                refused = ("max_queued", request.max_queued)
            if refused is not None:
                quota, limit = refused
                return Refusal(quota, limit, counts.queued, tenant.queued, tenant.running)
            fair = self._fair
            fair.idle_until = None
            fair.seq += 1
            start = max(fair.virtual, fair.finish.get(request.tenant, 0))
            fair.finish[request.tenant] = start + fair_cost(request.weight)
            job_id = f"{fair.seq:012x}-{secrets.token_hex(8)}"
            filed = (request.tenant, request.key, request.digest)
            record = JobRecord(job_id, *filed, JobState.QUEUED, 0, 0, None, 0, Timings(now))
            events: deque[Event] = deque(maxlen=self._config.max_events)
            job = _Job(record, start, fair.seq, request.max_running, request.payload, events)
            self._jobs[job_id] = job
            self._live_ids.add(job_id)
            if scoped is not None:
                self._keys[scoped] = job_id
            bisect.insort(self._queue, (start, fair.seq, job_id))
            return Created(record, self._queue.index((start, fair.seq, job_id)) + 1)

    async def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            job = self._read(job_id)
            return None if job is None else job.record

    async def find(self, tenant: str, key: str) -> JobRecord | None:
        with self._lock:
            self._now()
            job_id = self._keys.get((tenant, key))
            return None if job_id is None else self._jobs[job_id].record

    async def position(self, job_id: str) -> int | None:
        with self._lock:
            job = self._read(job_id)
            if job is None or job.record.state is not JobState.QUEUED:
                return None
            return self._queue.index((job.start, job.seq, job_id)) + 1

    async def payload(self, job_id: str) -> bytes | None:
        with self._lock:
            job = self._read(job_id)
            return None if job is None else job.payload

    # -- leases ---------------------------------------------------------------------------

    async def claim(self, owner: str, k: int = 1) -> list[Claim]:
        with self._lock:
            now = self._now()
            deadline = now + self._config.lease_seconds
            self._alive[owner] = deadline
            running = Counter(j.record.tenant for j in self._live(JobState.RUNNING))
            claims: list[Claim] = []
            for entry in list(self._queue):
                if len(claims) >= k:
                    break
                job = self._jobs[entry[2]]
                tenant = job.record.tenant
                if job.max_running is not None and running[tenant] >= job.max_running:
                    continue
                running[tenant] += 1
                self._queue.remove(entry)
                fair = self._fair
                fair.virtual = max(fair.virtual, job.start)
                fair.finish = {t: f for t, f in fair.finish.items() if f > fair.virtual}
                record = job.record
                job.record = replace(
                    record,
                    state=JobState.RUNNING,
                    attempt=record.attempt + 1,
                    token=record.token + 1,
                    owner=owner,
                    deadline=deadline,
                    times=replace(record.times, started=record.times.started or now),
                )
                claims.append(Claim(job.record, self._lease(job)))
            return claims

    async def heartbeat(self, owner: str, leases: Sequence[Lease]) -> Beat:
        with self._lock:
            now = self._now()
            deadline = now + self._config.lease_seconds
            self._alive[owner] = deadline
            renewed, lost, cancel = [], [], {}
            for lease in leases:
                job = self._held_job(lease)
                if job is None or lease.owner != owner:
                    lost.append(lease.job_id)
                    continue
                job.record = replace(job.record, deadline=deadline)
                renewed.append(self._lease(job))
                if job.record.cancel is not None:
                    cancel[lease.job_id] = job.record.cancel
            return Beat(tuple(renewed), tuple(lost), cancel)

    async def hand_back(self, leases: Sequence[Lease]) -> list[str]:
        with self._lock:
            now = self._now()
            back = []
            for lease in leases:
                job = self._held_job(lease)
                if job is not None and job.record.cancel is not None:
                    self._end(job, JobState.CANCELLED, job.record.cancel, now)
                elif job is not None:
                    self._requeue(job, lost=False)
                    back.append(lease.job_id)
            self._settle(now)
            return back

    async def reap(self) -> Reaped:
        with self._lock:
            now = self._now()
            lease_seconds = self._config.lease_seconds
            requeued, failed, cancelled = [], [], []
            for job in self._live(JobState.RUNNING):
                record = job.record
                assert record.deadline is not None and record.owner is not None
                alive = self._alive.get(record.owner, 0.0) > now
                if record.deadline > now or (alive and record.deadline + lease_seconds > now):
                    continue
                if record.cancel is not None:
                    self._end(job, JobState.CANCELLED, record.cancel, now)
                    cancelled.append(record.job_id)
                elif record.lost + 1 >= self._config.max_attempts:
                    job.record = replace(record, lost=record.lost + 1)
                    self._end(job, JobState.FAILED, MAX_ATTEMPTS, now)
                    failed.append(record.job_id)
                else:
                    self._requeue(job, lost=True)
                    requeued.append(record.job_id)
            self._settle(now)
            return Reaped(tuple(requeued), tuple(failed), tuple(cancelled))

    # -- events and outcomes --------------------------------------------------------------

    async def append(self, lease: Lease, kind: str, data: bytes) -> int:
        with self._lock:
            self._now()
            job = self._held_job(lease)
            if job is None:
                raise Fenced(lease.job_id, lease.token)
            return self._append(job, kind, data)

    async def events(
        self, job_id: str, after: int = 0, limit: int = 100, wait: float = 0.0
    ) -> list[Event]:
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                job = self._read(job_id)
                found = [] if job is None else [e for e in job.events if e.id > after][:limit]
            if found or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.001)  # the writer may be on another thread: look again soon

    async def complete(self, lease: Lease, outcome: Outcome) -> Completed:
        with self._lock:
            now = self._now()
            job = self._held_job(lease)
            if job is None:
                raise Fenced(lease.job_id, lease.token)
            if outcome.event is not None:
                self._append(job, *outcome.event)
            job.record = replace(job.record, detail=outcome.detail)
            evicted: list[str] = []
            if outcome.result is not None:
                evicted = self._keep(job, outcome.result)
            self._end(job, outcome.state, outcome.reason, now)
            record = job.record
            self._settle(now)
            return Completed(record, tuple(evicted))

    async def cancel(self, job_id: str, reason: str = CANCELLED) -> JobRecord | None:
        with self._lock:
            now = self._now()
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.record.state is JobState.QUEUED:
                self._queue.remove((job.start, job.seq, job_id))
                self._end(job, JobState.CANCELLED, reason, now)
                self._settle(now)
            elif job.record.state is JobState.RUNNING and job.record.cancel is None:
                job.record = replace(job.record, cancel=reason)
            return job.record

    async def result(self, job_id: str) -> bytes | None:
        with self._lock:
            job = self._read(job_id)
            return None if job is None or job.chunks is None else b"".join(job.chunks)

    # -- counts ---------------------------------------------------------------------------

    async def counts(self) -> Counts:
        with self._lock:
            self._now()
            return self._counts()

    async def footprint(self) -> int:
        with self._lock:
            self._now()
            fair = self._fair
            idle = fair.virtual == 0 and fair.seq == 0 and not fair.finish
            entries = len(self._jobs) + len(self._keys) + len(self._alive) + len(self._held)
            return entries + (0 if idle else 1)

    async def close(self) -> None:
        return None

    # -- under the lock -------------------------------------------------------------------

    def _now(self) -> float:
        """The clock's time, after everything due by then has expired."""
        now = self._clock()
        while self._expiring and self._expiring[0][0] <= now:
            _, job_id = heapq.heappop(self._expiring)
            job = self._jobs.pop(job_id)
            record = job.record
            if record.key is not None and self._keys.get((record.tenant, record.key)) == job_id:
                del self._keys[(record.tenant, record.key)]
            self._forget_result(record.tenant, job_id)
        for owner in [o for o, until in self._alive.items() if until <= now]:
            del self._alive[owner]
        fair = self._fair
        if fair.idle_until is not None and fair.idle_until <= now:
            self._fair = _Fair()
        return now

    def _read(self, job_id: str) -> _Job | None:
        self._now()
        return self._jobs.get(job_id)

    def _live(self, state: JobState) -> list[_Job]:
        jobs = (self._jobs[i] for i in self._live_ids)
        return sorted((j for j in jobs if j.record.state is state), key=lambda j: (j.start, j.seq))

    def _counts(self) -> Counts:
        queued: Counter[str] = Counter()
        running: Counter[str] = Counter()
        for job in (self._jobs[i] for i in self._live_ids):
            if job.record.state is JobState.QUEUED:
                queued[job.record.tenant] += 1
            elif job.record.state is JobState.RUNNING:
                running[job.record.tenant] += 1
        held = {t: b for t, b in self._held_bytes.items() if b}
        tenants = {
            name: TenantCounts(queued[name], running[name], held.get(name, 0))
            for name in sorted(set(queued) | set(running) | set(held))
        }
        return Counts(sum(queued.values()), sum(running.values()), tenants)

    def _lease(self, job: _Job) -> Lease:
        record = job.record
        assert record.owner is not None and record.deadline is not None
        return Lease(record.job_id, record.owner, record.token, record.deadline)

    def _held_job(self, lease: Lease) -> _Job | None:
        """The job `lease` holds, if it is still the current one."""
        job = self._jobs.get(lease.job_id)
        if job is None:
            return None
        record = job.record
        current = record.state is JobState.RUNNING and record.token == lease.token
        return job if current and record.owner == lease.owner else None

    def _requeue(self, job: _Job, *, lost: bool) -> None:
        record = job.record
        job.record = replace(
            record, state=JobState.QUEUED, owner=None, deadline=None, lost=record.lost + lost
        )
        bisect.insort(self._queue, (job.start, job.seq, record.job_id))
        self._fair.idle_until = None

    def _append(self, job: _Job, kind: str, data: bytes) -> int:
        event = Event(job.next_event, kind, data)
        job.next_event += 1
        job.events.append(event)
        return event.id

    def _keep(self, job: _Job, data: bytes) -> list[str]:
        """Store `data` as `job`'s result within its tenant's budget: the evicted job ids."""
        budget = self._config.tenant_result_bytes
        if len(data) > budget:
            job.record = replace(job.record, result=ResultFate.NOT_KEPT, result_size=len(data))
            return []
        tenant = job.record.tenant
        held = self._held.setdefault(tenant, OrderedDict())
        evicted: list[str] = []
        while held and self._held_bytes[tenant] + len(data) > budget:
            gone, size = held.popitem(last=False)
            self._held_bytes[tenant] -= size
            victim = self._jobs[gone]
            victim.chunks = None
            victim.record = replace(victim.record, result=ResultFate.EVICTED)
            evicted.append(gone)
        step = self._config.chunk_bytes
        job.chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        held[job.record.job_id] = len(data)
        self._held_bytes[tenant] += len(data)
        job.record = replace(job.record, result=ResultFate.KEPT, result_size=len(data))
        return evicted

    def _forget_result(self, tenant: str, job_id: str) -> None:
        held = self._held.get(tenant)
        if held is not None and job_id in held:
            self._held_bytes[tenant] -= held.pop(job_id)
            if not held:
                del self._held[tenant], self._held_bytes[tenant]

    def _end(self, job: _Job, state: JobState, reason: str, now: float) -> None:
        record = job.record
        times = replace(record.times, ended=now)
        job.record = replace(
            record, state=state, reason=reason, owner=None, deadline=None, times=times
        )
        job.payload = None
        job.expires = now + self._config.result_ttl
        self._live_ids.discard(record.job_id)
        heapq.heappush(self._expiring, (job.expires, record.job_id))

    def _settle(self, now: float) -> None:
        """After a job left the queue or ended: an idle store's fair clock starts expiring."""
        if not self._live_ids:
            config = self._config
            self._fair.idle_until = now + max(config.result_ttl, config.lease_seconds)


__all__ = ["MemoryStore"]
