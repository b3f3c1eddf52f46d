"""Load and fault report: real server subprocesses (real weights, small jobs) on loopback.

Bounded: a fixed number of requests per phase and an overall time limit. Phases:

1. burst      - far more concurrent calls than queue slots; health checked every 20 ms meanwhile;
2. slow       - keyed streams that stop reading (a tiny flow-control window) for longer than the
                stall timeout, then a normal call; each slow caller then re-attaches by its key;
3. reattach   - keyed calls dropped at a random point and re-attached with the same key;
4. uploads    - 10 concurrent 30-megapixel PNG uploads while the queue is full;
5. sigterm    - SIGTERM with one job running and others queued.

Hostile and unlucky clients (each on a server of its own; `--phases` picks them, `--scale`
shrinks them):

6. zero-window - 64 raw HTTP/2 streams from 64 loopback addresses that advertise a zero receive
                 window and post a valid request, then calls through the SDK: slots freed within
                 the stall timeout, other callers served; 64 more from one address: its share;
7. overflow    - the overflowing weights of the issue (1e308 blends and weights, tv_power), each
                 INVALID_ARGUMENT naming its field or OK with finite losses; never INTERNAL;
8. restart     - a server killed (SIGKILL) and restarted on its port under 8 SDK calls with the
                 default retry policy: failed calls (goal 0), the outage ridden out;
9. largest     - RSS idle, at the peak of and after one largest-allowed job (1024 px content and
                 style), then after small jobs: what the deploy manifests must hold;
10. rollout    - three servers behind the SDK's key routing, one drained (SIGTERM) and restarted
                 on its port while 30 calls run: failed calls and jobs computed twice (from the
                 servers' request logs), goal 0 and 0.
11. cancel     - a long keyed job running, a short one queued behind it on the one worker:
                 CancelJob's latency, and the time from CancelJob to the queued job's start (the
                 worker free) against one evaluation's time; the cancelled stream's status.
12. tenants    - two tenants of a tokens file on one worker: A floods (50 jobs), then B sends one;
                 B's queue wait next to the one-job bound (the longest of A's jobs), and the wait
                 of A's last job (what B would have waited first-come first-served).

Prints requests, outcomes by code and reason, p50/p95 latency and queue wait, health-check
latency p99 during the burst and the uploads, and the server's peak RSS (VmHWM) against the
configured budget. Goals on a 2-core CPU: 0 hung calls, 0 admitted jobs lost, health p99 < 100 ms,
peak RSS <= idle RSS + decoded in-flight budget (3 B/px) + 1 GiB.

Usage: python bench/load_report.py [--weights PATH] [--burst 40] [--time-limit 600] [--json F]
       [--phases burst,slow,...] [--scale 0.25]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_status import rpc_status  # noqa: E402
from PIL import Image  # noqa: E402

from styletx.weights import resolve_weights  # noqa: E402
from styletx_api.v1 import style_transfer_pb2 as pb  # noqa: E402
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc  # noqa: E402
from styletx_client import ServiceError, StyleTransferClient  # noqa: E402
from styletx_client._routing import rendezvous_rank  # noqa: E402
from tests.support.server_process import ServerProcess, free_port, start_serving  # noqa: E402
from tests.support.zero_window import ZeroWindowClient  # noqa: E402

CONTENT = ROOT / "examples" / "content_chelsea.png"
STYLE = ROOT / "examples" / "style_starry_night.jpg"
START_TIMEOUT = 300.0
GIB = 1024**3
QUEUE = 4
INFLIGHT_PIXELS = 128_000_000
UPLOAD_PIXELS = 30_000_000
#: The servers' --stall-timeout (their default).
STALL_SECONDS = 5.0


@dataclass
class Outcome:
    """One call as its client saw it."""

    phase: str
    code: str
    reason: str = ""
    seconds: float = 0.0
    queue_seconds: float | None = None
    admitted: bool = False  # got a `queued` event
    hung: bool = False  # still open when its phase's deadline passed


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    health_burst: list[float] = field(default_factory=list)
    health_uploads: list[float] = field(default_factory=list)
    idle_rss: int = 0
    peak_rss: int = 0
    lost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def reason_of(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def start_server(weights: Path, *args: str, port: int = 0, metrics_port: int = 0) -> ServerProcess:
    """`python -m styletx_server` on 127.0.0.1 (`port` 0: any), CPU only, with the report's
    queue and budgets, once SERVING; `metrics_port` 0: no /metrics."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    flags = [
        "--address", f"127.0.0.1:{port}",
        "--metrics-port", str(metrics_port), "--weights", str(weights), "--workers", "1",
        "--queue-size", str(QUEUE), "--max-inflight-pixels", str(INFLIGHT_PIXELS),
        "--max-message-bytes", str(64 * 1024 * 1024), "--grace-period", "20", *args,
    ]  # fmt: skip
    return start_serving(flags, timeout=START_TIMEOUT, env=env, metrics_port=metrics_port)


def health_latency(channel: grpc.Channel) -> float:
    stub = health_pb2_grpc.HealthStub(channel)
    started = time.perf_counter()
    stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return time.perf_counter() - started


class HealthProbe:
    """Checks health every 20 ms on its own channel and keeps the latencies."""

    def __init__(self, port: int, into: list[float]) -> None:
        self._into = into
        self._stop = threading.Event()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self._into.append(health_latency(self._channel))
            except grpc.RpcError:
                self._into.append(10.0)  # a failed probe counts as the timeout

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self._channel.close()


def small_request(evaluations: int = 10, key: str = "", seed: int = 0) -> pb.StylizeRequest:
    return pb.StylizeRequest(
        content_image=CONTENT.read_bytes(),
        style_images=[pb.StyleImage(image=STYLE.read_bytes())],
        options=pb.StyleOptions(size=64, max_evaluations=evaluations, seed=seed),
        request_key=key,
    )


def big_png(pixels: int) -> bytes:
    """A smooth (so small on the wire) PNG of about `pixels` pixels: decoding costs them all."""
    width = 6000
    height = pixels // width
    row = np.linspace(0, 255, width, dtype=np.uint8)
    data = np.broadcast_to(row[None, :, None], (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(data)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def run_call(
    stub: pb_grpc.StyleTransferServiceStub,
    request: pb.StylizeRequest,
    phase: str,
    report: Report,
    timeout: float,
    stop_after: int | None = None,
) -> Outcome:
    """One call, read to its end (or cancelled after `stop_after` events)."""
    outcome = Outcome(phase=phase, code="OK")
    started = time.perf_counter()
    call = stub.Stylize(request, timeout=timeout)
    try:
        for count, event in enumerate(call, start=1):
            if event.HasField("queued"):
                outcome.admitted = True
            if event.HasField("result"):
                outcome.queue_seconds = event.result.queue_time.ToTimedelta().total_seconds()
            if stop_after is not None and count >= stop_after:
                call.cancel()
                outcome.code = "CANCELLED_BY_TEST"
                break
    except grpc.RpcError as exc:
        outcome.code = exc.code().name
        outcome.reason = reason_of(exc)
        outcome.hung = exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    outcome.seconds = time.perf_counter() - started
    report.add(outcome)
    return outcome


def in_threads(count: int, target: Callable[[int], Any], limit: float) -> int:
    """Run target(i) for i < count concurrently; returns how many were still running at `limit`."""
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + limit
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sum(t.is_alive() for t in threads)


def phase_burst(stub: Any, port: int, report: Report, calls: int, limit: float) -> None:
    with HealthProbe(port, report.health_burst):
        hung = in_threads(
            calls, lambda i: run_call(stub, small_request(seed=i), "burst", report, limit), limit
        )
    if hung:
        report.notes.append(f"burst: {hung} calls still open at the limit")


def phase_slow_readers(port: int, stub: Any, report: Report, streams: int, limit: float) -> None:
    stalled = grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
    )
    slow_stub = pb_grpc.StyleTransferServiceStub(stalled)
    requests = []
    for i in range(streams):
        heavy = small_request(evaluations=20, key=f"slow-{os.getpid()}-{i}", seed=50 + i)
        heavy.preview_every = 1
        requests.append(heavy)
    unread = [slow_stub.Stylize(r, timeout=limit) for r in requests]
    time.sleep(1.0)
    # While nobody reads those streams, a normal call must still go through.
    run_call(stub, small_request(seed=99), "slow", report, limit)
    time.sleep(STALL_SECONDS + 1.0)  # longer than the stall timeout: their calls are ended
    for call, request in zip(unread, requests, strict=True):
        # Read them now: each either still ends with its result, or was ended for stalling
        # (CANCELLED, STALLED) and gets it by re-attaching with its key, as the SDK would.
        outcome = Outcome(phase="slow", code="OK", admitted=True)
        try:
            events = list(call)
            if not events or not events[-1].HasField("result"):
                outcome.code = "NO_RESULT"
        except grpc.RpcError as exc:
            outcome.code, outcome.reason = exc.code().name, reason_of(exc)
            if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                outcome.admitted = False  # refused at the door (queue full): not admitted
        if outcome.reason == "STALLED":
            report.notes.append("slow: a stalled stream re-attached by its key")
            again = run_call(stub, request, "slow-reattach", report, limit)
            outcome.code = "STALLED_REATTACHED" if again.code == "OK" else "STALLED_LOST"
        report.add(outcome)
    stalled.close()


def phase_reattach(stub: Any, report: Report, calls: int, limit: float, rng: random.Random) -> None:
    def one(i: int) -> None:
        key = f"load-{os.getpid()}-{i}"
        request = small_request(evaluations=15, key=key, seed=100 + i)
        run_call(stub, request, "reattach-drop", report, limit, stop_after=rng.randint(1, 8))
        for _ in range(20):  # re-attach; the queue may be full for a moment
            outcome = run_call(stub, request, "reattach", report, limit)
            if outcome.reason not in ("QUEUE_FULL", "OVER_BUDGET"):
                return
            time.sleep(0.5)

    in_threads(calls, one, limit)


def phase_uploads(stub: Any, port: int, report: Report, uploads: int, limit: float) -> None:
    # Fill the worker and the queue with long jobs, then upload big images concurrently.
    positions: list[int] = []

    def fill(i: int) -> None:
        request = small_request(evaluations=120, seed=200 + i)
        for _ in range(40):  # earlier phases' jobs may still hold slots for a moment
            outcome = Outcome(phase="fill", code="OK")
            started = time.perf_counter()
            try:
                for event in stub.Stylize(request, timeout=limit):
                    if event.HasField("queued"):
                        outcome.admitted = True
                        positions.append(event.queued.position)
            except grpc.RpcError as exc:
                outcome.code, outcome.reason = exc.code().name, reason_of(exc)
            outcome.seconds = time.perf_counter() - started
            if outcome.admitted or outcome.code == "OK":
                report.add(outcome)
                return
            time.sleep(0.5)

    fillers = [threading.Thread(target=fill, args=(i,), daemon=True) for i in range(QUEUE + 1)]
    for thread in fillers:
        thread.start()
        time.sleep(0.2)
    deadline = time.monotonic() + 60
    while QUEUE not in positions and time.monotonic() < deadline:
        time.sleep(0.1)
    report.notes.append(f"uploads: queue full when they started: {QUEUE in positions}")
    data = big_png(UPLOAD_PIXELS)
    report.notes.append(f"uploads: {len(data) / 1e6:.1f} MB PNG of {UPLOAD_PIXELS / 1e6:.0f} Mpx")
    request = pb.StylizeRequest(
        content_image=data,
        style_images=[pb.StyleImage(image=STYLE.read_bytes())],
        options=pb.StyleOptions(size=64, max_evaluations=5, seed=1),
    )
    with HealthProbe(port, report.health_uploads):
        in_threads(uploads, lambda _i: run_call(stub, request, "upload", report, limit), limit)
    for thread in fillers:
        thread.join(limit)


def phase_sigterm(server: ServerProcess, stub: Any, report: Report, limit: float) -> int:
    results: list[Outcome] = []

    def call(i: int) -> None:
        evaluations = 40 if i == 0 else 400
        results.append(
            run_call(
                stub, small_request(evaluations=evaluations, seed=300 + i), "sigterm", report, limit
            )
        )

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(3)]
    threads[0].start()
    time.sleep(2.0)
    for thread in threads[1:]:
        thread.start()
    time.sleep(1.0)
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(limit)
    return server.wait(60)


# --- hostile and unlucky clients, each on a server of its own ----------------------------------


def _sdk_call(
    client: StyleTransferClient, key: str, evaluations: int, seed: int, size: int = 64
) -> tuple[str, float]:
    """One SDK stylize call: ("OK" or the error's class and reason, seconds)."""
    started = time.perf_counter()
    try:
        client.stylize(
            CONTENT.read_bytes(),
            STYLE.read_bytes(),
            request_key=key,
            size=size,
            max_evaluations=evaluations,
            seed=seed,
        )
        outcome = "OK"
    except ServiceError as exc:
        outcome = f"{type(exc).__name__}/{exc.reason or '-'}"
    return outcome, time.perf_counter() - started


def _wait_for(condition: Callable[[], bool], limit: float, step: float = 0.05) -> float | None:
    """Seconds until `condition()` held, or None if it did not within `limit`."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    return None


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
        out["all_slots_held_s"] = _wait_for(lambda: in_flight() >= readers, limit)
        with StyleTransferClient(server.address, timeout=limit) as sdk:
            # A caller arriving while every slot is pinned: the SDK retries TOO_MANY_CALLS.
            during: list[tuple[str, float]] = []
            caller = threading.Thread(
                target=lambda: during.append(_sdk_call(sdk, f"zw-during-{os.getpid()}", 10, 1))
            )
            caller.start()
            freed = _wait_for(lambda: in_flight() <= 1 and stalled() >= readers, limit)
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
                lambda i: results.append(_sdk_call(sdk, f"zw-after-{os.getpid()}-{i}", 10, i)),
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
        out["stalled_released_after_close_s"] = _wait_for(lambda: stalled() == 0, 30)
        # 2. The same number of streams from one address: its share (--max-peer-share 0.25).
        hostile = ZeroWindowClient(server.port, source="127.0.2.1")
        clients.append(hostile)
        streams = hostile.open_calls(small_request(evaluations=20), readers)
        _wait_for(lambda: sum(hostile.status(sid) is not None for sid in streams) > 0, 10)
        time.sleep(0.5)
        refused = sum(hostile.status(sid) == "8" for sid in streams)
        out["one_address"] = {"streams": readers, "refused_at_once": refused}
        with StyleTransferClient(server.address, timeout=limit) as sdk:
            beside = _sdk_call(sdk, f"zw-beside-{os.getpid()}", 10, 2)
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


def violations_of(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: list[str] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [v.field for v in bad.field_violations]
    return found


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
                        _sdk_call(sdk, f"restart-{os.getpid()}-{i}", 30, i)
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


def _square_png(path: Path, side: int) -> bytes:
    picture = Image.open(path).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def phase_largest(weights: Path, limit: float, evaluations: int) -> dict[str, Any]:
    """RSS idle, at the peak of and after one largest-allowed job, and after small jobs."""
    server = start_server(weights)
    side = 1024  # the server's default --max-size and --max-style-size
    out: dict[str, Any] = {"job": f"{side}x{side} content and style, size {side}"}
    try:
        with grpc.insecure_channel(
            server.address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        ) as channel:
            stub = pb_grpc.StyleTransferServiceStub(channel)
            report = Report()
            run_call(stub, small_request(), "largest", report, limit)
            out["idle_rss_gib"] = round(server.rss() / GIB, 3)
            request = pb.StylizeRequest(
                content_image=_square_png(CONTENT, side),
                style_images=[pb.StyleImage(image=_square_png(STYLE, side))],
                options=pb.StyleOptions(size=side, max_evaluations=evaluations, seed=0),
            )
            began = time.perf_counter()
            big = run_call(stub, request, "largest", report, limit)
            out["job"] += (
                f", {evaluations} evaluations: {big.code} in {time.perf_counter() - began:.0f} s"
            )
            out["peak_rss_gib"] = round(server.peak_rss() / GIB, 3)
            out["rss_after_gib"] = round(server.rss() / GIB, 3)
            for i in range(5):
                run_call(stub, small_request(seed=i), "largest", report, limit)
            out["rss_after_5_small_jobs_gib"] = round(server.rss() / GIB, 3)
    finally:
        server.stop(timeout=120)
    return out


def _stagger(threads: list[threading.Thread], interval: float) -> None:
    for thread in threads:
        thread.start()
        time.sleep(interval)


def phase_rollout(weights: Path, calls: int, limit: float) -> dict[str, Any]:
    """Three servers behind key routing; the busiest drained and restarted under `calls` calls."""
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
        homes = Counter(rendezvous_rank(key, addresses)[0] for key in keys)
        victim = max(servers, key=lambda server: homes[server.address])
        out["keys_homed_on_the_drained_replica"] = homes[victim.address]
        with StyleTransferClient(",".join(addresses), timeout=limit) as sdk:
            threads = [
                threading.Thread(
                    target=lambda i=i: results.append(_sdk_call(sdk, keys[i], 20, i)),
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


def _first_event(call: Any, kind: str, into: dict[str, Any]) -> None:
    """Read a stream; note when its first `kind` event came, its evaluation pace and its end."""
    try:
        for event in call:
            if event.HasField(kind) and kind not in into:
                into[kind] = time.perf_counter()
            if event.HasField("progress") and event.progress.evaluations:
                elapsed = event.progress.elapsed.ToTimedelta().total_seconds()
                into["evaluation_s"] = elapsed / event.progress.evaluations
        into["code"] = "OK"
    except grpc.RpcError as exc:
        into["code"] = f"{exc.code().name}/{reason_of(exc)}"


def phase_cancel(weights: Path, rounds: int, limit: float) -> dict[str, Any]:
    """CancelJob on a running job with another queued behind it on the server's one worker: how
    long CancelJob takes, and how long until the worker starts the queued job."""
    server = start_server(weights)
    cancel_s: list[float] = []
    free_s: list[float] = []
    evaluation_s: list[float] = []
    codes: Counter[str] = Counter()
    try:
        with (
            grpc.insecure_channel(server.address) as channel,
            StyleTransferClient(server.address, timeout=limit) as client,
        ):
            stub = pb_grpc.StyleTransferServiceStub(channel)
            for round_ in range(rounds):
                long_job = small_request(evaluations=1000, key=f"cancel-{round_}", seed=round_)
                long_job.options.size = 256
                victim: dict[str, Any] = {}
                queued: dict[str, Any] = {}
                # Each call starts when its Stylize is made: the short one only once the long
                # one runs, so that it queues behind it.
                readers = [
                    threading.Thread(
                        target=_first_event,
                        args=(stub.Stylize(long_job, timeout=limit), "progress", victim),
                    )
                ]
                readers[0].start()
                if _wait_for(lambda seen=victim: "evaluation_s" in seen, limit) is None:
                    break
                short = stub.Stylize(small_request(2, seed=round_), timeout=limit)
                readers.append(
                    threading.Thread(target=_first_event, args=(short, "started", queued))
                )
                readers[1].start()
                time.sleep(0.5)  # the short job is queued behind the long one
                began = time.perf_counter()
                state = client.cancel_job(long_job.request_key)
                cancel_s.append(time.perf_counter() - began)
                for reader in readers:
                    reader.join(limit)
                if "started" in queued:
                    free_s.append(queued["started"] - began)
                evaluation_s.append(victim["evaluation_s"])
                codes[f"cancel_job={state}, stream={victim.get('code')}"] += 1
    finally:
        server.stop()
    return {
        "rounds": len(cancel_s),
        "cancel_job_p50_s": round(percentile(cancel_s, 0.5), 4),
        "cancel_job_max_s": round(max(cancel_s, default=0.0), 4),
        "worker_free_p50_s": round(percentile(free_s, 0.5), 4),
        "worker_free_max_s": round(max(free_s, default=0.0), 4),
        "evaluation_mean_s": round(sum(evaluation_s) / max(1, len(evaluation_s)), 4),
        "outcomes": dict(codes),
    }


def _queue_wait(call: Any, into: dict[str, float]) -> None:
    """Read a stream to its end; note its queue wait and compute time (from the result)."""
    try:
        for event in call:
            if event.HasField("result"):
                into["queue_s"] = event.result.queue_time.ToTimedelta().total_seconds()
                into["compute_s"] = event.result.compute_time.ToTimedelta().total_seconds()
    except grpc.RpcError as exc:
        into["error"] = float(exc.code().value[0])


def phase_tenants(weights: Path, flood: int, evaluations: int, limit: float) -> dict[str, Any]:
    """Tenant A queues `flood` jobs on the one worker, then tenant B sends one: B's queue wait
    against the bound (one of A's jobs: the one running when B's arrived)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="styletx-tenants-"))
    tokens = folder / "tokens.toml"
    tokens.write_text('[tenants.a]\ntokens = ["token-a"]\n\n[tenants.b]\ntokens = ["token-b"]\n')
    server = start_server(
        weights,
        "--auth-tokens-file", str(tokens), "--queue-size", str(flood + 4),
        "--max-calls", str(flood + 8), "--max-peer-share", "1",
    )  # fmt: skip
    a_jobs: list[dict[str, float]] = [{} for _ in range(flood)]
    b_job: dict[str, float] = {}
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.StyleTransferServiceStub(channel)
            a_key = (("authorization", "Bearer token-a"),)
            warm: dict[str, float] = {}
            _queue_wait(
                stub.Stylize(small_request(evaluations), timeout=limit, metadata=a_key), warm
            )
            calls = [
                stub.Stylize(small_request(evaluations, seed=i), timeout=limit, metadata=a_key)
                for i in range(flood)
            ]
            readers = [
                threading.Thread(target=_queue_wait, args=(call, job))
                for call, job in zip(calls, a_jobs, strict=True)
            ]
            for reader in readers:
                reader.start()
            time.sleep(2.0)  # A's jobs are all queued (decoded) behind the one running
            b_key = (("authorization", "Bearer token-b"),)
            b_call = stub.Stylize(
                small_request(evaluations, seed=99), timeout=limit, metadata=b_key
            )
            _queue_wait(b_call, b_job)
            for reader in readers:
                reader.join(limit)
    finally:
        server.stop()
    computes = [job["compute_s"] for job in a_jobs if "compute_s" in job]
    waits = [job["queue_s"] for job in a_jobs if "queue_s" in job]
    return {
        "flood_jobs": flood,
        "evaluations_per_job": evaluations,
        "a_completed": len(computes),
        "b_queue_wait_s": round(b_job.get("queue_s", float("nan")), 4),
        "one_job_bound_s": round(max(computes, default=float("nan")), 4),
        "a_job_compute_p50_s": round(percentile(computes, 0.5), 4),
        "a_last_queue_wait_s": round(max(waits, default=float("nan")), 4),
        "b_within_bound": b_job.get("queue_s", math.inf) <= max(computes, default=0.0),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def lost_jobs(report: Report) -> list[str]:
    """Admitted calls that ended without a result and without a clear drain/retry status."""
    lost = []
    for o in report.outcomes:
        if not o.admitted or o.code in ("OK", "CANCELLED_BY_TEST", "STALLED_REATTACHED"):
            continue
        if o.phase == "sigterm" and o.reason in ("DRAINING", "SHUTDOWN"):
            continue  # told at once to retry elsewhere: not lost
        lost.append(f"{o.phase}:{o.code}:{o.reason}")
    return lost


PHASES = (
    "burst", "slow", "reattach", "uploads", "sigterm",
    "zero-window", "overflow", "restart", "largest", "rollout", "cancel", "tenants",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--burst", type=int, default=40, help="concurrent calls in the burst")
    parser.add_argument("--slow", type=int, default=6, help="streams that never read")
    parser.add_argument("--reattach", type=int, default=6, help="keyed calls dropped mid-way")
    parser.add_argument("--uploads", type=int, default=10, help="concurrent 30 Mpx uploads")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per phase")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the issue-17 phases' counts (64 readers, 8 restart calls, 30 rollout "
        "calls) by this, for a quick run",
    )
    parser.add_argument(
        "--largest-evaluations", type=int, default=2, help="evaluations of the largest job"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    chosen = [name.strip() for name in args.phases.split(",") if name.strip()]
    unknown = set(chosen) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    weights = Path(resolve_weights(args.weights).path)
    report = Report()
    rng = random.Random(0)
    limit = args.time_limit
    summary: dict[str, Any] = {}
    classic = [name for name in chosen if name in PHASES[:5]]
    if classic:
        summary = run_classic(weights, report, rng, classic, args)
    scale = args.scale
    extra: dict[str, Callable[[], dict[str, Any]]] = {
        "zero-window": lambda: phase_zero_window(weights, max(4, round(64 * scale)), limit),
        "overflow": lambda: phase_overflow(weights, limit),
        "restart": lambda: phase_restart(weights, max(2, round(8 * scale)), limit),
        "largest": lambda: phase_largest(weights, limit, args.largest_evaluations),
        "rollout": lambda: phase_rollout(weights, max(3, round(30 * scale)), limit),
        "cancel": lambda: phase_cancel(weights, max(2, round(5 * scale)), limit),
        "tenants": lambda: phase_tenants(weights, max(4, round(50 * scale)), 10, limit),
    }
    for name in chosen:
        if name in extra:
            began = time.monotonic()
            summary[name] = extra[name]()
            summary[name]["phase_seconds"] = round(time.monotonic() - began, 1)
            print(f"phase {name}: {time.monotonic() - began:.1f} s", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        outcomes = {"outcomes": [asdict(o) for o in report.outcomes]} if classic else {}
        args.json.write_text(json.dumps({**summary, **outcomes}, indent=2))


def run_classic(
    weights: Path, report: Report, rng: random.Random, chosen: list[str], args: Any
) -> dict[str, Any]:
    """Phases 1-5 on one server, in order; the last (SIGTERM) ends it."""
    server = start_server(weights)
    exit_code = None
    try:
        with grpc.insecure_channel(
            f"127.0.0.1:{server.port}",
            options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
        ) as channel:
            stub = pb_grpc.StyleTransferServiceStub(channel)
            run_call(stub, small_request(), "warm", report, args.time_limit)
            report.idle_rss = server.rss()
            port, limit = server.port, args.time_limit
            phases: list[tuple[str, Callable[[], None]]] = [
                ("burst", lambda: phase_burst(stub, port, report, args.burst, limit)),
                ("slow", lambda: phase_slow_readers(port, stub, report, args.slow, limit)),
                ("reattach", lambda: phase_reattach(stub, report, args.reattach, limit, rng)),
                ("uploads", lambda: phase_uploads(stub, port, report, args.uploads, limit)),
            ]
            for name, phase in phases:
                if name not in chosen:
                    continue
                began = time.monotonic()
                phase()
                print(f"phase {name}: {time.monotonic() - began:.1f} s", file=sys.stderr)
            report.peak_rss = server.peak_rss()
            if "sigterm" in chosen:
                exit_code = phase_sigterm(server, stub, report, args.time_limit)
    finally:
        server.kill()
    report.lost = lost_jobs(report)
    return summarize(report, exit_code)


def refusal_p95(outcomes: list[Outcome]) -> dict[str, float]:
    """95th percentile of the time to a RESOURCE_EXHAUSTED refusal, per phase."""
    by_phase: dict[str, list[float]] = {}
    for o in outcomes:
        if o.code == "RESOURCE_EXHAUSTED":
            by_phase.setdefault(o.phase, []).append(o.seconds)
    return {phase: round(percentile(times, 0.95), 4) for phase, times in by_phase.items()}


def summarize(report: Report, exit_code: int | None) -> dict[str, Any]:
    outcomes = report.outcomes
    ok = [o for o in outcomes if o.code == "OK"]
    budget = report.idle_rss + INFLIGHT_PIXELS * 3 + GIB
    return {
        "requests": len(outcomes),
        "outcomes": dict(Counter(f"{o.code}/{o.reason or '-'}" for o in outcomes)),
        "by_phase": {
            phase: dict(Counter(o.code for o in outcomes if o.phase == phase))
            for phase in dict.fromkeys(o.phase for o in outcomes)
        },
        "latency_p50_s": round(percentile([o.seconds for o in ok], 0.5), 3),
        "latency_p95_s": round(percentile([o.seconds for o in ok], 0.95), 3),
        "queue_wait_p50_s": round(percentile([o.queue_seconds or 0 for o in ok], 0.5), 3),
        "queue_wait_p95_s": round(percentile([o.queue_seconds or 0 for o in ok], 0.95), 3),
        "refusal_p95_s_by_phase": refusal_p95(outcomes),
        "health_p99_burst_ms": round(1000 * percentile(report.health_burst, 0.99), 1),
        "health_p99_uploads_ms": round(1000 * percentile(report.health_uploads, 0.99), 1),
        "health_checks": len(report.health_burst) + len(report.health_uploads),
        "hung_calls": sum(o.hung for o in outcomes),
        "admitted_jobs_lost": len(report.lost),
        "lost": report.lost,
        "idle_rss_gib": round(report.idle_rss / GIB, 3),
        "peak_rss_gib": round(report.peak_rss / GIB, 3),
        "rss_goal_gib": round(budget / GIB, 3),
        "rss_goal_met": report.peak_rss <= budget,
        "server_exit_code": exit_code,
        "notes": report.notes,
    }


if __name__ == "__main__":
    main()
