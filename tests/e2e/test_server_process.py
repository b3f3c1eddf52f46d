"""The server as a real process: JSON logs, metrics over HTTP, SIGTERM drain, exit codes."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from styletx.images import encode_image
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from tests.support.server_process import ServerProcess, free_port
from tests.support.weights import tiny_image

pytestmark = pytest.mark.slow  # each test starts a server process (TensorFlow import included)

START_TIMEOUT = 120.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def request(evaluations: int) -> pb.StylizeRequest:
    return pb.StylizeRequest(
        content_image=encode_image(tiny_image(48, 64, 1), "png"),
        style_images=[pb.StyleImage(image=encode_image(tiny_image(40, 40, 2), "png"))],
        options=pb.StyleOptions(size=48, max_evaluations=evaluations, seed=1),
    )


@pytest.fixture
def spawn() -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(*args: str) -> ServerProcess:
        # TensorFlow's log level as the images set it.
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1", "CUDA_VISIBLE_DEVICES": ""}
        process = ServerProcess(["--address", "127.0.0.1:0", *args], env=env)
        started.append(process)
        return process

    yield make
    for process in started:
        process.kill()


def reason(error: grpc.RpcError) -> str:
    """The styletx ErrorInfo reason of a failed call."""
    from google.rpc import error_details_pb2  # type: ignore[import-untyped]
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich details: {error.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


def health_status(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status)


def wait_status(channel: grpc.Channel, wanted: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health_status(channel) == wanted:
            return
        time.sleep(0.05)
    raise AssertionError(f"health never became {wanted}")


def test_sigterm_drains_in_flight_work_and_exits_zero(spawn: Any, seeded_weights: Path) -> None:
    metrics_port = free_port()
    server = spawn(
        "--weights", str(seeded_weights), "--metrics-port", str(metrics_port),
        "--grace-period", "120",
    )  # fmt: skip
    serving = server.event("serving")
    assert serving["address"] == "127.0.0.1:0" and serving["port"] > 0
    with grpc.insecure_channel(f"127.0.0.1:{serving['port']}") as channel:
        wait_status(channel, SERVING)
        stub = pb_grpc.StyleTransferServiceStub(channel)
        call = stub.Stylize(request(evaluations=100), timeout=START_TIMEOUT)
        stream = iter(call)
        events = [next(stream), next(stream), next(stream)]  # queued, started, first progress
        assert events[-1].HasField("progress")

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            text = response.read().decode()
        assert 'styletx_jobs_in_flight{tenant="default"} 1.0' in text
        assert "process_resident_memory_bytes" in text

        server.process.send_signal(signal.SIGTERM)
        server.event("draining", timeout=30)
        # Until the running job is done: probes say NOT_SERVING, and a new call, on this
        # connection or a new one, is refused with its reason (DRAINING: move on at once),
        # never "failed to connect".
        assert health_status(channel) == NOT_SERVING
        with grpc.insecure_channel(f"127.0.0.1:{serving['port']}") as fresh:
            for new_stub in (stub, pb_grpc.StyleTransferServiceStub(fresh)):
                with pytest.raises(grpc.RpcError) as caught:
                    list(new_stub.Stylize(request(evaluations=2), timeout=30))
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert reason(caught.value) == "DRAINING"

        rest = list(call)  # the admitted job runs to its end during the grace period
        assert rest[-1].HasField("result")
        assert rest[-1].result.evaluations == 100
    assert server.wait(60) == 0
    names = [e["event"] for e in server.events]
    assert names.index("draining") < names.index("drained") < names.index("stopped")
    finished = [e for e in server.events if e["event"] == "request" and e["code"] == "OK"]
    assert finished and finished[0]["evaluations"] == 100 and finished[0]["request_id"]
    # One JSON object per line, TensorFlow's start-up notices included (styletx.startup).
    assert server.other_lines == []
    # ... as here, without a GPU, TensorFlow's failed cuInit (an absl error line) at INFO.
    assert any(
        e["logger"] == "styletx.startup" and "failed call to cuInit" in e["event"]
        for e in server.events
    )


def test_jobs_past_the_grace_period_are_cancelled_and_exit_is_zero(
    spawn: Any, seeded_weights: Path
) -> None:
    server = spawn("--weights", str(seeded_weights), "--metrics-port", "0", "--grace-period", "1")
    port = server.event("serving")["port"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        wait_status(channel, SERVING)
        call = pb_grpc.StyleTransferServiceStub(channel).Stylize(
            request(evaluations=1000), timeout=START_TIMEOUT
        )
        stream = iter(call)
        assert next(stream).HasField("queued")
        assert next(stream).HasField("started")
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as caught:
            list(call)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.wait(60) == 0
    assert any(e["event"] == "grace_period_over" for e in server.events)


def test_missing_weights_exit_one(spawn: Any, tmp_path: Path) -> None:
    server = spawn("--weights", str(tmp_path / "absent.weights.h5"), "--metrics-port", "0")
    assert server.wait(START_TIMEOUT) == 1
    failed = server.event("model_failed", timeout=1)
    assert failed["level"] == "error" and failed["error"]


def test_a_queued_job_that_cannot_finish_in_time_is_refused_when_sigterm_arrives(
    spawn: Any, seeded_weights: Path
) -> None:
    server = spawn(
        "--weights", str(seeded_weights), "--metrics-port", "0", "--grace-period", "15",
        "--workers", "1",
    )  # fmt: skip
    port = server.event("serving")["port"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        wait_status(channel, SERVING)
        stub = pb_grpc.StyleTransferServiceStub(channel)
        # Short enough to finish within the grace on a slow CPU running other tests beside it.
        running = iter(stub.Stylize(request(evaluations=30), timeout=START_TIMEOUT))
        assert next(running).HasField("queued") and next(running).HasField("started")
        assert next(running).HasField("progress")  # the server has measured its pace
        # 1000 evaluations take far longer than the 15 s grace at the pace just measured.
        queued = iter(stub.Stylize(request(evaluations=1000), timeout=START_TIMEOUT))
        assert next(queued).HasField("queued")
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as caught:
            list(queued)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - sent < 4  # at once, not at the end of the 15 s grace
        assert list(running)[-1].HasField("result")  # the running job still finishes
    assert server.wait(60) == 0
    refused = [e for e in server.events if e["event"] == "request" and e["code"] == "UNAVAILABLE"]
    assert refused and refused[0]["reason"] == "draining"


def test_require_gpu_exits_one_without_a_gpu(spawn: Any, seeded_weights: Path) -> None:
    server = spawn("--weights", str(seeded_weights), "--metrics-port", "0", "--require-gpu")
    assert server.wait(START_TIMEOUT) == 1
    line = server.event("no_gpu", timeout=1)
    assert line["level"] == "error" and "--require-gpu" in line["error"]
    assert not any(e["event"] == "serving" for e in server.events)
