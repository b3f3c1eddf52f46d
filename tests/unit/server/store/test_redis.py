"""What only the Redis store does: one hash tag for every key, calls bounded in time, a password
that no log, message or repr carries, and jobs that outlive a restart of Redis itself."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from styletx_server.store.protocol import (
    AdmitRequest,
    Created,
    JobState,
    Outcome,
    StoreConfig,
    StoreUnavailable,
)
from styletx_server.store.redis_store import RedisStore
from styletx_server.store.url import parse_store_url
from tests.support.redis_server import RedisServer


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    redis_server.client().flushall()
    return redis_server


def store_at(url: str, **config: float) -> RedisStore:
    return RedisStore(parse_store_url(url), StoreConfig(**config))  # type: ignore[arg-type]


async def one_of_everything(store: RedisStore) -> None:
    """A job through every step that writes a key."""
    admitted = await store.admit(AdmitRequest("a", "k", b"d", payload=b"p"))
    assert isinstance(admitted, Created)
    await store.admit(AdmitRequest("b", None, b"d"))
    (claim, _) = await store.claim("replica-1", 2)
    await store.admit(AdmitRequest("c", None, b"d"))
    await store.append(claim.lease, "progress", b"1")
    await store.heartbeat("replica-1", [claim.lease])
    await store.complete(claim.lease, Outcome(JobState.DONE, result=b"r" * 3000))


@pytest.mark.parametrize("prefix", [None, "blue"])
def test_every_key_sits_under_one_hash_tag_on_one_slot(
    server: RedisServer, prefix: str | None
) -> None:
    url = server.url(**({} if prefix is None else {"prefix": prefix}))

    async def main() -> None:
        store = store_at(url, chunk_bytes=1000)
        try:
            await one_of_everything(store)
        finally:
            await store.close()

    asyncio.run(main())
    keys = [k.decode() for k in server.client().scan_iter(count=1000)]
    tag = "{styletx}" if prefix is None else f"{{{prefix}}}"
    assert keys and all(k.startswith(f"{tag}:") for k in keys), keys
    assert len({key_slot(k.encode()) for k in keys}) == 1
    kinds = {k.split(":")[1] for k in keys}
    assert kinds == {
        *("job", "key", "payload", "events", "result", "held", "hbytes", "holders"),
        *("queue", "leases", "fair", "counts", "replica"),
    }


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never says a word (the kernel accepts them)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_a_store_that_does_not_answer_fails_within_its_timeout(silent_port: int) -> None:
    url = f"redis://:hunter2@127.0.0.1:{silent_port}/0?timeout=0.3"

    async def main() -> None:
        store = RedisStore(parse_store_url(url))
        assert store.config.timeout == 0.3
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            await store.claim("r1")
        assert time.monotonic() - started < 1.5
        message = str(caught.value)
        assert "claim" in message and "within 0.3 s" in message and ":***@" in message
        assert "hunter2" not in message
        await store.close()

    asyncio.run(main())


def test_the_password_is_in_no_log_message_or_repr(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    good = server.url()
    wrong = good.replace(server.password, "not-the-password-42")
    closed = f"redis://:{server.password}@127.0.0.1:1/0?timeout=0.5"

    async def main() -> list[str]:
        texts: list[str] = []
        store = store_at(good)
        texts += [repr(store), str(store)]
        await one_of_everything(store)
        await store.close()
        for url in (wrong, closed):
            failing = RedisStore(parse_store_url(url))
            with pytest.raises(StoreUnavailable) as caught:
                await failing.get("x")
            texts += [str(caught.value), repr(caught.value), repr(failing)]
            await failing.close()
        return texts

    with caplog.at_level(logging.DEBUG):
        texts = asyncio.run(main())
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    for secret in (server.password, "not-the-password-42"):
        assert not [t for t in texts if secret in t]
    assert any(":***@127.0.0.1" in t for t in texts)


def test_jobs_outlive_a_restart_of_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    binary = redis_server.binary
    folder = tmp_path
    first = RedisServer(binary, folder)
    url = first.url()

    async def admit() -> str:
        store = store_at(url)
        admitted = await store.admit(AdmitRequest("a", "k", b"d", payload=b"p"))
        await store.close()
        assert isinstance(admitted, Created)
        return admitted.record.job_id

    async def find(job_id: str) -> None:
        store = store_at(url)
        record = await store.find("a", "k")
        assert record is not None and record.job_id == job_id
        assert await store.position(job_id) == 1 and await store.payload(job_id) == b"p"
        (claim,) = await store.claim("r1")
        assert claim.record.job_id == job_id
        await store.close()

    try:
        job_id = asyncio.run(admit())
        first.stop()
        second = RedisServer(binary, folder, port=first.port, password=first.password)
        try:
            asyncio.run(find(job_id))
        finally:
            second.stop()
    finally:
        first.stop()


def test_long_ttls_and_leases_are_set_to_the_millisecond(server: RedisServer) -> None:
    """A TTL of weeks and a lease of hours land as set (whole milliseconds, never rounded)."""
    long, lease = 3_600_000, 10_000

    async def main() -> None:
        store = store_at(server.url(), result_ttl=long, lease_seconds=lease)
        try:
            await one_of_everything(store)
        finally:
            await store.close()

    asyncio.run(main())
    ttls: dict[str, int] = {}
    for key, ttl in redis_keys(server).items():  # live jobs' keys have none: the largest
        ttls[key.split(":")[1]] = max(ttl, ttls.get(key.split(":")[1], -1))
    assert long * 1000 - 60_000 < ttls["job"] <= long * 1000
    assert lease * 1000 - 60_000 < ttls["replica"] <= lease * 1000


def redis_keys(server: RedisServer) -> dict[str, int]:
    client = server.client()
    return {k.decode(): int(client.pttl(k)) for k in client.scan_iter(count=1000)}


def test_the_settings_that_lose_or_refuse_jobs_are_named(server: RedisServer) -> None:
    client = server.client()

    async def problems() -> list[str]:
        store = store_at(server.url())
        try:
            return await store.setting_problems()
        finally:
            await store.close()

    assert asyncio.run(problems()) == []  # the fixture runs appendonly yes, noeviction
    client.config_set("appendonly", "no")
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        found = asyncio.run(problems())
    finally:
        client.config_set("appendonly", "yes")
        client.config_set("maxmemory-policy", "noeviction")
    assert found == [
        "appendonly is 'no', the service needs 'yes'",
        "maxmemory-policy is 'allkeys-lru', the service needs 'noeviction'",
    ]


def test_the_fleets_counts_read_their_indexes_and_never_scan_the_keyspace(
    server: RedisServer,
) -> None:
    """Each replica counts the fleet on every reap: a SCAN there walks every key of every job
    (and of anything else in the database) each time. The holders of results come from an
    index that expires with them."""
    client = server.client()
    client.mset({f"unrelated:{i}": b"x" for i in range(2000)})

    def scans() -> int:
        stats = client.info("commandstats")
        return int(stats.get("cmdstat_scan", {}).get("calls", 0))

    async def main() -> None:
        store = store_at(server.url(), result_ttl=2.0)
        try:
            await one_of_everything(store)
            (claim,) = await store.claim("replica-1", 1)  # tenant c's job
            await store.complete(claim.lease, Outcome(JobState.DONE, result=b"s" * 500))
            before = scans()
            counts = await store.counts()
            assert scans() == before
            assert {name: t.result_bytes for name, t in counts.tenants.items()} == {
                "a": 3000,
                "b": 0,  # its job is running
                "c": 500,
            }
            time.sleep(3.2)  # past the results' TTL and their index's second of slack
            counts = await store.counts()
            assert all(t.result_bytes == 0 for t in counts.tenants.values())
        finally:
            await store.close()

    asyncio.run(main())
    assert not [key for key in redis_keys(server) if ":holders" in key or ":held:" in key]


def test_a_full_redis_refuses_new_work_whole_and_keeps_the_work_in_hand(
    server: RedisServer,
) -> None:
    """At `maxmemory` (with the `noeviction` the service asks for) the steps that add work are
    refused before they write anything, as unavailable for now (the caller is told to retry),
    not as a fault; the steps that keep leases and end jobs still run."""
    client = server.client()

    async def main() -> None:
        store = store_at(server.url())
        try:
            for key in ("k1", "k2"):
                assert isinstance(await store.admit(AdmitRequest("a", key, b"d")), Created)
            (held,) = await store.claim("replica-1", 1)
            # A limit far under what the data set uses: whatever else Redis allocates meanwhile.
            client.config_set("maxmemory", str(client.info("memory")["used_memory"] // 2))
            try:
                with pytest.raises(StoreUnavailable, match="maxmemory"):
                    await store.claim("replica-1", 1)
                with pytest.raises(StoreUnavailable, match="refuses it for now"):
                    await store.admit(AdmitRequest("a", "k3", b"d", payload=b"p" * 1000))
                beat = await store.heartbeat("replica-1", [held.lease])
                assert [lease.job_id for lease in beat.renewed] == [held.lease.job_id]
                ended = await store.complete(held.lease, Outcome(JobState.FAILED, reason="x"))
                assert ended.record.state is JobState.FAILED
            finally:
                client.config_set("maxmemory", "0")
            (claim,) = await store.claim("replica-1", 1)  # the refused claim took nothing
            assert (claim.record.key, claim.record.attempt) == ("k2", 1)
            assert await store.find("a", "k3") is None  # the refused admission wrote nothing
        finally:
            await store.close()

    asyncio.run(main())
