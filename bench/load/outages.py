"""Servers that go away under SDK calls: killed and restarted (restart), and a fleet's replica
drained and replaced behind the SDK's balancing (rollout)."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.load.calls import sdk_call, start_server
from bench.support.redis import Redis
from bench.support.server_process import ServerProcess, free_port
from styletx_client import StyleTransferClient
from styletx_server.security.tenants import DEFAULT_NAME
from styletx_server.store.protocol import StoreConfig
from styletx_server.store.redis_store import RedisStore
from styletx_server.store.url import parse_store_url


def phase_restart(weights: Path, calls: int, limit: float) -> dict[str, Any]:
    """SIGKILL and restart on the same port under `calls` SDK calls (default retry policy)."""
    port = free_port()
    args = ("--queue-size", str(2 * calls))
    server = start_server(weights, *args, port=port)
    restarted: ServerProcess | None = None
    results: list[tuple[str, float]] = []
    out: dict[str, Any] = {"calls": calls}
    try:
        with StyleTransferClient(server.address, timeout=limit) as sdk:
            threads = [
                threading.Thread(
                    target=lambda i=i: results.append(
                        sdk_call(sdk, f"restart-{os.getpid()}-{i}", 30, i)
                    ),
                    daemon=True,
                )
                for i in range(calls)
            ]
            for thread in threads:
                thread.start()
            time.sleep(3.0)  # jobs running and queued
            killed = time.monotonic()
            server.stop(signal.SIGKILL)
            restarted = start_server(weights, *args, port=port)
            out["outage_s"] = round(time.monotonic() - killed, 1)
            for thread in threads:
                thread.join(limit)
        out["outcomes"] = dict(Counter(r[0] for r in results))
        out["failed_calls"] = sum(r[0] != "OK" for r in results) + calls - len(results)
        out["slowest_call_s"] = round(max((r[1] for r in results), default=0.0), 1)
    finally:
        server.stop(signal.SIGKILL)
        if restarted is not None:
            restarted.stop(timeout=120)
    return out


def _stagger(threads: list[threading.Thread], interval: float) -> None:
    for thread in threads:
        thread.start()
        time.sleep(interval)


def phase_rollout(weights: Path, calls: int, limit: float) -> dict[str, Any]:
    """A fleet of three (one redis-server) behind the SDK's round robin; one replica drained
    (SIGTERM) and replaced on its port under `calls` keyed calls. How often each key's job ran
    comes from the store (its claims), so work that moved between replicas counts once."""
    ports = [free_port() for _ in range(3)]
    with tempfile.TemporaryDirectory(prefix="rollout-") as folder:
        redis = Redis(Path(folder))
        args = ("--queue-size", str(calls), "--grace-period", "60", "--store", redis.url)
        every: list[ServerProcess] = []
        results: list[tuple[str, float]] = []
        out: dict[str, Any] = {"calls": calls, "replicas": 3, "store": "redis"}
        try:
            servers = [start_server(weights, *args, port=port) for port in ports]
            every.extend(servers)
            victim = servers[0]
            keys = [f"rollout-{os.getpid()}-{i}" for i in range(calls)]
            addresses = ",".join(server.address for server in servers)
            with StyleTransferClient(addresses, timeout=limit) as sdk:
                threads = [
                    threading.Thread(
                        target=lambda i=i: results.append(sdk_call(sdk, keys[i], 20, i)),
                        daemon=True,
                    )
                    for i in range(calls)
                ]
                # Calls arrive over the whole rollout: before the drain, during it and after.
                starter = threading.Thread(target=_stagger, args=(threads, 0.3), daemon=True)
                starter.start()
                time.sleep(2.0)  # every replica busy
                began = time.monotonic()
                out["drained_exit_code"] = victim.stop(signal.SIGTERM, timeout=limit)
                out["drain_s"] = round(time.monotonic() - began, 1)
                every.append(start_server(weights, *args, port=victim.port))
                out["replaced_after_s"] = round(time.monotonic() - began, 1)
                starter.join(limit)
                for thread in threads:
                    thread.join(limit)
            out["outcomes"] = dict(Counter(r[0] for r in results))
            out["failed_calls"] = sum(r[0] != "OK" for r in results) + calls - len(results)
            runs = asyncio.run(_claims(redis.url, keys))
            out["jobs_computed"] = sum(runs.values())
            out["jobs_computed_twice"] = sum(count > 1 for count in runs.values())
            out["keys_never_computed"] = [key for key in keys if not runs[key]]
            out["re_attached_calls"] = sum(
                1 for server in every for line in server.requests() if line.get("attached")
            )
            out["draining_refusals"] = sum(
                1 for line in victim.requests() if line.get("reason") == "draining"
            )
            out["handed_back"] = sum(
                e.get("jobs", 0) for e in victim.events if e.get("event") == "handed_back"
            )
        finally:
            for server in every:
                server.stop(timeout=120)
            redis.stop()
    return out


async def _claims(url: str, keys: list[str]) -> dict[str, int]:
    """How many times the fleet started each key's job (its store record's claims)."""
    store = RedisStore(parse_store_url(url), StoreConfig())
    try:
        records = [await store.find(DEFAULT_NAME, key) for key in keys]
    finally:
        await store.close()
    return {
        key: 0 if record is None else record.attempt
        for key, record in zip(keys, records, strict=True)
    }
