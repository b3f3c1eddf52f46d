"""A subscriber's small, coalescing mailbox between a job (any thread) and its stream (the loop).

The worker never waits on a reader: `put` never blocks and the mailbox never grows without bound.
A slow or stalled reader gets coalesced events: the latest queue position replaces the previous
one, progress beyond a few pending events replaces the newest pending one (latest progress wins),
only the newest pending progress keeps its preview, and a final event drops pending positions and
previews so the result goes out first thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.statuses import ErrorStatus

#: Pending progress events kept before the newest one is overwritten (a fast reader never sees
#: coalescing; a stalled one holds at most this many small messages and one preview).
PROGRESS_SLOTS = 16


@dataclass(frozen=True)
class Final:
    """The end of a job's stream: its result event, or the error status."""

    response: pb.StylizeResponse | None = None
    status: ErrorStatus | None = None
    #: The result's pixels and the (format, quality) `response` carries them in, so a caller
    #: that attaches asking for another encoding gets the same picture re-encoded.
    pixels: Any = None
    encoding: tuple[str, int] | None = None

    @property
    def size(self) -> int:
        """Bytes this outcome holds (the encoded result and its pixels)."""
        encoded = 0 if self.response is None else self.response.ByteSize()
        return encoded + int(getattr(self.pixels, "nbytes", 0))


Item = pb.StylizeResponse | Final


def _kind(item: Item) -> str:
    return "final" if isinstance(item, Final) else str(item.WhichOneof("event"))


def _without_preview(item: pb.StylizeResponse) -> pb.StylizeResponse:
    if not item.progress.HasField("preview"):
        return item
    event = pb.ProgressEvent()
    event.CopyFrom(item.progress)
    event.ClearField("preview")
    return pb.StylizeResponse(progress=event)


class Mailbox:
    """Items for one stream; `put` from any thread, `get` on the event loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, progress_slots: int = PROGRESS_SLOTS
    ) -> None:
        self._loop = loop
        self._slots = max(1, progress_slots)
        self._lock = threading.Lock()
        self._items: deque[Item] = deque()
        self._wakeup = asyncio.Event()
        self._final = False
        #: Events replaced or stripped because the reader was behind (for tests and logs).
        self.coalesced = 0

    def put(self, item: Item) -> None:
        """Add `item`, coalescing with what is pending; never blocks. Nothing after a Final."""
        with self._lock:
            if self._final:
                return
            self._add(item)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody reads any more
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _add(self, item: Item) -> None:
        items = self._items
        kind = _kind(item)
        if kind == "final":
            kept = [x for x in items if _kind(x) != "queued"]
            self.coalesced += len(items) - len(kept)
            items.clear()
            items.extend(_without_preview(x) if _kind(x) == "progress" else x for x in kept)  # type: ignore[arg-type]
            items.append(item)
            self._final = True
            return
        if kind == "queued" and items and _kind(items[-1]) == "queued":
            items[-1] = item
            self.coalesced += 1
            return
        if kind == "progress":
            assert isinstance(item, pb.StylizeResponse)
            if item.progress.HasField("preview"):
                for i, pending in enumerate(items):
                    if _kind(pending) == "progress":
                        items[i] = _without_preview(pending)  # type: ignore[arg-type]
            pending_progress = [i for i, x in enumerate(items) if _kind(x) == "progress"]
            if len(pending_progress) >= self._slots:
                items[pending_progress[-1]] = item
                self.coalesced += 1
                return
        items.append(item)

    def pending(self) -> int:
        with self._lock:
            return len(self._items)

    async def get(self) -> Item:
        """The next item, waiting (on the loop) until there is one."""
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
            self._wakeup.clear()
            with self._lock:
                if self._items:
                    return self._items.popleft()
            await self._wakeup.wait()


__all__ = ["PROGRESS_SLOTS", "Final", "Item", "Mailbox"]
