"""Hostile clients, each phase on a server of its own: readers that never read (zero-window),
weights that overflow (overflow)."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from bench.load.calls import (
    STALL_SECONDS,
    STYLE,
    in_threads,
    percentile,
    reason_of,
    sdk_call,
    small_request,
    start_server,
    violations_of,
    wait_for,
)
from bench.support.server_process import free_port
from bench.support.zero_window import ZeroWindowClient
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_client import StyleTransferClient


def phase_zero_window(weights: Path, readers: int, limit: float) -> dict[str, Any]:
    """Readers that never read, from `readers` addresses, then from one address."""
    metrics_port = free_port()
    server = start_server(
        weights,
        "--max-calls", str(readers), "--queue-size", str(2 * readers),
        "--stall-timeout", str(STALL_SECONDS),
        metrics_port=metrics_port,
    )  # fmt: skip
    out: dict[str, Any] = {"readers": readers, "max_calls": readers, "stall_timeout": STALL_SECONDS}
    clients: list[ZeroWindowClient] = []
    try:
        in_flight = lambda: server.metric("styletx_calls_in_flight")  # noqa: E731
        stalled = lambda: server.metric("styletx_calls_stalled")  # noqa: E731
        # 1. One stream each from `readers` loopback addresses: `readers` peers, so no share
        # applies; only the stall timeout frees their slots.
        began = time.monotonic()
        for i in range(readers):
            client = ZeroWindowClient(server.port, source=f"127.0.1.{i + 1}")
            client.open_calls(small_request(evaluations=20, seed=i))
            clients.append(client)
        out["all_slots_held_s"] = wait_for(lambda: in_flight() >= readers, limit)
        with StyleTransferClient(server.address, timeout=limit) as sdk:
            # A caller arriving while every slot is pinned: the SDK retries TOO_MANY_CALLS.
            during: list[tuple[str, float]] = []
            caller = threading.Thread(
                target=lambda: during.append(sdk_call(sdk, f"zw-during-{os.getpid()}", 10, 1))
            )
            caller.start()
            freed = wait_for(lambda: in_flight() <= 1 and stalled() >= readers, limit)
            out["slots_freed_after_s"] = None if freed is None else time.monotonic() - began
            caller.join(limit)
            out["caller_while_pinned"] = {
                "outcome": during[0][0] if during else "HUNG",
                "seconds": round(during[0][1], 2) if during else None,
            }
            # Callers arriving after the stall timeout, the readers still connected (as many
            # as one address may hold: they all come from 127.0.0.1).
            results: list[tuple[str, float]] = []
            in_threads(
                max(1, min(4, readers // 4)),
                lambda i: results.append(sdk_call(sdk, f"zw-after-{os.getpid()}-{i}", 10, i)),
                limit,
            )
        out["callers_after"] = dict(Counter(r[0] for r in results))
        out["callers_after_p95_s"] = round(percentile([r[1] for r in results], 0.95), 2)
        out["stalled_requests"] = server.metric(
            "styletx_requests_total", code="CANCELLED", reason="stalled"
        )
        for client in clients:
            client.close()
        clients.clear()
        out["stalled_released_after_close_s"] = wait_for(lambda: stalled() == 0, 30)
        # 2. The same number of streams from one address: its share (--max-peer-share 0.25).
        hostile = ZeroWindowClient(server.port, source="127.0.2.1")
        clients.append(hostile)
        streams = hostile.open_calls(small_request(evaluations=20), readers)
        wait_for(lambda: sum(hostile.status(sid) is not None for sid in streams) > 0, 10)
        time.sleep(0.5)
        refused = sum(hostile.status(sid) == "8" for sid in streams)
        out["one_address"] = {"streams": readers, "refused_at_once": refused}
        with StyleTransferClient(server.address, timeout=limit) as sdk:
            beside = sdk_call(sdk, f"zw-beside-{os.getpid()}", 10, 2)
        out["one_address"]["caller_beside"] = {"outcome": beside[0], "seconds": round(beside[1], 2)}
        out["internal"] = server.metric("styletx_requests_total", code="INTERNAL")
    finally:
        for client in clients:
            client.close()
        server.stop(timeout=120)
    return out


OVERFLOW_CASES: dict[str, tuple[dict[str, Any], list[float] | None]] = {
    "blend weights 1e308, 1e308": ({}, [1e308, 1e308]),
    "blend weights 1.8e308, 5e-324": ({}, [1.7976931348623157e308, 5e-324]),
    "content_weight 1e308": ({"content_weight": 1e308}, None),
    "style_weight 1e308": ({"style_weight": 1e308}, None),
    "tv_weight 1e308": ({"tv_weight": 1e308}, None),
    "tv_power 1e308": ({"tv_power": 1e308}, None),
    "tv_power -1": ({"tv_power": -1.0}, None),
    "every weight at its largest (1e12, tv_power 4)": (
        {"content_weight": 1e12, "style_weight": 1e12, "tv_weight": 1e12, "tv_power": 4.0},
        None,
    ),
}


def phase_overflow(weights: Path, limit: float) -> dict[str, Any]:
    server = start_server(weights)
    cases: dict[str, str] = {}
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.StyleTransferServiceStub(channel)
            for name, (options, blend) in OVERFLOW_CASES.items():
                request = small_request(evaluations=4)
                for field_name, value in options.items():
                    setattr(request.options, field_name, value)
                if blend is not None:
                    request.ClearField("style_images")
                    for weight in blend:
                        request.style_images.add(image=STYLE.read_bytes(), weight=weight)
                try:
                    events = list(stub.Stylize(request, timeout=limit))
                    losses = events[-1].result.losses
                    finite = all(
                        math.isfinite(v)
                        for v in (losses.total, losses.content, losses.style, losses.tv)
                    )
                    cases[name] = f"OK, losses {'finite' if finite else 'NOT FINITE'}"
                except grpc.RpcError as exc:
                    fields = ", ".join(violations_of(exc))
                    cases[name] = f"{exc.code().name} {reason_of(exc)} [{fields}]"
    finally:
        server.stop(timeout=120)
    return {
        "cases": cases,
        "internal": sum(v.startswith("INTERNAL") for v in cases.values()),
        "ok_with_inf": sum("NOT FINITE" in v for v in cases.values()),
    }
