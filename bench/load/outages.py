"""Servers that go away under SDK calls: killed and restarted (restart), drained and replaced
behind the SDK's balancing (rollout)."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

from bench.load.calls import sdk_call, start_server
from bench.support.server_process import ServerProcess, free_port
from styletx_client import StyleTransferClient


def home_replica(key: str, addresses: Collection[str]) -> str:
    """The address a request key went to under rendezvous (highest-random-weight) hashing, as
    the SDK routed keys up to 0.1 (the bench's own copy: it picks the replica to drain; the SDK
    now balances round robin, so the phase drains one replica and this count is only what
    key routing would have sent there)."""

    def score(address: str) -> tuple[int, str]:
        digest = hashlib.blake2b(f"{address}\x00{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big"), address

    return max(addresses, key=score)


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
    """Three servers behind the SDK; one drained and restarted under `calls` calls."""
    ports = [free_port() for _ in range(3)]
    args = ("--queue-size", str(calls), "--grace-period", "60")
    servers = [start_server(weights, *args, port=port) for port in ports]
    every: list[ServerProcess] = list(servers)
    results: list[tuple[str, float]] = []
    out: dict[str, Any] = {"calls": calls, "replicas": 3}
    try:
        for server in servers:
            addresses = [server.address for server in servers]
        keys = [f"rollout-{os.getpid()}-{i}" for i in range(calls)]
        homes = Counter(home_replica(key, addresses) for key in keys)
        victim = max(servers, key=lambda server: homes[server.address])
        out["keys_homed_on_the_drained_replica"] = homes[victim.address]
        with StyleTransferClient(",".join(addresses), timeout=limit) as sdk:
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
            replacement = start_server(weights, *args, port=victim.port)
            every.append(replacement)
            out["replaced_after_s"] = round(time.monotonic() - began, 1)
            starter.join(limit)
            for thread in threads:
                thread.join(limit)
        out["outcomes"] = dict(Counter(r[0] for r in results))
        out["failed_calls"] = sum(r[0] != "OK" for r in results) + calls - len(results)
        # A job did work on a replica when a call of its key there reports compute time or
        # evaluations (the creator's line has them, or, when its caller left and came back,
        # the line of the call that attached); each replica process counts once per key.
        computed: Counter[str] = Counter()
        for server in every:
            worked = {
                line["request_key"]
                for line in server.requests()
                if line.get("request_key")
                and (line.get("compute_seconds", 0) > 0 or line.get("evaluations", 0) > 0)
            }
            computed.update(worked)
        out["jobs_computed"] = sum(computed.values())
        out["jobs_computed_twice"] = sum(count > 1 for count in computed.values())
        out["keys_never_computed"] = [key for key in keys if not computed[key]]
        out["re_attached_calls"] = sum(
            1 for server in every for line in server.requests() if line.get("attached")
        )
        out["draining_refusals"] = sum(
            1 for line in victim.requests() if line.get("reason") == "draining"
        )
    finally:
        for server in every:
            server.stop(timeout=120)
    return out
