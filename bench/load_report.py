"""Load and fault report: a real server subprocess (real weights, small jobs) on loopback.

Bounded: a fixed number of requests per phase and an overall time limit. Phases:

1. burst      - far more concurrent calls than queue slots; health checked every 20 ms meanwhile;
2. slow       - streams that never read (a tiny flow-control window), then a normal call;
3. reattach   - keyed calls dropped at a random point and re-attached with the same key;
4. uploads    - 10 concurrent 30-megapixel PNG uploads while the queue is full;
5. sigterm    - SIGTERM with one job running and others queued.

Prints requests, outcomes by code and reason, p50/p95 latency and queue wait, health-check
latency p99 during the burst and the uploads, and the server's peak RSS (VmHWM) against the
configured budget. Goals on a 2-core CPU: 0 hung calls, 0 admitted jobs lost, health p99 < 100 ms,
peak RSS <= idle RSS + decoded in-flight budget (3 B/px) + 1 GiB.

Usage: python bench/load_report.py [--weights PATH] [--burst 40] [--time-limit 600] [--json F]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
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
import psutil  # noqa: E402
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_status import rpc_status  # noqa: E402
from PIL import Image  # noqa: E402

from styletx.weights import resolve_weights  # noqa: E402
from styletx_client.proto import style_transfer_pb2 as pb  # noqa: E402
from styletx_client.proto import style_transfer_pb2_grpc as pb_grpc  # noqa: E402

CONTENT = ROOT / "examples" / "content_chelsea.png"
STYLE = ROOT / "examples" / "style_starry_night.jpg"
START_TIMEOUT = 300.0
GIB = 1024**3
QUEUE = 4
INFLIGHT_PIXELS = 128_000_000
UPLOAD_PIXELS = 30_000_000


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


class Server:
    """`python -m styletx_server` on 127.0.0.1:0 (port from its `serving` log line)."""

    def __init__(self, weights: Path, *args: str) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "styletx_server", "--address", "127.0.0.1:0",
                "--metrics-port", "0", "--weights", str(weights), "--workers", "1",
                "--queue-size", str(QUEUE), "--max-inflight-pixels", str(INFLIGHT_PIXELS),
                "--max-message-bytes", str(64 * 1024 * 1024), "--grace-period", "20", *args,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self.port = self._read_port()
        self.process = psutil.Process(self.proc.pid)

    def _read_port(self) -> int:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("{"):
                event = json.loads(line)
                self.events.append(event)
                if event.get("event") == "serving":
                    threading.Thread(target=self._drain_log, daemon=True).start()
                    return int(event["port"])
        raise SystemExit(f"server exited with {self.proc.wait()} before serving")

    def _drain_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def peak_rss(self) -> int:
        """VmHWM: the kernel's high-water mark of the resident set."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return int(self.process.memory_info().rss)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)


def health_latency(channel: grpc.Channel) -> float:
    stub = health_pb2_grpc.HealthStub(channel)
    started = time.perf_counter()
    stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return time.perf_counter() - started


def wait_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise SystemExit("server never reported SERVING")


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
    heavy = small_request(evaluations=20)
    heavy.preview_every = 1
    unread = [slow_stub.Stylize(heavy, timeout=limit) for _ in range(streams)]
    time.sleep(1.0)
    # While nobody reads those streams, a normal call must still go through.
    run_call(stub, small_request(seed=99), "slow", report, limit)
    for call in unread:  # read them now: each must still end with its result
        outcome = Outcome(phase="slow", code="OK", admitted=True)
        try:
            events = list(call)
            if not events or not events[-1].HasField("result"):
                outcome.code = "NO_RESULT"
        except grpc.RpcError as exc:
            outcome.code, outcome.reason = exc.code().name, reason_of(exc)
            if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                outcome.admitted = False  # refused at the door (queue full): not admitted
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


def phase_sigterm(server: Server, stub: Any, report: Report, limit: float) -> int:
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
    server.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(limit)
    return server.proc.wait(60)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def lost_jobs(report: Report) -> list[str]:
    """Admitted calls that ended without a result and without a clear drain/retry status."""
    lost = []
    for o in report.outcomes:
        if not o.admitted or o.code in ("OK", "CANCELLED_BY_TEST"):
            continue
        if o.phase == "sigterm" and o.reason in ("DRAINING", "SHUTDOWN"):
            continue  # told at once to retry elsewhere: not lost
        lost.append(f"{o.phase}:{o.code}:{o.reason}")
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--burst", type=int, default=40, help="concurrent calls in the burst")
    parser.add_argument("--slow", type=int, default=6, help="streams that never read")
    parser.add_argument("--reattach", type=int, default=6, help="keyed calls dropped mid-way")
    parser.add_argument("--uploads", type=int, default=10, help="concurrent 30 Mpx uploads")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per phase")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    weights = Path(resolve_weights(args.weights).path)
    report = Report()
    rng = random.Random(0)
    server = Server(weights)
    exit_code = None
    try:
        with grpc.insecure_channel(
            f"127.0.0.1:{server.port}",
            options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
        ) as channel:
            wait_serving(channel)
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
                began = time.monotonic()
                phase()
                print(f"phase {name}: {time.monotonic() - began:.1f} s", file=sys.stderr)
            report.peak_rss = server.peak_rss()
            exit_code = phase_sigterm(server, stub, report, args.time_limit)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    report.lost = lost_jobs(report)
    summary = summarize(report, exit_code)
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({**summary, "outcomes": [asdict(o) for o in report.outcomes]})
        )


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
