"""The Redis store's replies read back: job records from the scripts' flat field lists, times in
milliseconds, and the lease a running record holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from styletx_server.store.protocol import JobRecord, JobState, Lease, ResultFate, Timings


def ms(seconds: float) -> int:
    """Seconds as the whole milliseconds the scripts take (never negative)."""
    return max(0, round(seconds * 1000))


def text(value: Any) -> str:
    """A reply item as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def seconds_of(fields: dict[str, bytes], name: str) -> float | None:
    """A record's time field (ms) in seconds; None when it is not set."""
    value = fields.get(name)
    return None if value is None else int(value) / 1000


def record_of(flat: Sequence[Any]) -> JobRecord:
    """A job record from a script's `{id, field, value, ...}`."""
    job_id = text(flat[0])
    fields = {text(flat[i]): flat[i + 1] for i in range(1, len(flat) - 1, 2)}
    key, owner, cancel = fields.get("key"), fields.get("owner"), fields.get("cancel")
    admitted = seconds_of(fields, "admitted")
    return JobRecord(
        job_id=job_id,
        tenant=text(fields["tenant"]),
        key=None if key is None else text(key),
        digest=bytes(fields["digest"]),
        state=JobState(text(fields["state"])),
        attempt=int(fields["attempt"]),
        token=int(fields["token"]),
        owner=None if owner is None else text(owner),
        lost=int(fields["lost"]),
        times=Timings(
            admitted=0.0 if admitted is None else admitted,
            started=seconds_of(fields, "started"),
            ended=seconds_of(fields, "ended"),
        ),
        deadline=seconds_of(fields, "deadline"),
        reason=text(fields.get("reason", b"")),
        cancel=None if cancel is None else text(cancel),
        detail=bytes(fields.get("detail", b"")),
        result=ResultFate(text(fields.get("result", b"none"))),
        result_size=int(fields.get("rsize", 0)),
    )


def lease_of(record: JobRecord) -> Lease:
    """The lease a running record holds."""
    assert record.owner is not None and record.deadline is not None
    return Lease(record.job_id, record.owner, record.token, record.deadline)


__all__ = ["lease_of", "ms", "record_of", "seconds_of", "text"]
