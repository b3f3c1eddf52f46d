"""`make fleet` (tools/fleet.sh): a redis-server and two replicas in one command; a job sent to
one replica is found on the other; Ctrl-C (SIGINT) stops all three and removes the folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from tests.support.redis_server import MISSING, find_redis_server
from tests.support.server_process import free_port, png

pytestmark = pytest.mark.slow  # three processes, TensorFlow imports included

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_make_fleet_starts_two_replicas_sharing_one_store(
    tmp_path: Path, seeded_weights: Path
) -> None:
    if find_redis_server(tmp_path) is None:
        pytest.skip(MISSING)
    if not (BIN / "styletx-server").is_file():
        pytest.skip(f"styletx-server is not installed beside {sys.executable}")
    env = {
        **os.environ,
        "BIN": str(BIN),
        "FIRST_PORT": str(free_port()),  # and the port after it
        "REDIS_PORT": str(free_port()),
        "METRICS_FIRST_PORT": str(free_port()),
        "CUDA_VISIBLE_DEVICES": "",
        "TMPDIR": str(tmp_path),
    }
    args = ["--weights", str(seeded_weights), "--no-warmup", "--workers", "1"]
    script = subprocess.Popen(
        ["bash", str(ROOT / "tools" / "fleet.sh"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        assert script.stdout is not None
        lines = [script.stdout.readline() for _ in range(2)]
        ports = [int(m.group(1)) for m in (re.search(r"localhost:(\d+)", x) for x in lines) if m]
        assert len(ports) == 2, lines
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in ports]
        stubs = [pb_grpc.StyleTransferServiceStub(channel) for channel in channels]
        request = pb.StylizeRequest(
            content_image=png(48, 40, 1),
            style_images=[pb.StyleImage(image=png(40, 40, 2))],
            options=pb.StyleOptions(size=48, max_evaluations=4, seed=1),
            request_key="made-by-make-fleet",
        )
        deadline = time.monotonic() + 120
        while True:  # until the first replica has loaded its weights
            try:
                events = list(stubs[0].Stylize(request, timeout=60))
                break
            except grpc.RpcError as exc:
                assert exc.code() is grpc.StatusCode.UNAVAILABLE, exc
                assert time.monotonic() < deadline, exc
                time.sleep(0.5)
        assert events[-1].result.image.data
        deadline = time.monotonic() + 120
        while True:  # the other replica answers for the key once it serves
            try:
                view = stubs[1].GetJob(
                    pb.GetJobRequest(request_key=request.request_key), timeout=10
                )
                break
            except grpc.RpcError as exc:
                assert exc.code() is grpc.StatusCode.UNAVAILABLE, exc
                assert time.monotonic() < deadline, exc
                time.sleep(0.5)
        assert view.state == pb.JOB_STATE_DONE
        assert view.result.image.data == events[-1].result.image.data
    finally:
        os.killpg(script.pid, signal.SIGINT)
        try:
            code = script.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)
            raise
    assert code in (0, 130), code
    assert not list(tmp_path.glob("styletx-fleet.*")), "the fleet's folder was left behind"
