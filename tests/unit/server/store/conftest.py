"""The job store's tests: a real Redis (Debian's `redis-server`, our own process on a free port,
one per test session) and a harness that runs one scenario against either store.

Time: the memory store reads a fake clock that `Harness.advance` moves at once; the Redis store
lives on the server's real clock, so its harness uses short leases and TTLs and sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from styletx_server.store.memory import MemoryStore
from styletx_server.store.protocol import JobStore, StoreConfig
from styletx_server.store.redis_store import RedisStore
from styletx_server.store.url import parse_store_url
from tests.support.redis_server import MISSING, RedisServer, find_redis_server

STORES = ("memory", "redis")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (each xdist worker has its own); skipped, saying why,
    only when redis-server is missing and cannot be installed here."""
    binary = find_redis_server(tmp_path_factory.getbasetemp().parent)
    if binary is None:
        pytest.skip(MISSING)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """One kind of store, opened afresh for each scenario, and its clock."""

    kind: str
    #: Seconds of a lease and of the result TTL on this store's clock.
    lease: float
    ttl: float
    redis: RedisServer | None = None
    clock: FakeClock = field(default_factory=FakeClock)
    _memory: MemoryStore | None = None

    def config(self, **overrides: Any) -> StoreConfig:
        base = StoreConfig(result_ttl=self.ttl, lease_seconds=self.lease, timeout=5.0)
        return replace(base, **overrides)

    def open(self, config: StoreConfig) -> JobStore:
        """A store (for memory: the same one on every call, as replicas share the store)."""
        if self.redis is None:
            if self._memory is None or self._memory.config != config:
                self._memory = MemoryStore(config, clock=self.clock)
            return self._memory
        return RedisStore(parse_store_url(self.redis.url()), config)

    async def advance(self, seconds: float) -> None:
        if self.redis is None:
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)

    def run(self, scenario: Callable[[JobStore], Awaitable[None]], **config: Any) -> None:
        """Run `scenario` on a store told `config` (over the harness's lease and TTL)."""

        async def main() -> None:
            store = self.open(self.config(**config))
            try:
                await scenario(store)
            finally:
                await store.close()

        asyncio.run(main())

    def run_many(
        self, n: int, scenario: Callable[[list[JobStore]], Awaitable[None]], **config: Any
    ) -> None:
        """Run `scenario` on `n` replicas' stores (separate clients of one Redis)."""

        async def main() -> None:
            stores = [self.open(self.config(**config)) for _ in range(n)]
            try:
                await scenario(stores)
            finally:
                for store in stores:
                    await store.close()

        asyncio.run(main())

    def redis_keys(self) -> dict[str, int]:
        """Every key of the Redis server and its PTTL (-1: none)."""
        assert self.redis is not None
        client = self.redis.client()
        return {key.decode(): int(client.pttl(key)) for key in client.scan_iter(count=1000)}


@pytest.fixture(params=STORES)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param == "memory":
        return Harness("memory", lease=10.0, ttl=60.0)
    server: RedisServer = request.getfixturevalue("redis_server")
    server.client().flushall()
    return Harness("redis", lease=0.5, ttl=1.0, redis=server)
