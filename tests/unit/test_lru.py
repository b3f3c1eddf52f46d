"""The bounded LRU every engine cache uses."""

from __future__ import annotations

import threading

import pytest

from styletx.lru import LRUCache
from tests.support.engine_probes import keys_by_age


def test_keeps_at_most_capacity_and_evicts_the_least_recently_used() -> None:
    evicted: list[tuple[str, int]] = []
    cache: LRUCache[str, int] = LRUCache(2, on_evict=lambda k, v: evicted.append((k, v)))
    assert cache.get_or_create("a", lambda: 1) == 1
    assert cache.get_or_create("b", lambda: 2) == 2
    assert cache.get_or_create("a", lambda: 99) == 1  # a hit refreshes "a"
    assert cache.get_or_create("c", lambda: 3) == 3
    assert keys_by_age(cache) == ["a", "c"] and len(cache) == 2
    assert evicted == [("b", 2)]


def test_concurrent_callers_build_a_missing_entry_once() -> None:
    cache: LRUCache[str, object] = LRUCache(4)
    started, release = threading.Event(), threading.Event()
    builds: list[int] = []

    def slow_build() -> object:
        builds.append(1)
        started.set()
        release.wait(10)
        return object()

    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_create("k", slow_build)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    assert started.wait(10)
    # Another key is served while "k" is still being built.
    assert cache.get_or_create("other", lambda: "fast") == "fast"
    release.set()
    for t in threads:
        t.join(10)
    assert len(builds) == 1 and len(results) == 3 and len({id(r) for r in results}) == 1


def test_a_failed_build_is_not_cached() -> None:
    cache: LRUCache[str, int] = LRUCache(1)

    def fail() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_create("k", fail)
    assert cache.get_or_create("k", lambda: 5) == 5


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LRUCache(0)
