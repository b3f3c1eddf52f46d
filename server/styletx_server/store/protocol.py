"""The job store: what must outlive a replica, behind one protocol (`JobStore`).

A store holds, for the whole fleet: job records by id and by request key per tenant (tenant,
request digest, state, attempt, fencing token, owner, timings); the queue in fair order across
tenants (start-time fair queueing, tags computed at admission: `fair_cost`); leases, each with a
deadline, and a liveness mark per replica; each job's events (numbered, capped); results
(in chunks, within a byte budget per tenant); cancel requests; and counters per tenant.

Two implementations: `memory.MemoryStore` (in process, one replica: the default) and
`redis_store.RedisStore` (Redis 7; every multi-key step one atomic script). The same contract
tests (tests/unit/server/store/test_contract.py) run against both.

A job's life: `admit` files it QUEUED; `claim` gives it to a replica with a `Lease` (attempt + 1,
a new fencing token); the owner renews its leases with `heartbeat`, publishes with `append` and
ends the job with `complete`. Only the attempt holding the current token may append or complete:
any other gets `Fenced`. A lease that lapsed while its owner is gone is put back by `reap`
(QUEUED again, on its old fair tag), until `StoreConfig.max_attempts` attempts were lost that
way: then the job ends FAILED, reason `MAX_ATTEMPTS`. `hand_back` returns leases at once (a
replica stopping). Once a job has ended, its record, events and result expire with
`StoreConfig.result_ttl`, and the store holds nothing of it without an expiry.

Every call is bounded in time: a store that cannot answer within `StoreConfig.timeout` raises
`StoreUnavailable`, whose message says what failed and where (the URL without its password).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

MIB = 1024 * 1024
#: Virtual-clock units per job of weight 1 (a job of weight w costs round(UNIT / w)). Tags stay
#: integers below 2**53, exact in a Redis script's doubles for billions of jobs; the clock
#: starts again from 0 whenever the store has been idle (nothing queued or running) for a TTL.
UNIT = 1 << 20
#: Why a job ended FAILED when its attempts ran out.
MAX_ATTEMPTS = "max_attempts"
#: Why a queued job ended CANCELLED when nobody gave a reason.
CANCELLED = "cancelled"


def fair_cost(weight: float) -> int:
    """A job's cost on the fair queue's virtual clock: 1 / `weight` in integer units (>= 1)."""
    if not (math.isfinite(weight) and weight > 0):
        raise ValueError(f"a tenant's weight must be a positive finite number, got {weight!r}")
    return max(1, round(Fraction(UNIT) / Fraction(weight)))


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The store did not answer in time or could not be reached; the message names the
    operation and the store (its URL without the password)."""


class Fenced(StoreError):
    """The lease is no longer the job's current one (it lapsed and the job was requeued, handed
    back, cancelled while queued, or ended): the attempt must stop; nothing was written."""

    def __init__(self, job_id: str, token: int) -> None:
        super().__init__(f"job {job_id}: attempt with fencing token {token} is no longer current")
        self.job_id = job_id
        self.token = token


class JobState(enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class ResultFate(enum.Enum):
    """What became of a job's result."""

    #: No result (the job has not ended, or ended without one).
    NONE = "none"
    #: Stored; `JobStore.result` returns it until the TTL.
    KEPT = "kept"
    #: Pushed out by its own tenant's newer results (the tenant's byte budget).
    EVICTED = "evicted"
    #: Larger than the tenant's whole byte budget: never stored.
    NOT_KEPT = "not_kept"


@dataclass(frozen=True)
class StoreConfig:
    """What a store is told once, at construction."""

    #: Seconds a job's record, events and result are kept after it ended (--result-ttl).
    result_ttl: float = 600.0
    #: Seconds a lease lasts unless renewed by `heartbeat`; also a replica's liveness mark.
    lease_seconds: float = 10.0
    #: Attempts a job may lose to lapsed leases before it fails (reason MAX_ATTEMPTS).
    max_attempts: int = 3
    #: Events kept per job (the oldest go first; ids keep counting).
    max_events: int = 256
    #: Results are stored in pieces of at most this many bytes.
    chunk_bytes: int = MIB
    #: Bytes of results each tenant may hold; over it, its own oldest results go.
    tenant_result_bytes: int = 256 * MIB
    #: Seconds one store call may take before StoreUnavailable.
    timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.result_ttl < 0 or self.lease_seconds <= 0 or self.timeout <= 0:
            raise ValueError("result_ttl must be >= 0, lease_seconds and timeout > 0")
        if self.max_attempts < 1 or self.max_events < 1 or self.chunk_bytes < 1:
            raise ValueError("max_attempts, max_events and chunk_bytes must be >= 1")
        if self.tenant_result_bytes < 0:
            raise ValueError("tenant_result_bytes must be >= 0")


@dataclass(frozen=True)
class AdmitRequest:
    """A new job as a replica asks to file it; limits are the caller's tenant's and server's."""

    tenant: str
    #: The caller's request key, or None for a job nobody can find again by key.
    key: str | None
    #: What defines the computation (jobs.registry.request_digest).
    digest: bytes
    #: The tenant's fair-share weight (> 0).
    weight: float = 1.0
    #: Jobs the whole queue may hold (the fleet's queue bound).
    capacity: int = 16
    #: `capacity` bounds the jobs queued or running (a fleet's places, workers included), not
    #: only the queued ones: a burst is not refused while claims are on their way.
    count_running: bool = False
    #: Jobs the tenant may have queued (None: no bound of its own).
    max_queued: int | None = None
    #: Jobs of the tenant that may run at once: `claim` skips the tenant at it.
    max_running: int | None = None
    #: What a replica claiming the job needs to run it (opaque; dropped once the job ends).
    payload: bytes = b""

    def __post_init__(self) -> None:
        for name, value in (("tenant", self.tenant), ("key", self.key)):
            if value is not None and (not value or "/" in value or any(c.isspace() for c in value)):
                raise ValueError(f"{name} must be non-empty, without '/' or spaces: {value!r}")
        fair_cost(self.weight)  # ValueError for a weight the queue cannot order by


@dataclass(frozen=True)
class Timings:
    """When a job was admitted, first claimed and ended (store clock, seconds since the epoch)."""

    admitted: float
    started: float | None = None
    ended: float | None = None


@dataclass(frozen=True)
class JobRecord:
    """What the store knows of one job."""

    job_id: str
    tenant: str
    key: str | None
    digest: bytes
    state: JobState
    #: Claims so far (the current attempt's number while RUNNING).
    attempt: int
    #: Fencing token of the latest claim (0 before the first): only its holder may commit.
    token: int
    #: Replica holding the lease (RUNNING only).
    owner: str | None
    #: Attempts lost to a lapsed lease (they count toward `max_attempts`; hand-backs do not).
    lost: int
    times: Timings
    #: Lease deadline while RUNNING (store clock).
    deadline: float | None = None
    #: Why the job ended ("" for DONE unless the owner said; MAX_ATTEMPTS; the cancel reason).
    reason: str = ""
    #: A cancel request's reason, once one was made (the owner sees it in `heartbeat`).
    cancel: str | None = None
    #: What the owner attached when it ended the job (opaque: e.g. the ended job's view).
    detail: bytes = b""
    result: ResultFate = ResultFate.NONE
    result_size: int = 0

    @property
    def live(self) -> bool:
        return not self.state.ended


@dataclass(frozen=True)
class Lease:
    """A replica's hold on a running job; `token` fences every write of the attempt."""

    job_id: str
    owner: str
    token: int
    #: When the lease lapses unless renewed (store clock, seconds since the epoch).
    deadline: float


@dataclass(frozen=True)
class Claim:
    """A job given to a replica: its record (RUNNING) and the lease it holds it by."""

    record: JobRecord
    lease: Lease


@dataclass(frozen=True)
class Created:
    """`admit` filed a new job, at `position` (1-based) of the queue's fair order."""

    record: JobRecord
    position: int


@dataclass(frozen=True)
class Existing:
    """`admit` found a job under the tenant's key that is live or has its result kept: the
    caller attaches to it, or refuses the call (KEY_REUSED) when `same_request` is False."""

    record: JobRecord
    same_request: bool


@dataclass(frozen=True)
class Refusal:
    """`admit` refused: the queue (`quota` "queue") or the tenant's "max_queued" is full. The
    counts are those at refusal, for a retry hint."""

    quota: str
    limit: int
    queued: int
    tenant_queued: int
    tenant_running: int


#: What `admit` answers.
Admission = Created | Existing | Refusal


@dataclass(frozen=True)
class Event:
    """One event of a job: ids start at 1 and increase by one per event appended."""

    id: int
    kind: str
    data: bytes


@dataclass(frozen=True)
class Outcome:
    """How the owner ends a job."""

    state: JobState
    reason: str = ""
    detail: bytes = b""
    #: The result's bytes (stored in chunks of `chunk_bytes`), for DONE.
    result: bytes | None = None
    #: A last event appended in the same step (kind, data).
    event: tuple[str, bytes] | None = None

    def __post_init__(self) -> None:
        if not self.state.ended:
            raise ValueError(f"a job ends DONE, FAILED or CANCELLED, not {self.state.name}")


@dataclass(frozen=True)
class Completed:
    """`complete` ended the job: its record now, and the tenant's results evicted to keep it."""

    record: JobRecord
    evicted: tuple[str, ...] = ()


@dataclass(frozen=True)
class Beat:
    """What a heartbeat found: leases renewed, jobs no longer held (stop them), and cancel
    requests for held jobs (job id -> reason)."""

    renewed: tuple[Lease, ...]
    lost: tuple[str, ...]
    cancel: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reaped:
    """What `reap` did with lapsed leases whose owners are gone."""

    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()


@dataclass(frozen=True)
class TenantCounts:
    queued: int = 0
    running: int = 0
    result_bytes: int = 0


@dataclass(frozen=True)
class Counts:
    """Jobs queued and running in the fleet, and per tenant that has any (or holds results)."""

    queued: int
    running: int
    tenants: Mapping[str, TenantCounts]


class JobStore(Protocol):
    """Everything about jobs that must outlive a replica. Every method may raise
    StoreUnavailable; none waits longer than the store's timeout."""

    @property
    def config(self) -> StoreConfig: ...

    async def admit(self, request: AdmitRequest) -> Admission:
        """File a job, atomically. Under a key the tenant already uses: the job there when it
        is live or DONE with its result kept (`Existing`); otherwise a new job replaces it under
        the key. A new job is refused (`Refusal`) when the queue holds `capacity` jobs or the
        tenant `max_queued`; else it is queued with its fair tag (`Created`)."""
        ...

    async def get(self, job_id: str) -> JobRecord | None:
        """The job's record, until its TTL after it ended."""
        ...

    async def find(self, tenant: str, key: str) -> JobRecord | None:
        """The job filed last under `tenant`'s `key`; never another tenant's."""
        ...

    async def position(self, job_id: str) -> int | None:
        """The queued job's 1-based place in the fair order; None unless QUEUED."""
        ...

    async def payload(self, job_id: str) -> bytes | None:
        """What the job was admitted with, while it is live."""
        ...

    async def claim(self, owner: str, k: int = 1) -> list[Claim]:
        """Take up to `k` queued jobs for `owner` in fair order, skipping tenants at their
        `max_running`; each gets attempt + 1, a new fencing token and a lease. Marks `owner`
        alive for a lease period."""
        ...

    async def heartbeat(self, owner: str, leases: Sequence[Lease]) -> Beat:
        """Mark `owner` alive and renew those `leases` it still holds; say which it lost and
        which have a cancel request."""
        ...

    async def hand_back(self, leases: Sequence[Lease]) -> list[str]:
        """Put held jobs back in the queue now, on their old fair tags (no lease wait; the
        attempt does not count as lost); one with a cancel request ends CANCELLED instead.
        Returns the job ids requeued."""
        ...

    async def reap(self) -> Reaped:
        """Deal with lapsed leases whose owner is gone (or that their owner stopped renewing
        for a second lease period): requeue the job (`lost` + 1), or fail it once
        `max_attempts` were lost, or end it CANCELLED when a cancel was requested."""
        ...

    async def append(self, lease: Lease, kind: str, data: bytes) -> int:
        """Add an event to the held job (Fenced otherwise); its id. The oldest events go past
        `max_events`."""
        ...

    async def events(
        self, job_id: str, after: int = 0, limit: int = 100, wait: float = 0.0
    ) -> list[Event]:
        """Up to `limit` events with ids above `after`, oldest first (resume from the last id
        seen; ids below the oldest kept are gone). With none yet, waits up to `wait` seconds
        (below the store's timeout) for the next one: a follower learns of it at once."""
        ...

    async def complete(self, lease: Lease, outcome: Outcome) -> Completed:
        """End the held job (Fenced otherwise, nothing written): its state, reason, detail,
        result (the tenant's oldest results evicted to fit its byte budget; a result over the
        budget is not kept) and last event, in one step; then everything of the job expires
        with `result_ttl`."""
        ...

    async def cancel(self, job_id: str, reason: str = CANCELLED) -> JobRecord | None:
        """Ask a job to stop: a queued one ends CANCELLED now; a running one carries the
        request until its owner ends it (seen in `heartbeat`). None for an unknown job."""
        ...

    async def result(self, job_id: str) -> bytes | None:
        """The job's stored result, byte for byte, while kept."""
        ...

    async def counts(self) -> Counts:
        """Jobs queued and running, in all and per tenant, and each tenant's result bytes."""
        ...

    async def footprint(self) -> int:
        """How many entries (Redis keys) the store holds: 0 when it holds nothing."""
        ...

    async def close(self) -> None:
        """Let go of connections; the store's contents stay."""
        ...


__all__ = [
    "CANCELLED",
    "MAX_ATTEMPTS",
    "UNIT",
    "Admission",
    "AdmitRequest",
    "Beat",
    "Claim",
    "Completed",
    "Counts",
    "Created",
    "Event",
    "Existing",
    "Fenced",
    "JobRecord",
    "JobState",
    "JobStore",
    "Lease",
    "Outcome",
    "Reaped",
    "Refusal",
    "ResultFate",
    "StoreConfig",
    "StoreError",
    "StoreUnavailable",
    "TenantCounts",
    "fair_cost",
]
