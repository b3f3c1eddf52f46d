"""How long one address waits for its next call after readers that never read took its share.

The attack of issue 27: against a real server (`--max-calls 8`, so a caller's share is 2), raw
HTTP/2 clients from one address post Stylize calls and never open their receive window. The
server ends them after `--stall-timeout`; from then on they must hold nothing: the same address's
next call is admitted (goal: within the stall timeout plus 1 s of the readers' calls), whether
the readers keep their connections open or close them. Per scenario it prints that wait, how
many of the address's calls were refused meanwhile, and how long gRPC still held the ended
calls' streams (`styletx_calls_stalled`) after the readers left.

Scenarios: `kept-open` (the readers stay connected until the address was served, then leave) and
`closed` (they close their connections right after posting). Weights: seeded random ones unless
`--weights` names a file (the figure times admission, not the picture).

Usage: python bench/stall_report.py [--weights PATH] [--max-calls 8] [--stall-timeout 5]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from PIL import Image  # noqa: E402

from bench.support.server_process import ServerProcess, free_port, start_serving  # noqa: E402
from bench.support.weights import make_seeded_weights, tiny_image  # noqa: E402
from bench.support.zero_window import ZeroWindowClient  # noqa: E402
from styletx_api.v1 import style_transfer_pb2 as pb  # noqa: E402
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc  # noqa: E402
from styletx_server.scheduling.slots import share_limit  # noqa: E402

#: The server's default `--max-peer-share`: the share the attack takes.
SHARE = 0.25
#: The goal: the address's next call within the stall timeout plus this.
SLACK_SECONDS = 1.0
#: Give up on a scenario after this long.
LIMIT_SECONDS = 120.0


def _png(height: int, width: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tiny_image(height, width, seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def small_request(seed: int = 0) -> pb.StylizeRequest:
    return pb.StylizeRequest(
        content_image=_png(48, 64, 1),
        style_images=[pb.StyleImage(image=_png(40, 40, 2))],
        options=pb.StyleOptions(size=64, max_evaluations=10, seed=seed),
    )


def next_call(stub: Any, began: float) -> tuple[float | None, int]:
    """Open calls until one is admitted (its first event; then it is cancelled): the seconds from
    `began` (None: not within LIMIT_SECONDS) and how many were refused RESOURCE_EXHAUSTED."""
    refused = 0
    while time.monotonic() - began < LIMIT_SECONDS:
        call = stub.Stylize(small_request(seed=refused), timeout=LIMIT_SECONDS)
        try:
            next(call)
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            refused += 1
            time.sleep(0.05)
            continue
        waited = time.monotonic() - began
        call.cancel()
        return waited, refused
    return None, refused


def wait_until(condition: Callable[[], bool], limit: float) -> float | None:
    """Seconds until `condition()` held (polled every 50 ms), None after `limit`."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        if condition():
            return time.monotonic() - began
        time.sleep(0.05)
    return None


def scenario(server: ServerProcess, name: str, readers: int, stall: float) -> dict[str, Any]:
    """`readers` zero-window calls from 127.0.0.1, then that address's next call."""

    def stalled() -> float:
        return server.metric("styletx_calls_stalled")

    clients = [ZeroWindowClient(server.port, source="127.0.0.1") for _ in range(readers)]
    out: dict[str, Any] = {"scenario": name, "readers": readers}
    try:
        began = time.monotonic()
        for client in clients:
            client.open_calls(small_request())
        held = wait_until(lambda: server.metric("styletx_calls_in_flight") >= readers, 30)
        if held is None:
            raise RuntimeError("the readers' calls never held their slots")
        if name == "closed":
            for client in clients:
                client.close()
        with grpc.insecure_channel(server.address) as channel:
            waited, refused = next_call(pb_grpc.StyleTransferServiceStub(channel), began)
        out["next_call_after_s"] = None if waited is None else round(waited, 2)
        out["refused_meanwhile"] = refused
        out["goal_s"] = stall + SLACK_SECONDS
        out["met"] = waited is not None and waited < stall + SLACK_SECONDS
        out["stalled_while_connected"] = round(stalled())
    finally:
        for client in clients:
            client.close()
    released = wait_until(lambda: stalled() == 0, 30)
    out["streams_released_after_leaving_s"] = None if released is None else round(released, 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--max-calls", type=int, default=8)
    parser.add_argument("--stall-timeout", type=float, default=5.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    readers = share_limit(args.max_calls, SHARE)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or make_seeded_weights(Path(tmp) / "seeded_vgg16.weights.h5")
        metrics_port = free_port()
        flags = [
            "--address", "127.0.0.1:0", "--metrics-port", str(metrics_port),
            "--weights", str(weights), "--workers", "1", "--no-warmup",
            "--max-calls", str(args.max_calls), "--max-peer-share", str(SHARE),
            "--stall-timeout", str(args.stall_timeout),
        ]  # fmt: skip
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        server = start_serving(flags, env=env, metrics_port=metrics_port)
        try:
            results = [
                scenario(server, name, readers, args.stall_timeout)
                for name in ("kept-open", "closed")
            ]
        finally:
            server.stop()
    errors = [e for e in server.events if e.get("level") in ("error", "critical")]
    tracebacks = sum("Traceback" in line for line in server.other_lines)
    for result in results:
        waited = result["next_call_after_s"]
        shown = f"none in {LIMIT_SECONDS:.0f} s" if waited is None else f"{waited:.2f} s"
        print(
            f"{result['scenario']:>9}: {readers} zero-window readers from one address; its next "
            f"call: {shown} (goal < {result['goal_s']:.1f} s: "
            f"{'met' if result['met'] else 'MISSED'}), {result['refused_meanwhile']} refused "
            f"meanwhile; gRPC held {result['stalled_while_connected']} ended streams while the "
            f"readers were connected, none {result['streams_released_after_leaving_s']} s after "
            "they left"
        )
    print(f"server log: {len(errors)} errors, {tracebacks} tracebacks (goal 0 and 0)")
    if args.json is not None:
        summary = {"scenarios": results, "errors": len(errors), "tracebacks": tracebacks}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if all(r["met"] for r in results) and not errors and not tracebacks else 1


if __name__ == "__main__":
    sys.exit(main())
