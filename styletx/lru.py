"""A small thread-safe LRU map: every cache the engine keeps is one of these, so none grows."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """A thread-safe least-recently-used map of at most `capacity` entries.

    `get_or_create` builds a missing entry once even when threads ask for it together, and
    without holding the map's lock (a slow creation, such as an XLA compilation, does not stall
    lookups of other keys). `on_evict` is called with each entry pushed out.
    """

    def __init__(self, capacity: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._building: dict[K, threading.Lock] = {}
        self._lock = threading.Lock()
        self._on_evict = on_evict

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _lookup(self, key: K) -> V | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def get_or_create(self, key: K, create: Callable[[], V]) -> V:
        """The entry for `key`, created by `create()` if missing (once per key at a time)."""
        found = self._lookup(key)
        if found is not None:
            return found
        with self._lock:
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            # Another thread may have built it while we waited for the gate.
            found = self._lookup(key)
            if found is not None:
                return found
            evicted: list[tuple[K, V]] = []
            try:
                found = create()
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            with self._lock:
                # Stored before the gate is dropped, so a latecomer finds it and builds nothing.
                self._entries[key] = found
                self._building.pop(key, None)
                while len(self._entries) > self.capacity:
                    evicted.append(self._entries.popitem(last=False))
        if self._on_evict is not None:
            for old_key, old_value in evicted:
                self._on_evict(old_key, old_value)
        return found


__all__ = ["LRUCache"]
