"""The SDK's job types: GetJob answers to `JobInfo`, job errors to SDK exceptions, key checks,
and what the CLI prints and exits with."""

from __future__ import annotations

import grpc
import pytest

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_client import (
    CancelledError,
    JobNotFoundError,
    OutOfMemoryError,
    Reason,
    ServiceError,
)
from styletx_client._convert import job_from_proto, job_state
from styletx_client._core import checked_key
from styletx_client.cli import EXIT_NOT_FOUND, describe, describe_job
from styletx_client.errors import from_status


def test_job_errors_map_like_rpc_errors() -> None:
    assert isinstance(from_status(1, "stop", "CANCELLED"), CancelledError)
    oom = from_status(8, "no room", "OUT_OF_MEMORY", "r1")
    assert isinstance(oom, OutOfMemoryError) and oom.request_id == "r1"
    missing = from_status(5, "gone", "JOB_NOT_FOUND")
    assert isinstance(missing, JobNotFoundError) and missing.code is grpc.StatusCode.NOT_FOUND
    unknown = from_status(999, "?", None)
    assert type(unknown) is ServiceError and unknown.code is grpc.StatusCode.UNKNOWN


def test_every_proto_state_has_a_name() -> None:
    names = [job_state(value.number) for value in pb.JobState.DESCRIPTOR.values[1:]]
    assert names == ["queued", "running", "done", "failed", "cancelled"]
    with pytest.raises(ValueError, match="unknown job state"):
        job_state(0)


def test_a_queued_job_has_no_started_progress_or_result() -> None:
    info = job_from_proto(
        pb.GetJobResponse(
            request_key="k",
            state=pb.JOB_STATE_QUEUED,
            request_id="r",
            queue_position=2,
            options=pb.StyleOptions(size=64),
        )
    )
    assert (info.state, info.position, info.ended) == ("queued", 2, False)
    assert info.started is None and info.progress is None and info.result is None
    assert info.options is not None and info.options.size == 64
    assert "position 2" in describe_job(info)


def test_a_cancelled_job_carries_its_error() -> None:
    message = pb.GetJobResponse(
        request_key="k",
        state=pb.JOB_STATE_CANCELLED,
        request_id="r",
        progress=pb.ProgressEvent(iteration=3, evaluations=7, max_evaluations=100),
        error=pb.JobError(
            code=1, message="the job was cancelled", reason=pb.ERROR_REASON_CANCELLED
        ),
    )
    info = job_from_proto(message)
    assert info.ended and isinstance(info.error, CancelledError)
    assert info.error.reason == Reason.CANCELLED and info.error.request_key == "k"
    assert info.progress is not None and info.progress.iteration == 3
    line = describe_job(info)
    assert line.startswith("k: cancelled; iteration 3, 7/100 evaluations")
    assert "CANCELLED: the job was cancelled" in line


def test_keys_must_be_non_empty_strings() -> None:
    assert checked_key("k") == "k"
    with pytest.raises(ValueError, match="empty"):
        checked_key("")
    with pytest.raises(TypeError):
        checked_key(7)  # type: ignore[arg-type]


def test_not_found_exits_7() -> None:
    code, message = describe(JobNotFoundError("no job with request_key 'k'"), "host:1")
    assert code == EXIT_NOT_FOUND and "no such job on host:1" in message
