"""Call slots: how many Stylize calls the server holds open at once, and how many one caller may.

Every call takes a slot for as long as it streams; beyond `--max-calls` a call is refused at once
(RESOURCE_EXHAUSTED, TOO_MANY_CALLS). One caller may hold at most a share of them
(`--max-peer-share`), so that a client opening calls it never reads cannot starve the others. A
caller is the peer's network address (`caller_of`), or the tenant of the tokens file the call is
for, whose own `max_calls` (when it sets one) replaces the share: the slots only see a caller id.

A call whose reader stopped reading (`stall`) is over for the slots at once: it gives back its
slot and its caller's share, so that a caller is never locked out by calls that were ended. gRPC
still holds the call's HTTP/2 stream until the reader comes back or the stream or its connection
closes (`close`): `stalled` counts those, which hold neither a slot nor a share.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from styletx_server.errors.refusals import TenantQuota, TooManyCalls
from styletx_server.security.tenants import Tenant

#: Peer strings gRPC gives (`ipv4:10.0.0.7:51234`, `ipv6:[::1]:51234`, `unix:/path`).
_IP_SCHEMES = ("ipv4:", "ipv6:")


def caller_of(peer: str) -> str:
    """The caller a gRPC peer string stands for: its address without the port (one client's
    connections and ports are one caller); other transports as they are."""
    for scheme in _IP_SCHEMES:
        if peer.startswith(scheme):
            address = peer[len(scheme) :]
            host, sep, port = address.rpartition(":")
            if sep and port.isdigit():
                return scheme + host
            return peer
    return peer


def share_limit(max_calls: int, share: float) -> int:
    """Slots one caller may hold: `share` of `max_calls`, at least one."""
    return max(1, math.floor(max_calls * share + 1e-9))


class CallSlots:
    """At most `limit` calls at once, at most `per_caller` of them one caller's; thread-safe.

    `on_change(open, stalled)` observes every change: calls holding a slot, and stalled calls
    whose streams gRPC still holds (they hold no slot and count against no caller).
    """

    def __init__(
        self,
        limit: int,
        per_caller: int,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        if limit < 1 or per_caller < 1:
            raise ValueError("limit and per_caller must be >= 1")
        self.limit = limit
        self.per_caller = min(per_caller, limit)
        self._on_change = on_change
        self._lock = threading.Lock()
        self._open = 0
        self._stalled = 0
        self._by_caller: dict[str, int] = {}

    @property
    def open(self) -> int:
        """Calls holding a slot now."""
        with self._lock:
            return self._open

    @property
    def stalled(self) -> int:
        """Stalled calls whose streams gRPC still holds (no slot, no caller's share)."""
        with self._lock:
            return self._stalled

    def held_by(self, caller: str) -> int:
        """Calls `caller` holds now (stalled ones hold nothing)."""
        with self._lock:
            return self._by_caller.get(caller, 0)

    def acquire(self, caller: str, tenant: Tenant | None = None) -> Slot:
        """A slot for one call of `caller` (of a named `tenant`: the tenant is the caller);
        TooManyCalls when the server or the caller is full, TenantQuota past `max_calls`."""
        if tenant is not None and tenant.named:
            caller = f"tenant:{tenant.name}"
        quota = None if tenant is None or not tenant.named else tenant.max_calls
        with self._lock:
            if self._open >= self.limit:
                raise TooManyCalls(self.limit, per_caller=False)
            held = self._by_caller.get(caller, 0)
            if quota is not None and tenant is not None and held >= quota:
                raise TenantQuota(tenant.name, "max_calls", quota, 0.0)
            if quota is None and held >= self.per_caller:
                raise TooManyCalls(self.per_caller, per_caller=True, server_limit=self.limit)
            self._open += 1
            self._by_caller[caller] = held + 1
            counts = self._open, self._stalled
        self._changed(counts)
        return Slot(self, caller)

    def _stall(self, caller: str) -> None:
        with self._lock:
            self._release(caller)
            self._stalled += 1
            counts = self._open, self._stalled
        self._changed(counts)

    def _close(self, caller: str, stalled: bool) -> None:
        with self._lock:
            if stalled:
                self._stalled -= 1  # its slot and share went back when it stalled
            else:
                self._release(caller)
            counts = self._open, self._stalled
        self._changed(counts)

    def _release(self, caller: str) -> None:
        """A slot and `caller`'s share of it back (the lock held)."""
        self._open -= 1
        held = self._by_caller[caller] - 1
        if held:
            self._by_caller[caller] = held
        else:
            del self._by_caller[caller]

    def _changed(self, counts: tuple[int, int]) -> None:
        if self._on_change is not None:
            self._on_change(*counts)


class Slot:
    """One call's slot: `stall()` gives the slot and the caller's share back early, `close()`
    ends the call (both are idempotent; a stalled call stops counting as stalled at `close()`)."""

    def __init__(self, slots: CallSlots, caller: str) -> None:
        self._slots = slots
        self.caller = caller
        self._lock = threading.Lock()
        self._stalled = False
        self._closed = False

    @property
    def stalled(self) -> bool:
        return self._stalled

    def stall(self) -> None:
        """The reader stopped reading and the call is ended: its slot and its caller's share go
        back at once; it counts as stalled until `close()` (gRPC let go of its stream)."""
        with self._lock:
            if self._stalled or self._closed:
                return
            self._stalled = True
        self._slots._stall(self.caller)

    def close(self) -> None:
        """The call is over."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            stalled = self._stalled
        self._slots._close(self.caller, stalled)


__all__ = ["CallSlots", "Slot", "TooManyCalls", "caller_of", "share_limit"]
