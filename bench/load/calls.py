"""What every phase of the load report uses: its servers, requests, calls and their outcomes."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from PIL import Image

from bench.support.server_process import ServerProcess, start_serving
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_client import ServiceError, StyleTransferClient

ROOT = Path(__file__).resolve().parents[2]
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


def violations_of(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: list[str] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [v.field for v in bad.field_violations]
    return found


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


def sdk_call(
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


def wait_for(condition: Callable[[], bool], limit: float, step: float = 0.05) -> float | None:
    """Seconds until `condition()` held, or None if it did not within `limit`."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
