"""A bounded store shared fairly among tenants: what the registry keeps per request key (stored
results, ended-job records, and why a key is gone) under one server-wide bound, with no tenant
able to push out another's entries by flooding it with its own.

Keys are the registry's tenant-scoped keys (`job.scoped_key`: `tenant/key`; neither part holds a
`/`), so an entry's tenant is known from its key. Over a bound (entries, or their total size),
the tenant that holds the most gives up its oldest entry, the tenant that is adding on a tie. So
a tenant's entries make room only for its own newer ones, or for a tenant holding fewer: a
tenant that keeps within an equal share of the bound never loses an entry to another tenant's
jobs, and with one tenant the store is the plain oldest-first store it always was. Each entry
leaves at its own expiry (`expire`). Not thread-safe: its owner locks.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


def tenant_of(key: str) -> str:
    """The tenant part of a scoped key ('' for a key filed without one)."""
    tenant, slash, _ = key.partition("/")
    return tenant if slash else ""


@dataclass
class _Entry(Generic[V]):
    value: V
    size: int
    expires: float
    seq: int


@dataclass
class _Holding:
    """One tenant's keys (oldest first) and what they add up to."""

    keys: OrderedDict[str, None]
    count: int = 0
    size: int = 0


class FairStore(Generic[V]):
    """Values by key, at most `max_count` of them and `max_size` in size (None: no size bound)."""

    def __init__(self, max_count: int, max_size: int | None = None) -> None:
        self.max_count = max_count
        self.max_size = max_size
        self._entries: dict[str, _Entry[V]] = {}
        #: (expiry, seq, key) of every entry, and of some that left (skipped when met).
        self._expiries: list[tuple[float, int, str]] = []
        self._tenants: dict[str, _Holding] = {}
        self._size = 0
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def size(self) -> int:
        """The sizes of every entry, added up."""
        return self._size

    def held(self, tenant: str) -> int:
        """Entries `tenant` holds now."""
        holding = self._tenants.get(tenant)
        return 0 if holding is None else holding.count

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.value

    def put(self, key: str, value: V, *, expires: float, size: int = 0) -> list[tuple[str, V]]:
        """File `value` under `key` (replacing what was there), then make room: the entries
        dropped for it, oldest first (`key` itself among them when its tenant holds the most and
        it is all its tenant has left)."""
        self.pop(key)
        tenant = tenant_of(key)
        entry = _Entry(value, size, expires, next(self._seq))
        self._entries[key] = entry
        heapq.heappush(self._expiries, (expires, entry.seq, key))
        if len(self._expiries) > 2 * len(self._entries) + 64:  # drop what left long ago
            self._expiries = [(e.expires, e.seq, k) for k, e in self._entries.items()]
            heapq.heapify(self._expiries)
        holding = self._tenants.setdefault(tenant, _Holding(OrderedDict()))
        holding.keys[key] = None
        holding.count += 1
        holding.size += size
        self._size += size
        evicted: list[tuple[str, V]] = []
        while self._entries and (
            len(self._entries) > self.max_count
            or (self.max_size is not None and self._size > self.max_size)
        ):
            by_size = len(self._entries) <= self.max_count  # only the size is over
            victim = self._victim(tenant, by_size)
            oldest = next(iter(self._tenants[victim].keys))
            evicted.append((oldest, self._remove(oldest)))
        return evicted

    def replace(self, key: str, value: V) -> bool:
        """Change the value under `key`, keeping its place, size and expiry; False if absent."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        entry.value = value
        return True

    def pop(self, key: str) -> V | None:
        """Take `key` out; its value, or None when it was not there."""
        return self._remove(key) if key in self._entries else None

    def expire(self, now: float) -> list[tuple[str, V]]:
        """Take out the entries whose expiry is `now` or earlier (soonest first)."""
        expired: list[tuple[str, V]] = []
        while self._expiries and self._expiries[0][0] <= now:
            _, seq, key = heapq.heappop(self._expiries)
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq:
                expired.append((key, self._remove(key)))
        return expired

    def _victim(self, adding: str, by_size: bool) -> str:
        """The tenant that gives up an entry: the one holding the most (by size when only the
        size is over the bound), `adding` on a tie, else the one whose oldest entry is oldest."""

        def claim(item: tuple[str, _Holding]) -> tuple[int, bool, int]:
            name, holding = item
            oldest = self._entries[next(iter(holding.keys))].seq
            return (holding.size if by_size else holding.count, name == adding, -oldest)

        return max(self._tenants.items(), key=claim)[0]

    def _remove(self, key: str) -> V:
        entry = self._entries.pop(key)
        tenant = tenant_of(key)
        holding = self._tenants[tenant]
        del holding.keys[key]
        holding.count -= 1
        holding.size -= entry.size
        self._size -= entry.size
        if not holding.count:
            del self._tenants[tenant]
        return entry.value


__all__ = ["FairStore", "tenant_of"]
