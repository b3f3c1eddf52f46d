"""How a job's events and outcome are kept in a shared job store (`store.protocol.JobStore`):
bytes both ways, so that a replica that did not run the job streams it as the one that did.

An event is its `StylizeResponse`; an outcome is the result's mark (kind `result`: the encoding
the result was made in, `<format>/<quality>`; the result event itself is the store's result) or
the error status as the `google.rpc.Status` gRPC sends in its trailers (kind `error`), so the
caller of any replica gets the same code, message and rich details, and a caller that asked for
another encoding gets the picture re-encoded, as on the replica that ran the job.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.wire import STATUS_DETAILS_KEY
from styletx_server.errors import statuses
from styletx_server.errors.statuses import ErrorStatus, Reason
from styletx_server.jobs.mailbox import Final
from styletx_server.store.protocol import MAX_ATTEMPTS, Event, JobRecord, JobState, ResultFate

#: Kinds of stored events.
EVENT, RESULT, ERROR = "event", "result", "error"


def event_bytes(response: pb.StylizeResponse) -> tuple[str, bytes]:
    """A non-final event as stored."""
    return EVENT, response.SerializeToString()


def final_bytes(final: Final) -> tuple[str, bytes]:
    """A job's outcome as its final stored event: its result's encoding, or its status."""
    if final.response is not None:
        return RESULT, b"" if final.encoding is None else "{}/{}".format(*final.encoding).encode()
    assert final.status is not None
    return ERROR, status_bytes(final.status)


def _encoding(data: bytes) -> tuple[str, int] | None:
    """The encoding a result's mark names (None for an empty or unreadable mark)."""
    fmt, _, quality = data.decode("ascii", "replace").partition("/")
    return (fmt, int(quality)) if fmt and quality.isdigit() else None


def status_bytes(status: ErrorStatus) -> bytes:
    """The `google.rpc.Status` of `status` (code, message, details), serialized."""
    for name, value in status.trailing_metadata:
        if name == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    plain = status_pb2.Status(code=status.code.value[0], message=status.details)
    return bytes(plain.SerializeToString())


def status_from(data: bytes) -> ErrorStatus:
    """The ErrorStatus a stored status stands for, its reason read from its ErrorInfo."""
    message = status_pb2.Status.FromString(data)
    plain = rpc_status.to_status(message)
    reason = Reason.INTERNAL
    for detail in message.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = Reason(info.reason)
            break
    return ErrorStatus(plain.code, plain.details, tuple(plain.trailing_metadata), reason)


def decode(event: Event) -> pb.StylizeResponse | Final:
    """A stored event as the relay takes it: a StylizeResponse, or the job's Final."""
    if event.kind == RESULT:  # the result event is read from the store by whoever sends it
        return Final(response=pb.StylizeResponse(), encoding=_encoding(event.data))
    if event.kind == ERROR:
        return Final(status=status_from(event.data))
    response = pb.StylizeResponse.FromString(event.data)
    response.event_id = event.id
    return response


def final_of_record(record: JobRecord) -> Final | None:
    """The outcome of a job that ended without a stored final event (cancelled while queued, or
    out of attempts), from its record; None for a live job or one whose final event exists."""
    if record.state is JobState.CANCELLED:
        return Final(status=statuses.for_stop(statuses.StopReason.JOB_CANCELLED))
    if record.state is JobState.FAILED and record.reason == MAX_ATTEMPTS:
        return Final(status=statuses.max_attempts(record.lost))
    return None


def state_of_record(record: JobRecord) -> pb.JobState.ValueType:
    """The API's state of a stored job."""
    return {
        JobState.QUEUED: pb.JOB_STATE_QUEUED,
        JobState.RUNNING: pb.JOB_STATE_RUNNING,
        JobState.DONE: pb.JOB_STATE_DONE,
        JobState.FAILED: pb.JOB_STATE_FAILED,
        JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
    }[record.state]


def attachable(record: JobRecord) -> bool:
    """A job a call with its key attaches to: live, or DONE with its result kept."""
    return record.live or record.result is ResultFate.KEPT


def result_gone(record: JobRecord) -> str:
    """Why a finished job's result cannot be sent, as a NOT_FOUND says it."""
    if record.result is ResultFate.EVICTED:
        cause = "was evicted by its tenant's newer results (the tenant's result byte budget)"
    elif record.result is ResultFate.NOT_KEPT:
        cause = "was not kept: it is larger than the tenant's result byte budget"
    else:
        cause = "is no longer kept"
    return f"it finished, but its result {cause}; GetJob with omit_image still describes it"


def job_state_of(final: Final) -> JobState:
    """The store's state for a job that ended with `final`."""
    if final.response is not None:
        return JobState.DONE
    if final.status is not None and final.status.code is grpc.StatusCode.CANCELLED:
        return JobState.CANCELLED
    return JobState.FAILED


class RecentResults:
    """The results this replica is committing or committed last, by job id, for callers on this
    replica: their job's result is then sent without reading back from the store what was just
    written there.

    The worker opens an entry before its commit and settles it after: with the bytes once the
    store took them, with None when it did not (a stale attempt, a store that stayed down). A
    caller that sees the job's final event may get there first (both replies come from one store
    call): it waits for the entry to settle, and on None reads the store as usual, so it never
    sends a result the store refused. Bounded by count; on the event loop only.
    """

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._results: OrderedDict[str, asyncio.Future[bytes | None]] = OrderedDict()

    def open(self, job_id: str) -> None:
        """A commit of `job_id` starts."""
        self._results[job_id] = asyncio.get_running_loop().create_future()
        self._results.move_to_end(job_id)
        while len(self._results) > self._size:
            _, dropped = self._results.popitem(last=False)
            if not dropped.done():
                dropped.set_result(None)

    def settle(self, job_id: str, result: bytes | None) -> None:
        """The commit of `job_id` ended: the stored bytes, or None when nothing was stored."""
        future = self._results.get(job_id)
        if future is not None and not future.done():
            future.set_result(result)

    async def get(self, job_id: str) -> bytes | None:
        """The bytes committed here for `job_id`, or None (not committed here, or refused)."""
        future = self._results.get(job_id)
        return None if future is None else await asyncio.shield(future)


__all__ = [
    "ERROR",
    "EVENT",
    "RESULT",
    "RecentResults",
    "attachable",
    "decode",
    "event_bytes",
    "final_bytes",
    "final_of_record",
    "job_state_of",
    "result_gone",
    "state_of_record",
    "status_bytes",
    "status_from",
]
