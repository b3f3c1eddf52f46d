"""A job's events and the streams that subscribe to them.

The worker publishes events; `JobEvents` keeps the current state (queue position, started, latest
progress, final outcome, why it must stop) and copies each event into every subscriber's
coalescing mailbox, so the worker never waits on a reader. A subscriber that joins late gets the
current state first. The outcome is set once (`complete`): the first one wins.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.statuses import StopReason
from styletx_server.jobs.mailbox import Final, Mailbox


@dataclass(frozen=True)
class JobSnapshot:
    """A job's latest events and outcome, read together (what GetJob describes)."""

    queued: pb.StylizeResponse | None
    started: pb.StylizeResponse | None
    progress: pb.StylizeResponse | None
    final: Final | None
    stop: StopReason | None


class JobEvents:
    """The current state of one job's stream and its subscribers; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Mailbox] = []
        self._queued: pb.StylizeResponse | None = None
        self._started: pb.StylizeResponse | None = None
        self._progress: pb.StylizeResponse | None = None
        self._final: Final | None = None
        self._stop: StopReason | None = None

    def subscribe(self, mailbox: Mailbox) -> None:
        """Add a stream: it first gets the current state (or the outcome), then what follows."""
        with self._lock:
            if self._final is not None:
                mailbox.put(self._final)
                return
            if self._started is None:
                if self._queued is not None:
                    mailbox.put(self._queued)
            else:
                mailbox.put(self._started)
                if self._progress is not None:
                    mailbox.put(self._progress)
            self._subscribers.append(mailbox)

    def unsubscribe(self, mailbox: Mailbox) -> int:
        """Remove a stream; returns how many are left."""
        with self._lock:
            if mailbox in self._subscribers:
                self._subscribers.remove(mailbox)
            return len(self._subscribers)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def snapshot(self) -> JobSnapshot:
        """The latest queue position, start, progress and outcome, consistent with each other."""
        with self._lock:
            return JobSnapshot(self._queued, self._started, self._progress, self._final, self._stop)

    def publish(self, response: pb.StylizeResponse) -> None:
        """Keep `response` as the current state of its kind and pass it to every subscriber."""
        with self._lock:
            if self._final is not None:
                return
            kind = response.WhichOneof("event")
            if kind == "queued":
                self._queued = response
            elif kind == "started":
                self._started = response
            elif kind == "progress":
                self._progress = response
            for mailbox in self._subscribers:
                mailbox.put(response)

    def complete(self, final: Final) -> list[Mailbox] | None:
        """Set the outcome (first call wins) and hand back the subscribers to tell, after the
        caller's bookkeeping; None when the job had already ended. A stream that subscribes
        meanwhile sees the outcome and gets it from `subscribe`."""
        with self._lock:
            if self._final is not None:
                return None
            self._final = final
            subscribers, self._subscribers = self._subscribers, []
            return subscribers

    @property
    def final(self) -> Final | None:
        with self._lock:
            return self._final

    def stop(self, reason: StopReason) -> None:
        """Ask the job to stop (the first reason wins)."""
        with self._lock:
            if self._stop is None:
                self._stop = reason

    @property
    def stop_requested(self) -> StopReason | None:
        return self._stop


__all__ = ["JobEvents", "JobSnapshot"]
