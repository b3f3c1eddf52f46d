"""What GetJob says about a keyed job: its view while it lives, and its record once it ended.

A live job is described from its snapshot (latest queue position, start, progress) and its
times. When a keyed job ends, its view is built once and kept for the result TTL, like results
are, but without the image: a failed or cancelled job leaves no result, yet GetJob and WatchJob
must still say how it ended. A finished job's image stays in the registry's stored results (one
copy, under their count and byte bounds); the record only points to it by key, and says why it
is gone when it is (`EndedJob.result`).

Records are kept per tenant (`shares.FairStore`): a tenant's ended jobs push out its own oldest
records, never those of a tenant holding fewer. When a record leaves, a tombstone says why
(`EndedJobs.gone`: it expired, or it was evicted) until two TTLs after the job ended, so GetJob
tells those apart from a key that never ran here.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import grpc

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.statuses import ErrorStatus
from styletx_server.intake.convert import duration, options_to_proto
from styletx_server.jobs.job import JobSnapshot, StylizeJob
from styletx_server.jobs.mailbox import Final
from styletx_server.jobs.shares import FairStore, tenant_of
from styletx_server.observe.logs import log_event

log = logging.getLogger(__name__)

#: Ended jobs remembered at most, shared among tenants (each tenant's oldest forgotten first);
#: each record is a few hundred bytes. As many tombstones (why a key is gone) are kept besides.
MAX_ENDED_JOBS = 10_000


class Gone(enum.Enum):
    """Why what was kept of a keyed job is no longer there."""

    #: Its TTL (--result-ttl) ran out.
    EXPIRED = "expired"
    #: Pushed out within the bounds: by its own tenant's newer ones, or a tenant holding fewer.
    EVICTED = "evicted"
    #: Never kept: a result larger than the store's bound allows (or the store is off).
    NOT_KEPT = "not_kept"


def state_of(final: Final) -> pb.JobState.ValueType:
    """DONE, CANCELLED (stopped by a caller) or FAILED (any other error status)."""
    if final.response is not None:
        return pb.JOB_STATE_DONE
    if final.status is not None and final.status.code is grpc.StatusCode.CANCELLED:
        return pb.JOB_STATE_CANCELLED
    return pb.JOB_STATE_FAILED


def job_error(status: ErrorStatus) -> pb.JobError:
    """The JobError of an error status (its code number, message and ErrorInfo reason)."""
    code: int = status.code.value[0]
    return pb.JobError(
        code=code,
        message=status.details,
        reason=pb.ErrorReason.Value(f"ERROR_REASON_{status.reason.value}"),
    )


def _progress(event: pb.StylizeResponse) -> pb.ProgressEvent:
    """A progress event without its preview (GetJob describes; WatchJob sends pictures)."""
    progress = pb.ProgressEvent()
    progress.CopyFrom(event.progress)
    progress.ClearField("preview")
    return progress


def _base(job: StylizeJob, snapshot: JobSnapshot) -> pb.GetJobResponse:
    view = pb.GetJobResponse(request_key=job.key or "", request_id=job.request_id)
    if snapshot.started is not None:
        view.started.CopyFrom(snapshot.started.started)
        view.options.CopyFrom(snapshot.started.started.options)
    else:
        view.options.CopyFrom(options_to_proto(job.inspection.options))
    if snapshot.progress is not None:
        view.progress.CopyFrom(_progress(snapshot.progress))
    return view


def live_view(
    job: StylizeJob, snapshot: JobSnapshot, now: float | None = None
) -> pb.GetJobResponse:
    """The view of a job that has not ended: QUEUED with its position, or RUNNING."""
    now = time.monotonic() if now is None else now
    view = _base(job, snapshot)
    times = job.times
    started = times.started
    if snapshot.started is None or started is None:
        view.state = pb.JOB_STATE_QUEUED
        if snapshot.queued is not None:
            view.queue_position = snapshot.queued.queued.position
        view.queue_time.CopyFrom(duration(now - times.admitted))
    else:
        view.state = pb.JOB_STATE_RUNNING
        view.queue_time.CopyFrom(duration(times.queue_seconds))
        view.compute_time.CopyFrom(duration(now - started))
    return view


def ended_view(job: StylizeJob, final: Final, now: float | None = None) -> pb.GetJobResponse:
    """The view of a job that ended, without the result's image data."""
    now = time.monotonic() if now is None else now
    snapshot = job.snapshot()
    view = _base(job, snapshot)
    view.state = state_of(final)
    times = job.times
    queued = times.queue_seconds if times.started is not None else now - times.admitted
    view.queue_time.CopyFrom(duration(queued))
    view.compute_time.CopyFrom(duration(times.compute_seconds))
    if final.response is not None:
        view.ClearField("progress")  # the result says where it ended
        view.result.CopyFrom(_without_image(final.response.result))
    elif final.status is not None:
        view.error.CopyFrom(job_error(final.status))
    return view


def stored_view(key: str, final: Final) -> pb.GetJobResponse:
    """The view of a stored result whose record was forgotten (only the result is known)."""
    assert final.response is not None
    result = final.response.result
    view = pb.GetJobResponse(request_key=key, state=pb.JOB_STATE_DONE, request_id=result.request_id)
    view.queue_time.CopyFrom(result.queue_time)
    view.compute_time.CopyFrom(result.compute_time)
    view.result.CopyFrom(_without_image(result))
    return view


def _without_image(result: pb.ResultEvent) -> pb.ResultEvent:
    """`result` without its image data (copied field by field: the data may be megabytes)."""
    image = result.image
    return pb.ResultEvent(
        image=pb.EncodedImage(format=image.format, width=image.width, height=image.height),
        losses=result.losses,
        iterations=result.iterations,
        evaluations=result.evaluations,
        queue_time=result.queue_time,
        compute_time=result.compute_time,
        request_id=result.request_id,
    )


@dataclass(frozen=True)
class EndedJob:
    """A keyed job's outcome: its view (no image) and, unless it succeeded, its error status."""

    view: pb.GetJobResponse
    status: ErrorStatus | None
    expires: float
    #: Why a finished job's result is not among the stored results (None: it is, or none).
    result: Gone | None = None

    @property
    def state(self) -> pb.JobState.ValueType:
        return self.view.state


class EndedJobs:
    """Records of ended keyed jobs, by key, for `ttl` seconds (at most `max_jobs`, shared among
    tenants), and why a key's record is gone for a TTL after; thread-safe."""

    def __init__(
        self,
        ttl: float,
        *,
        max_jobs: int = MAX_ENDED_JOBS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max = max_jobs
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: FairStore[EndedJob] = FairStore(max_jobs)
        self._gone: FairStore[Gone] = FairStore(max_jobs)
        #: When each tenant last lost a tombstone to the bound (its gone keys look unknown).
        self._forgot: dict[str, float] = {}

    @property
    def ttl(self) -> float:
        """Seconds a record is kept (the server's --result-ttl)."""
        return self._ttl

    @property
    def max_jobs(self) -> int:
        """Records kept at most, shared among tenants."""
        return self._max

    def add(self, job: StylizeJob, final: Final) -> None:
        """Record how `job` (keyed) ended; nothing when outcomes are not kept (TTL 0)."""
        key = job.registry_key
        if key is None or self._ttl <= 0 or self._max < 1:
            return
        now = self._clock()
        try:
            view = ended_view(job, final)
        except Exception as exc:  # a record is a courtesy: never in the way of the job's end
            log_event(log, "job_record_failed", level=logging.ERROR, exc_info=exc)
            return
        record = EndedJob(view, final.status, now + self._ttl)
        with self._lock:
            self._expire(now)
            self._gone.pop(key)
            for gone, evicted in self._jobs.put(key, record, expires=record.expires):
                self._bury(gone, Gone.EVICTED, evicted.expires, now)

    def get(self, key: str) -> EndedJob | None:
        """The record of `key`, unless it expired or was evicted."""
        with self._lock:
            self._expire(self._clock())
            return self._jobs.get(key)

    def gone(self, key: str) -> Gone | None:
        """Why `key` has no record: EXPIRED or EVICTED (until two TTLs after the job ended);
        None when it has one, or no job with it ended here in two TTLs (see `forgetting`)."""
        with self._lock:
            self._expire(self._clock())
            return self._gone.get(key)

    def forgetting(self, key: str) -> bool:
        """True when `key`'s tenant lost tombstones to the bound lately (over `max_jobs` of its
        ended jobs are gone): a key it used may then look unknown."""
        with self._lock:
            self._expire(self._clock())
            return tenant_of(key) in self._forgot

    def result_gone(self, key: str, why: Gone) -> None:
        """Note on `key`'s record why its result is not stored (evicted, or never kept)."""
        with self._lock:
            record = self._jobs.get(key)
            if record is not None:
                self._jobs.replace(key, replace(record, result=why))

    def drop(self, key: str) -> None:
        """Forget `key` and how it went (a new job under it started)."""
        with self._lock:
            self._jobs.pop(key)
            self._gone.pop(key)

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._jobs)

    def _expire(self, now: float) -> None:
        """Under the lock: expired records leave a tombstone; old tombstones go."""
        self._gone.expire(now)
        for key, record in self._jobs.expire(now):
            self._bury(key, Gone.EXPIRED, record.expires, now)
        horizon = now - 2 * self._ttl  # a tombstone lost then would have expired by now
        for tenant in [t for t, when in self._forgot.items() if when <= horizon]:
            del self._forgot[tenant]

    def _bury(self, key: str, why: Gone, expired: float, now: float) -> None:
        """A tombstone for `key`, whose record was to expire at `expired`: kept one TTL more."""
        for lost, _ in self._gone.put(key, why, expires=expired + self._ttl):
            self._forgot[tenant_of(lost)] = now


__all__ = [
    "MAX_ENDED_JOBS",
    "EndedJob",
    "EndedJobs",
    "Gone",
    "ended_view",
    "job_error",
    "live_view",
    "state_of",
    "stored_view",
]
