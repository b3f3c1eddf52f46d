"""The job store on Redis 7 (`--store redis://...`): what a fleet of replicas shares.

Implements `protocol.JobStore` on redis-py's asyncio client. Every step that touches more than
one key (admit, claim, heartbeat, hand back, reap, append, complete, cancel) is one Lua script
(`redis_lua`, which also lays out the keys), so concurrent replicas never see half of one; reads
of one key are plain commands. All keys sit under one hash tag (`{styletx}`, or the URL's
`prefix`), so a Redis Cluster keeps them on one slot. A result goes up in chunks of
`chunk_bytes` (pipelined, each batch bounded in time) to a staging list of the attempt, which
`complete` renames into place only while the attempt still holds the job's fencing token.

Every call is bounded by the store's timeout; a timeout or a connection error becomes
`StoreUnavailable`, naming the operation and the store's URL without its password (nothing
here ever formats the password: `repr()` and `str()` show the redacted URL).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from styletx_server.store import redis_lua
from styletx_server.store.protocol import (
    CANCELLED,
    Admission,
    AdmitRequest,
    Beat,
    Claim,
    Completed,
    Counts,
    Created,
    Event,
    Existing,
    Fenced,
    JobRecord,
    Lease,
    Outcome,
    Reaped,
    Refusal,
    StoreConfig,
    StoreError,
    StoreUnavailable,
    TenantCounts,
    fair_cost,
)
from styletx_server.store.redis_records import lease_of, ms, record_of, text
from styletx_server.store.url import StoreURL

#: Chunks sent per pipelined round trip while uploading a result.
_UPLOAD_BATCH = 4
#: How long an attempt's uploaded chunks wait for its `complete` at least (ms).
_STAGING_MS = 60_000
#: Redis's answers that mean "not now" rather than "never": the store is unavailable.
_REFUSING_FOR_NOW = (
    OutOfMemoryError,
    ReadOnlyError,
    MasterDownError,
    TryAgainError,
    ClusterDownError,
)


class RedisStore:
    """`protocol.JobStore` on Redis; see the module's docstring."""

    def __init__(
        self,
        url: StoreURL,
        config: StoreConfig | None = None,
        *,
        client: aioredis.Redis | None = None,
    ) -> None:
        if url.is_memory:
            raise ValueError("RedisStore needs a redis:// or rediss:// URL")
        self._url = url
        self._config = config or StoreConfig(timeout=url.timeout)
        timeout = self._config.timeout
        self._redis = client or aioredis.Redis(
            host=url.host,
            port=url.port,
            db=url.db,
            username=url.username,
            password=url.password,
            ssl=url.tls,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # A connection Redis dropped (a restart, a failover) is tried again twice, soon:
            # redis-py's default waits seconds between tries, past any sane call timeout.
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 2),
            decode_responses=False,
        )
        self._p = f"{{{url.prefix}}}"
        self._queue = f"{self._p}:queue"
        self._scripts = {
            name: self._redis.register_script(getattr(redis_lua, name))
            for name in redis_lua.__all__
        }

    def __repr__(self) -> str:
        return f"RedisStore({self._url.redacted!r})"

    __str__ = __repr__

    @property
    def config(self) -> StoreConfig:
        return self._config

    @property
    def prefix(self) -> str:
        """The hash tag every key of this store begins with (`{styletx}`)."""
        return self._p

    # -- plumbing -------------------------------------------------------------------------

    @asynccontextmanager
    async def _bounded(self, operation: str) -> AsyncIterator[None]:
        """Bound a step by the timeout; failures to reach the store become StoreUnavailable."""
        timeout = self._config.timeout
        try:
            async with asyncio.timeout(timeout):
                yield
        except (TimeoutError, RedisTimeoutError):
            raise StoreUnavailable(
                f"job store {operation}: no answer from {self._url.redacted} within {timeout:g} s"
            ) from None
        except (RedisConnectionError, OSError) as exc:
            raise StoreUnavailable(
                f"job store {operation}: cannot reach {self._url.redacted}: {exc}"
            ) from None
        except _REFUSING_FOR_NOW as exc:
            # Full (maxmemory with noeviction), failing over or resharding: Redis ran nothing of
            # the step (a script is refused at its first write), and retrying later can work.
            raise StoreUnavailable(
                f"job store {operation}: {self._url.redacted} refuses it for now "
                f"({type(exc).__name__}: {exc})"
            ) from None
        except RedisError as exc:
            raise StoreError(f"job store {operation} at {self._url.redacted}: {exc}") from None

    async def _call(self, operation: str, awaitable: Awaitable[Any]) -> Any:
        async with self._bounded(operation):
            return await awaitable
        raise AssertionError("unreachable")  # pragma: no cover (mypy: the context may swallow)

    async def _run(self, name: str, *args: Any) -> Any:
        script = self._scripts[name]
        return await self._call(name.lower(), script(keys=[self._queue], args=[self._p, *args]))

    # -- filing ---------------------------------------------------------------------------

    async def admit(self, request: AdmitRequest) -> Admission:
        reply = await self._run(
            "ADMIT",
            request.tenant,
            request.key or "",
            request.digest,
            fair_cost(request.weight),
            request.capacity,
            -1 if request.max_queued is None else request.max_queued,
            -1 if request.max_running is None else request.max_running,
            secrets.token_hex(8),
            request.payload,
            "1" if request.count_running else "0",
        )
        kind = text(reply[0])
        if kind == "refused":
            quota, limit, queued, tenant_queued, tenant_running = reply[1:]
            return Refusal(text(quota), limit, queued, tenant_queued, tenant_running)
        record = record_of(reply[1])
        if kind == "existing":
            return Existing(record, record.digest == request.digest)
        return Created(record, int(reply[2]))

    async def get(self, job_id: str) -> JobRecord | None:
        flat = await self._call("get", self._redis.hgetall(f"{self._p}:job:{job_id}"))
        if not flat:
            return None
        return record_of([job_id, *(x for pair in flat.items() for x in pair)])

    async def find(self, tenant: str, key: str) -> JobRecord | None:
        job_id = await self._call("find", self._redis.get(f"{self._p}:key:{tenant}/{key}"))
        return None if job_id is None else await self.get(text(job_id))

    async def position(self, job_id: str) -> int | None:
        rank = await self._call("position", self._redis.zrank(self._queue, job_id))
        return None if rank is None else int(rank) + 1

    async def payload(self, job_id: str) -> bytes | None:
        data = await self._call("payload", self._redis.get(f"{self._p}:payload:{job_id}"))
        return None if data is None else bytes(data)

    # -- leases ---------------------------------------------------------------------------

    async def claim(self, owner: str, k: int = 1) -> list[Claim]:
        reply = await self._run("CLAIM", owner, k, ms(self._config.lease_seconds))
        records = [record_of(flat) for flat in reply]
        return [Claim(record, lease_of(record)) for record in records]

    async def heartbeat(self, owner: str, leases: Sequence[Lease]) -> Beat:
        args: list[Any] = [owner, ms(self._config.lease_seconds)]
        for lease in leases:
            args += [lease.job_id, lease.token]
        reply = await self._run("HEARTBEAT", *args)
        deadline = int(reply[0]) / 1000
        renewed, lost, cancel = [], [], {}
        for lease, (_, state, reason) in zip(leases, reply[1:], strict=True):
            if text(state) != "held" or lease.owner != owner:
                lost.append(lease.job_id)
                continue
            renewed.append(Lease(lease.job_id, owner, lease.token, deadline))
            if reason:
                cancel[lease.job_id] = text(reason)
        return Beat(tuple(renewed), tuple(lost), cancel)

    async def hand_back(self, leases: Sequence[Lease]) -> list[str]:
        args: list[Any] = [ms(self._config.result_ttl), self._idle_ms]
        for lease in leases:
            args += [lease.job_id, lease.token, lease.owner]
        reply = await self._run("HAND_BACK", *args)
        return [text(job_id) for job_id in reply]

    async def reap(self) -> Reaped:
        config = self._config
        requeued, failed, cancelled = await self._run(
            "REAP",
            ms(config.lease_seconds),
            config.max_attempts,
            ms(config.result_ttl),
            self._idle_ms,
        )
        return Reaped(
            tuple(text(i) for i in requeued),
            tuple(text(i) for i in failed),
            tuple(text(i) for i in cancelled),
        )

    @property
    def _idle_ms(self) -> int:
        """How long an idle store remembers its fair clock."""
        return max(1, ms(max(self._config.result_ttl, self._config.lease_seconds)))

    # -- events and outcomes --------------------------------------------------------------

    async def append(self, lease: Lease, kind: str, data: bytes) -> int:
        event_id = await self._run(
            "APPEND", lease.job_id, lease.token, lease.owner, kind, data, self._config.max_events
        )
        if int(event_id) < 0:
            raise Fenced(lease.job_id, lease.token)
        return int(event_id)

    async def events(
        self, job_id: str, after: int = 0, limit: int = 100, wait: float = 0.0
    ) -> list[Event]:
        stream = f"{self._p}:events:{job_id}"
        if wait > 0:
            # XREAD BLOCK answers as soon as an entry past `after` is added (ids are "n-0").
            block = max(1, min(ms(wait), ms(self._config.timeout / 2)))
            found = await self._call(
                "events", self._redis.xread({stream: f"{after}-0"}, count=limit, block=block)
            )
            entries = found[0][1] if found else []
        else:
            entries = await self._call(
                "events", self._redis.xrange(stream, f"{after + 1}-0", "+", count=limit)
            )
        return [
            Event(int(text(entry_id).partition("-")[0]), text(fields[b"k"]), bytes(fields[b"d"]))
            for entry_id, fields in entries
        ]

    async def complete(self, lease: Lease, outcome: Outcome) -> Completed:
        config = self._config
        data = outcome.result
        chunks = 0
        if data is not None and len(data) <= config.tenant_result_bytes:
            chunks = await self._upload(lease, data)
        kind, event = outcome.event or ("", b"")
        reply = await self._run(
            "COMPLETE",
            lease.job_id,
            lease.token,
            lease.owner,
            outcome.state.value,
            outcome.reason,
            outcome.detail,
            "0" if data is None else "1",
            0 if data is None else len(data),
            chunks,
            config.tenant_result_bytes,
            ms(config.result_ttl),
            self._idle_ms,
            "1" if outcome.event is not None else "0",
            kind,
            event,
            config.max_events,
        )
        status = text(reply[0])
        if status == "fenced":
            raise Fenced(lease.job_id, lease.token)
        if status == "incomplete":
            raise StoreUnavailable(
                f"job store complete: the result's upload to {self._url.redacted} was lost"
            )
        return Completed(record_of(reply[1]), tuple(text(i) for i in reply[2]))

    async def _upload(self, lease: Lease, data: bytes) -> int:
        """Put `data` in the attempt's staging list, chunk by chunk; how many chunks."""
        step = self._config.chunk_bytes
        chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        stage = f"{self._p}:staging:{lease.job_id}:{lease.token}"
        ttl = max(_STAGING_MS, 2 * ms(self._config.lease_seconds))
        for first in range(0, len(chunks), _UPLOAD_BATCH):
            pipe = self._redis.pipeline(transaction=False)
            if first == 0:  # an earlier try of this attempt's upload starts over
                pipe.delete(stage)
            for chunk in chunks[first : first + _UPLOAD_BATCH]:
                pipe.rpush(stage, chunk)
            pipe.pexpire(stage, ttl)
            await self._call("upload", pipe.execute())
        return len(chunks)

    async def cancel(self, job_id: str, reason: str = CANCELLED) -> JobRecord | None:
        config = self._config
        reply = await self._run(
            "CANCEL", job_id, reason or CANCELLED, ms(config.result_ttl), self._idle_ms
        )
        return None if reply is None else record_of(reply)

    async def result(self, job_id: str) -> bytes | None:
        """One LRANGE: the chunks as they were at one instant (never half of an eviction)."""
        chunks = await self._call("result", self._redis.lrange(f"{self._p}:result:{job_id}", 0, -1))
        return b"".join(chunks) if chunks else None

    # -- counts ---------------------------------------------------------------------------

    async def counts(self) -> Counts:
        async with self._bounded("counts"):
            fields = await self._redis.hgetall(f"{self._p}:counts")
            seconds, micros = await self._redis.time()
            now = seconds * 1000 + micros // 1000
            # The tenants holding results come from their index, not a SCAN: a SCAN walks the
            # whole keyspace (every job, event and result key) on each reap of each replica.
            holders = [
                text(name)
                for name in await self._redis.zrangebyscore(f"{self._p}:holders", now, "+inf")
            ]
            pipe = self._redis.pipeline(transaction=False)
            for name in holders:
                pipe.zrangebyscore(f"{self._p}:held:{name}", f"({now}", "+inf")
            held: dict[str, int] = {
                name: sum(int(text(m).rpartition("/")[2]) for m in members)
                for name, members in zip(holders, await pipe.execute(), strict=True)
            }
        values = {text(k): int(v) for k, v in fields.items()}
        names = {k[2:] for k in values if k[:2] in ("q:", "r:")} | {t for t, b in held.items() if b}
        tenants = {
            name: TenantCounts(
                values.get(f"q:{name}", 0), values.get(f"r:{name}", 0), held.get(name, 0)
            )
            for name in sorted(names)
        }
        return Counts(values.get("q", 0), values.get("r", 0), tenants)

    async def footprint(self) -> int:
        async with self._bounded("footprint"):
            return len(
                [key async for key in self._redis.scan_iter(match=f"{self._p}:*", count=512)]
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def setting_problems(self) -> list[str]:
        """What in the server's own settings would lose admitted jobs or refuse them at random:
        no append-only file, or an eviction policy other than `noeviction`. Empty when the
        settings are right or cannot be read (a managed Redis may refuse CONFIG GET)."""
        wanted = {"appendonly": "yes", "maxmemory-policy": "noeviction"}
        problems = []
        for name, value in wanted.items():
            try:
                found = await self._call("config", self._redis.config_get(name))
            except (StoreUnavailable, RedisError):
                return []
            setting = text(next(iter(found.values()), b"")) if found else ""
            if setting and setting != value:
                problems.append(f"{name} is {setting!r}, the service needs {value!r}")
        return problems

    async def close(self) -> None:
        await self._redis.aclose()


__all__ = ["RedisStore"]
