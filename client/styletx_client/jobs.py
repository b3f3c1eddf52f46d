"""Typed answers of the job calls (`get_job`, `cancel_job`): where a keyed job is, and how it
ended, decoupled from the generated protobuf classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from styletx_api.v1.style_options import JobState

from .errors import ServiceError
from .events import Progress, ResolvedOptions, Result, Started

ENDED_STATES: Final[frozenset[JobState]] = frozenset({"done", "failed", "cancelled"})
"""States a job never leaves (a new Stylize call with the key starts a new job)."""


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What the server says of a job started with a request key. Durations are in seconds.

    `position` is the 1-based queue position while `state` is "queued" (0 otherwise);
    `progress` is the latest iteration of a job that started (running, or stopped part-way);
    `result` is set when "done" (its image data empty when asked for without the image);
    `error` is the SDK error the job's streams ended with when "failed" or "cancelled".
    """

    request_key: str
    state: JobState
    request_id: str
    position: int
    options: ResolvedOptions | None
    started: Started | None
    progress: Progress | None
    queue_time: float
    compute_time: float
    result: Result | None
    error: ServiceError | None

    @property
    def ended(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self.state in ENDED_STATES


__all__ = ["ENDED_STATES", "JobInfo", "JobState"]
