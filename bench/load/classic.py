"""Phases 1-5 of the load report (burst, slow, reattach, uploads, sigterm), on one server."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Any

import grpc

from bench.load.calls import (
    QUEUE,
    STALL_SECONDS,
    STYLE,
    UPLOAD_PIXELS,
    HealthProbe,
    Outcome,
    Report,
    big_png,
    in_threads,
    reason_of,
    run_call,
    small_request,
)
from bench.support.server_process import ServerProcess
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc


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
