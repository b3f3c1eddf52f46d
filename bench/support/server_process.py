"""`styletx-server` child processes for benchmarks: start one with the exact arguments a
benchmark needs, read its JSON log, its /metrics and its memory, stop it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.support import rss

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
        metrics_port: int | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            [*command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else dict(env),
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
        """SIGKILL if it still runs."""
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
