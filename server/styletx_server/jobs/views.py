"""What GetJob says about a keyed job: its view while it lives, and its record once it ended.

A live job is described from its snapshot (latest queue position, start, progress) and its
times. When a keyed job ends, its view is built once and kept for the result TTL, like results
are, but without the image: a failed or cancelled job leaves no result, yet GetJob and WatchJob
must still say how it ended. A finished job's image stays in the registry's stored results (one
copy, under their count and byte bounds); the record only points to it by key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.statuses import ErrorStatus
from styletx_server.intake.convert import duration, options_to_proto
from styletx_server.jobs.job import JobSnapshot, StylizeJob
from styletx_server.jobs.mailbox import Final
from styletx_server.observe.logs import log_event

log = logging.getLogger(__name__)

#: Ended jobs remembered at most (oldest forgotten first); each record is a few hundred bytes.
MAX_ENDED_JOBS = 10_000


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

    @property
    def state(self) -> pb.JobState.ValueType:
        return self.view.state


class EndedJobs:
    """Records of ended keyed jobs, by key, for `ttl` seconds (at most `max_jobs`); thread-safe."""

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
        self._jobs: OrderedDict[str, EndedJob] = OrderedDict()

    @property
    def ttl(self) -> float:
        """Seconds a record is kept (the server's --result-ttl)."""
        return self._ttl

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
            self._jobs.pop(key, None)
            self._jobs[key] = record
            # One TTL for all: the oldest record expires first.
            while len(self._jobs) > self._max or next(iter(self._jobs.values())).expires <= now:
                self._jobs.popitem(last=False)

    def get(self, key: str) -> EndedJob | None:
        """The record of `key`, unless it expired."""
        with self._lock:
            record = self._jobs.get(key)
            if record is not None and record.expires <= self._clock():
                del self._jobs[key]
                return None
            return record

    def drop(self, key: str) -> None:
        """Forget `key` (a new job under it started)."""
        with self._lock:
            self._jobs.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            now = self._clock()
            for key in [k for k, r in self._jobs.items() if r.expires <= now]:
                del self._jobs[key]
            return len(self._jobs)


__all__ = [
    "MAX_ENDED_JOBS",
    "EndedJob",
    "EndedJobs",
    "ended_view",
    "job_error",
    "live_view",
    "state_of",
    "stored_view",
]
