"""What a shared job store costs and what it buys, side by side in one run.

Two pairs of real server processes (one worker each): `islands`, two replicas on their own
(memory store, `--queue-size 4` each, a call goes to the replica its key hashes to, as the SDK's
key routing did up to 0.1), and `fleet`, two replicas sharing a `redis-server` of the bench's own
(append-only file on; `--queue-size 10`: in a fleet it bounds the jobs waiting or running, so the
same ten places in all; calls spread round robin).

- `overhead`: the same small call, alternating between an island and the first fleet replica
  (alone in its fleet until this part is over): p50 and p99 of each, and what the store adds
  (goal: p50 <= 5 ms, p99 <= 20 ms more); also of each call's time outside its computation
  (`service_*`: the call's latency less its job's compute time), which the store can change and
  the CPU's noise hardly touches. 200 calls each by default: the p99 of 60 was their slowest.
- `jobs_per_minute`: one replica's jobs per minute on each store, the same 64 px job one after
  another, alternating (goal: Redis within 3 % of memory).
- `events`: how late progress events reach the caller beyond the fastest one (arrival minus the
  event's own `elapsed`, less its minimum; goal: p99 <= 50 ms through the store).
- `burst`: 10 calls of mixed sizes at once, then 16: calls refused while the other replica had
  room, the time until all work was done, and that against the sum of compute seconds divided
  by the workers (goal for the fleet: nothing refused, within 1.1x).

- `faults` (with `--faults`): the fault tests of `tests/e2e/test_fleet_chaos.py` (real replicas
  killed, frozen, rolled; redis-server killed and restarted), run by pytest; the figure each
  prints (its `fleet:` line) and whether it passed.

Usage: python bench/fleet_bench.py [--weights PATH] [--calls 200] [--jobs 20] [--faults]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from PIL import Image  # noqa: E402

from bench.support.redis import Redis  # noqa: E402
from bench.support.server_process import ServerProcess, free_port, start_serving  # noqa: E402
from bench.support.weights import make_seeded_weights, tiny_image  # noqa: E402
from styletx_api.v1 import style_transfer_pb2 as pb  # noqa: E402
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc  # noqa: E402


def png(height: int, width: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tiny_image(height, width, seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def request(size: int, evaluations: int, key: str = "", seed: int = 0) -> pb.StylizeRequest:
    return pb.StylizeRequest(
        content_image=png(size, size, seed),
        style_images=[pb.StyleImage(image=png(48, 48, seed + 1))],
        options=pb.StyleOptions(size=size, max_evaluations=evaluations, seed=seed),
        request_key=key,
    )


def replica(weights: Path, *extra: str) -> ServerProcess:
    metrics = free_port()
    args = ["--address", "127.0.0.1:0", "--metrics-port", str(metrics), "--weights", str(weights)]
    args += ["--workers", "1", "--no-warmup", "--stall-timeout", "60", *extra]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return start_serving(args, env=env, metrics_port=metrics)


def stub(server: ServerProcess) -> pb_grpc.StyleTransferServiceStub:
    return pb_grpc.StyleTransferServiceStub(grpc.insecure_channel(server.address))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def overhead_and_events(island: ServerProcess, fleet: ServerProcess, calls: int) -> dict[str, Any]:
    """Alternate one small call between the two; call latency and event lateness per store.

    Each call's latency is also split: the job's compute time (its record's `compute_time`, from
    GetJob) and the rest, the service around it, which is where a store can add time. A call's
    compute varies by tens of milliseconds from call to call on a busy or throttled CPU, the same
    on both stores, and at p99 that noise can hide or fake what the store adds.
    """
    stubs = {"memory": stub(island), "redis": stub(fleet)}
    seconds: dict[str, list[float]] = {"memory": [], "redis": []}
    service: dict[str, list[float]] = {"memory": [], "redis": []}
    late: dict[str, list[float]] = {"memory": [], "redis": []}
    tracked = request(64, 30)
    for index in range(calls + 4):
        for name, channel in stubs.items():
            key = f"overhead-{name}-{index}-{os.getpid()}"
            small = request(32, 2, key=key)
            start = time.perf_counter()
            events = list(channel.Stylize(small, timeout=120))
            took = time.perf_counter() - start
            assert events[-1].HasField("result")
            job = channel.GetJob(pb.GetJobRequest(request_key=key, omit_image=True), timeout=30)
            if index >= 4:  # the first calls trace shapes
                seconds[name].append(took)
                service[name].append(took - job.compute_time.ToTimedelta().total_seconds())
            if index % 10 == 0:
                offsets = []
                begin = time.perf_counter()
                for event in channel.Stylize(tracked, timeout=120):
                    if event.HasField("progress"):
                        offsets.append(
                            time.perf_counter()
                            - begin
                            - event.progress.elapsed.ToTimedelta().total_seconds()
                        )
                late[name] += [o - min(offsets) for o in offsets]
    out: dict[str, Any] = {"calls": calls}
    for name in stubs:
        out[name] = {
            "p50_ms": 1000 * statistics.median(seconds[name]),
            "p99_ms": 1000 * percentile(seconds[name], 0.99),
            "service_p50_ms": 1000 * statistics.median(service[name]),
            "service_p99_ms": 1000 * percentile(service[name], 0.99),
            "event_late_p99_ms": 1000 * percentile(late[name], 0.99),
        }
    for figure in ("p50_ms", "p99_ms", "service_p50_ms", "service_p99_ms"):
        out[f"added_{figure}"] = out["redis"][figure] - out["memory"][figure]
    return out


def throughput(island: ServerProcess, fleet: ServerProcess, jobs: int) -> dict[str, Any]:
    """Jobs per minute of one replica on each store: the same jobs one after another, the two
    replicas alternating (side by side, so a change in the machine's speed hits both)."""
    stubs = {"memory": stub(island), "redis": stub(fleet)}
    seconds = {"memory": 0.0, "redis": 0.0}
    job = request(64, 20)
    for channel in stubs.values():  # trace the shape on both first
        list(channel.Stylize(job, timeout=120))
    for _ in range(jobs):
        for name, channel in stubs.items():
            start = time.perf_counter()
            events = list(channel.Stylize(job, timeout=120))
            seconds[name] += time.perf_counter() - start
            assert events[-1].HasField("result")
    per_minute = {name: 60 * jobs / total for name, total in seconds.items()}
    return {**per_minute, "redis_over_memory": per_minute["redis"] / per_minute["memory"]}


def burst(servers: list[ServerProcess], count: int, hashed: bool, tag: str) -> dict[str, Any]:
    """`count` calls of mixed sizes at once; keys hashed to a replica, or spread round robin."""
    stubs = [stub(s) for s in servers]
    sizes = [48, 96, 64, 128, 80, 112]
    outcome: list[tuple[str, float]] = []
    lock = threading.Lock()
    begin = time.perf_counter()

    def call(index: int) -> None:
        key = f"{tag}-{count}-{index}"
        digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        target = stubs[digest % len(stubs)] if hashed else stubs[index % len(stubs)]
        job = request(sizes[index % len(sizes)], 30, key=key, seed=index)
        try:
            events = list(target.Stylize(job, timeout=600))
            compute = events[-1].result.compute_time.ToTimedelta().total_seconds()
            result = ("ok", compute)
        except grpc.RpcError as exc:
            result = (exc.code().name, 0.0)
        with lock:
            outcome.append(result)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begin
    compute = sum(seconds for _, seconds in outcome)
    ideal = compute / len(servers)
    return {
        "calls": count,
        "refused": sum(1 for code, _ in outcome if code != "ok"),
        "all_done_s": wall,
        "compute_per_worker_s": ideal,
        "ratio": wall / ideal if ideal else float("nan"),
    }


def faults() -> dict[str, Any]:
    """Run the fleet's fault tests; each one's printed figure, and the pytest outcome."""
    command = [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider"]
    command += ["tests/e2e/test_fleet_chaos.py"]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line.strip() for line in done.stdout.splitlines()]
    figures = [line.removeprefix("fleet: ") for line in lines if line.startswith("fleet: ")]
    summary = next((line for line in reversed(lines) if " passed" in line or " failed" in line), "")
    return {"figures": figures, "pytest": summary, "passed": done.returncode == 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="weights file (default: seeded random)")
    parser.add_argument("--calls", type=int, default=200, help="calls per store for overhead")
    parser.add_argument("--jobs", type=int, default=20, help="jobs per store for throughput")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--faults", action="store_true", help="also run the fault tests")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        folder = Path(tmp)
        weights = args.weights or make_seeded_weights(folder / "seeded.weights.h5")
        redis = Redis(folder)
        islands = [replica(weights, "--queue-size", "4") for _ in range(2)]
        # In a fleet --queue-size bounds its jobs waiting or running: 10 places, as the islands'
        # 2 x (4 waiting + 1 running).
        fleet = [replica(weights, "--queue-size", "10", "--store", redis.url)]
        try:
            # One fleet replica while the store's cost is timed: every call runs where it lands.
            figures: dict[str, Any] = {
                "overhead": overhead_and_events(islands[0], fleet[0], args.calls),
                "jobs_per_minute": throughput(islands[0], fleet[0], args.jobs),
            }
            fleet.append(replica(weights, "--queue-size", "10", "--store", redis.url))
            for count in (10, 16):
                figures[f"burst_{count}"] = {
                    "islands": burst(islands, count, hashed=True, tag="islands"),
                    "fleet": burst(fleet, count, hashed=False, tag="fleet"),
                }
        finally:
            for server in islands + fleet:
                server.stop()
            redis.stop()
    if args.faults:
        figures["faults"] = faults()
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
