"""Real `styletx-server` child processes for end-to-end tests (port from the "serving" log)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from styletx_client import ServingStatus, StyleTransferClient

START_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A `styletx-server` child process; `port` comes from its "serving" log line."""

    process: subprocess.Popen[str]
    metrics_port: int
    port: int | None = None
    lines: list[str] = field(default_factory=list)
    bound: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def read_logs(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event") == "serving":
                    self.port = int(record["port"])
                    self.bound.set()
        self.bound.set()  # exited: let waiters see it

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def stylize_requests(self, code: str = "OK") -> float:
        """styletx_requests_total for Stylize calls that ended with `code`."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name == "styletx_requests_total"
                    and "Stylize" in labels.get("method", "")
                    and labels.get("code") == code
                ):
                    total += sample.value
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def launch(
    weights: Path,
    *extra: str,
    command: Sequence[str] = (sys.executable, "-m", "styletx_server"),
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """Start a server on a free port; `command` runs another installation's `styletx-server`."""
    metrics_port = free_port()
    env = {**(os.environ if env is None else env), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    process = subprocess.Popen(
        [
            *command, "--address", "127.0.0.1:0",
            "--metrics-port", str(metrics_port), "--weights", str(weights), "--no-warmup",
            "--workers", "1", *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )  # fmt: skip
    server = ServerProcess(process, metrics_port)
    threading.Thread(target=server.read_logs, daemon=True).start()
    return server


def wait_ready(servers: Sequence[ServerProcess]) -> None:
    """Wait until every server has bound its port and reports SERVING (weights loaded)."""
    deadline = time.monotonic() + START_TIMEOUT
    for server in servers:
        server.bound.wait(max(0.0, deadline - time.monotonic()))
        if server.port is None:
            raise RuntimeError("server did not start:\n" + "".join(server.lines[-30:]))
        with StyleTransferClient(server.address) as client:
            while True:
                try:
                    if client.health(timeout=5) is ServingStatus.SERVING:
                        break
                except Exception:  # still starting; retried until the deadline
                    pass
                if time.monotonic() > deadline or server.process.poll() is not None:
                    raise RuntimeError("server not SERVING:\n" + "".join(server.lines[-30:]))
                time.sleep(0.2)


def png(width: int, height: int, seed: int) -> bytes:
    image = Image.effect_noise((width, height), 40 + seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
