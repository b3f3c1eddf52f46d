"""What one worker does with its jobs: the largest job's memory (largest), cancelling a running
job (cancel), two tenants' turns (tenants)."""

from __future__ import annotations

import io
import math
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
from PIL import Image

from bench.load.calls import (
    CONTENT,
    GIB,
    STYLE,
    Report,
    percentile,
    reason_of,
    run_call,
    small_request,
    start_server,
    wait_for,
)
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_client import StyleTransferClient


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
                if wait_for(lambda seen=victim: "evaluation_s" in seen, limit) is None:
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
