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
10. rollout    - a fleet of three (one redis-server) behind the SDK (round robin), one drained
                 (SIGTERM) and restarted on its port while 30 keyed calls run: failed calls and
                 jobs computed twice (from the store's claims of each key), goal 0 and 0.
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
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from bench.load.calls import (  # noqa: E402
    GIB,
    INFLIGHT_PIXELS,
    Outcome,
    Report,
    percentile,
    run_call,
    small_request,
    start_server,
)
from bench.load.classic import (  # noqa: E402
    phase_burst,
    phase_reattach,
    phase_sigterm,
    phase_slow_readers,
    phase_uploads,
)
from bench.load.hostile import phase_overflow, phase_zero_window  # noqa: E402
from bench.load.outages import phase_restart, phase_rollout  # noqa: E402
from bench.load.workers import phase_cancel, phase_largest, phase_tenants  # noqa: E402
from styletx.weights import resolve_weights  # noqa: E402
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc  # noqa: E402

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
