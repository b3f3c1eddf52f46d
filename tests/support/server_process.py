"""Real `styletx-server` child processes for tests and benchmarks: start, logs, readiness, stop.

The one place that runs the server as a process; tests use `launch` (small, fast settings),
benchmarks and special cases build a `ServerProcess` with the exact arguments they need.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.support import rss

#: `python -m styletx_server` of the running interpreter.
SERVER_COMMAND = (sys.executable, "-m", "styletx_server")
START_TIMEOUT = 180.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A `styletx-server` child process; a thread reads its stderr log as it comes.

    `lines` holds every stderr line, `events` the JSON log records and `other_lines` the rest;
    `port` comes from the "serving" record. `env` None inherits this process's environment;
    stdin and stdout are closed.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        command: Sequence[str] = SERVER_COMMAND,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            [*command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
        self.metrics_port = metrics_port
        self._port: int | None = None
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.other_lines: list[str] = []
        self.bound = threading.Event()
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()

    @property
    def port(self) -> int:
        """The bound gRPC port (after `wait_bound` or `wait_serving`)."""
        if self._port is None:
            raise RuntimeError(f"the server has not reported its port:\n{self.tail()}")
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _read_logs(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                self.other_lines.append(line)
                continue
            self.events.append(record)
            if record.get("event") == "serving" and self._port is None:
                self._port = int(record["port"])
                self.bound.set()
        self.bound.set()  # exited: let waiters see it

    def tail(self, count: int = 30) -> str:
        """The last `count` stderr lines, for error messages."""
        return "".join(self.lines[-count:])

    def event(self, name: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """The first log record named `name`, waiting for it up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in list(self.events):
                if record.get("event") == name:
                    return record
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} event; log: {self.events} {self.other_lines[-5:]}")

    def requests(self) -> list[dict[str, Any]]:
        """The request log records so far."""
        return [e for e in list(self.events) if e.get("event") == "request"]

    def wait_bound(self, timeout: float = START_TIMEOUT) -> int | None:
        """The port from the "serving" record; None when the process exited before it."""
        if not self.bound.wait(timeout):
            raise TimeoutError(f"no serving record in {timeout:.0f} s:\n{self.tail()}")
        return self._port

    def health(self, service: str = "", timeout: float = 5.0) -> int:
        """One grpc.health.v1 Check without credentials (as probes send it): the status."""
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            return int(stub.Check(request, timeout=timeout).status)

    def wait_serving(self, timeout: float = START_TIMEOUT, service: str = "") -> None:
        """Wait until the port is bound and health reports SERVING (weights loaded)."""
        deadline = time.monotonic() + timeout
        if self.wait_bound(max(0.0, deadline - time.monotonic())) is None:
            raise RuntimeError(
                f"server exited with {self.process.wait()} before serving:\n{self.tail()}"
            )
        while True:
            try:
                if self.health(service) == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:  # still starting; retried until the deadline
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"server not SERVING:\n{self.tail()}")
            time.sleep(0.2)

    def metrics(self) -> str:
        """The /metrics exposition (the process must have been given `metrics_port`)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def metric(
        self, name: str, where: Callable[[dict[str, str]], bool] | None = None, **labels: str
    ) -> float:
        """The sum of the samples `name` with these `labels` that `where` accepts; 0 if none."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if (
                    sample.name == name
                    and all(sample.labels.get(k) == v for k, v in labels.items())
                    and (where is None or where(sample.labels))
                ):
                    total += sample.value
        return total

    def stylize_requests(self, code: str = "OK") -> float:
        """styletx_requests_total for Stylize calls that ended with `code`."""
        return self.metric(
            "styletx_requests_total",
            lambda labels: "Stylize" in labels.get("method", ""),
            code=code,
        )

    def rss(self) -> int:
        """Resident set of the server process now, bytes."""
        return rss.current_rss(self.process.pid)

    def peak_rss(self) -> int:
        """Peak resident set (VmHWM) of the server process so far, bytes."""
        return rss.peak_rss(self.process.pid)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and its log to be read; the exit code."""
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` if it still runs, wait `timeout` s for it to exit, else kill it; the code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.wait(30)

    def kill(self) -> None:
        """SIGKILL if it still runs (a test's cleanup)."""
        self.stop(signal.SIGKILL, timeout=10)


def start_serving(
    args: Sequence[str],
    *,
    timeout: float = START_TIMEOUT,
    service: str = "",
    command: Sequence[str] = SERVER_COMMAND,
    env: Mapping[str, str] | None = None,
    metrics_port: int | None = None,
) -> ServerProcess:
    """A `ServerProcess` that reports SERVING; stopped again if it does not within `timeout`."""
    server = ServerProcess(args, command=command, env=env, metrics_port=metrics_port)
    try:
        server.wait_serving(timeout, service)
    except BaseException:
        server.stop()
        raise
    return server


def launch(
    weights: Path,
    *extra: str,
    command: Sequence[str] = SERVER_COMMAND,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """A test server: any free port, CPU only, one worker, no warm-up, /metrics on a free port;
    `command` runs another installation's `styletx-server`."""
    metrics_port = free_port()
    env = {**(os.environ if env is None else env), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    args = [
        "--address", "127.0.0.1:0",
        "--metrics-port", str(metrics_port), "--weights", str(weights), "--no-warmup",
        "--workers", "1", *extra,
    ]  # fmt: skip
    return ServerProcess(args, command=command, env=env, cwd=cwd, metrics_port=metrics_port)


def wait_ready(servers: Sequence[ServerProcess], timeout: float = START_TIMEOUT) -> None:
    """Wait until every server has bound its port and reports SERVING (weights loaded)."""
    deadline = time.monotonic() + timeout
    for server in servers:
        server.wait_serving(max(0.0, deadline - time.monotonic()))


def png(width: int, height: int, seed: int) -> bytes:
    """A noise PNG of `width` x `height`."""
    image = Image.effect_noise((width, height), 40 + seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
