"""Service benchmark: the same job in-process and through the gRPC server over loopback.

1. Overhead of the service: median wall time of one job through a server subprocess (call to
   result, loopback) against the engine called in this process (stylize() alone), same images,
   options and seed, interleaved and repeated. Target: <= 5 % at 128 px / 100 evaluations.
2. Time from call to the first progress event on a warm server (median).
3. Peak resident memory of the server process during a 512 px job (polled), next to its idle RSS.

Usage: python bench/service_bench.py [--weights PATH] [--size 128] [--evaluations 100]
       [--repeats 5] [--rss-size 512] [--rss-evaluations 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import psutil  # noqa: E402

from bench.support.server_process import ServerProcess, start_serving  # noqa: E402
from styletx import images  # noqa: E402
from styletx.engine import Stylizer  # noqa: E402
from styletx.options import StyleOptions  # noqa: E402
from styletx.weights import resolve_weights  # noqa: E402
from styletx_api.v1 import style_transfer_pb2 as pb  # noqa: E402
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc  # noqa: E402

CONTENT = ROOT / "examples" / "content_chelsea.png"
STYLE = ROOT / "examples" / "style_starry_night.jpg"
START_TIMEOUT = 300.0
SEED = 0


def start_server(weights: Path, max_size: int, max_evaluations: int) -> ServerProcess:
    """`python -m styletx_server` on 127.0.0.1:0 with these limits, one worker, SERVING."""
    args = [
        "--address", "127.0.0.1:0", "--metrics-port", "0", "--weights", str(weights),
        "--workers", "1", "--max-size", str(max_size), "--max-evaluations", str(max_evaluations),
    ]  # fmt: skip
    return start_serving(args, timeout=START_TIMEOUT)


def make_request(size: int, evaluations: int) -> pb.StylizeRequest:
    return pb.StylizeRequest(
        content_image=CONTENT.read_bytes(),
        style_images=[pb.StyleImage(image=STYLE.read_bytes())],
        options=pb.StyleOptions(size=size, max_evaluations=evaluations, seed=SEED),
    )


def through_server(stub: pb_grpc.StyleTransferServiceStub, request: pb.StylizeRequest) -> Any:
    """(seconds call-to-result, seconds call-to-first-progress, result event)."""
    started = time.perf_counter()
    first_progress = None
    result = None
    for event in stub.Stylize(request, timeout=START_TIMEOUT):
        if first_progress is None and event.HasField("progress"):
            first_progress = time.perf_counter() - started
        if event.HasField("result"):
            result = event.result
    assert result is not None
    return time.perf_counter() - started, first_progress, result


def in_process(stylizer: Stylizer, size: int, evaluations: int) -> float:
    content = images.decode_image(CONTENT)
    style = images.decode_image(STYLE)
    options = StyleOptions(size=size, max_evaluations=evaluations, seed=SEED)
    started = time.perf_counter()
    stylizer.stylize(content, [style], options)
    return time.perf_counter() - started


def peak_rss_during(server: ServerProcess, stub: Any, request: pb.StylizeRequest) -> int:
    """Peak RSS of the server process, polled every 10 ms while one job runs."""
    peak = server.rss()
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.rss())
            done.wait(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        through_server(stub, request)
    finally:
        done.set()
        poller.join()
    return max(peak, server.rss())


def machine() -> dict[str, Any]:
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpus,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "grpcio": grpc.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="VGG16 weights (default: resolved as usual)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--evaluations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rss-size", type=int, default=512)
    parser.add_argument("--rss-evaluations", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    weights = resolve_weights(args.weights).path

    stylizer = Stylizer(weights)
    stylizer.warmup()
    # Limits at least the server defaults (260 px, 200 evaluations), which they must not undercut.
    server = start_server(
        weights,
        max(args.size, args.rss_size, 260),
        max(args.evaluations, args.rss_evaluations, 200),
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.StyleTransferServiceStub(channel)
            request = make_request(args.size, args.evaluations)
            # One untimed run each: compile the graphs for this size on both sides.
            in_process(stylizer, args.size, args.evaluations)
            through_server(stub, request)
            local: list[float] = []
            remote: list[float] = []
            first: list[float] = []
            for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
                local.append(in_process(stylizer, args.size, args.evaluations))
                seconds, to_first, _result = through_server(stub, request)
                remote.append(seconds)
                if to_first is not None:  # a job too short for an iteration reports none
                    first.append(to_first)
            idle_rss = server.rss()
            rss_request = make_request(args.rss_size, args.rss_evaluations)
            peak = peak_rss_during(server, stub, rss_request)
    finally:
        server.stop(timeout=60)

    local_s, remote_s = statistics.median(local), statistics.median(remote)
    overhead = (remote_s - local_s) / local_s
    figures = {
        "machine": machine(),
        "job": {"size": args.size, "evaluations": args.evaluations, "repeats": args.repeats},
        "in_process_seconds": local_s,
        "server_seconds": remote_s,
        "overhead_fraction": overhead,
        "overhead_target": 0.05,
        "time_to_first_progress_seconds": statistics.median(first) if first else None,
        "rss_job": {"size": args.rss_size, "evaluations": args.rss_evaluations},
        "server_idle_rss_bytes": idle_rss,
        "server_peak_rss_bytes": peak,
        "samples": {"in_process": local, "server": remote, "first_progress": first},
    }
    mib = 2**20
    print(f"machine: {figures['machine']}")
    print(f"job: {args.size} px, {args.evaluations} evaluations, median of {args.repeats}")
    print(f"{'':32}{'in-process':>12}{'server':>12}{'overhead':>11}")
    print(
        f"{'call to result (s)':32}{local_s:12.3f}{remote_s:12.3f}{overhead:10.1%} "
        f"({'meets' if overhead <= 0.05 else 'misses'} the 5 % target)"
    )
    if first:
        print(f"{'call to first progress (s)':32}{'':12}{statistics.median(first):12.3f}")
    else:
        print(f"{'call to first progress (s)':32}{'':12}{'none sent':>12}")
    print(
        f"server RSS, {args.rss_size} px job (MiB): idle {idle_rss / mib:.0f}, "
        f"peak {peak / mib:.0f}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
