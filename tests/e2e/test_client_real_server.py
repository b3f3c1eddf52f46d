"""The SDK and CLI against real `styletx-server` processes (seeded weights, tiny images).

Also home of the server-process helpers the other client e2e modules import.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from styletx_client import (
    InvalidRequestError,
    Progress,
    Result,
    ServingStatus,
    Started,
    StyleTransferClient,
)
from styletx_client.cli import main as cli_main

needs_server = pytest.mark.skipif(
    importlib.util.find_spec("styletx_server") is None
    or importlib.util.find_spec("styletx_server.__main__") is None,
    reason="styletx_server is not implemented yet",
)
pytestmark = needs_server

START_TIMEOUT = 180.0
TINY = {"size": 32, "max_evaluations": 8}  # enough for a few L-BFGS iterations


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


def launch(weights: Path, *extra: str) -> ServerProcess:
    metrics_port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "styletx_server", "--address", "127.0.0.1:0",
            "--metrics-port", str(metrics_port), "--weights", str(weights), "--no-warmup",
            "--workers", "1", *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
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


@pytest.fixture(scope="module")
def real_server(seeded_weights: Path) -> Iterator[ServerProcess]:
    server = launch(seeded_weights)
    try:
        wait_ready([server])
        yield server
    finally:
        server.stop()


def png(width: int, height: int, seed: int) -> bytes:
    image = Image.effect_noise((width, height), 40 + seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("images")
    content, style = folder / "content.png", folder / "style.png"
    content.write_bytes(png(48, 36, 1))
    style.write_bytes(png(32, 32, 2))
    return content, style


def test_sdk_stylizes_through_the_real_server(
    real_server: ServerProcess, image_files: tuple[Path, Path]
) -> None:
    content, style = image_files
    events: list[object] = []
    with StyleTransferClient(real_server.address, timeout=120) as client:
        out = client.stylize(content, style, on_event=events.append, seed=3, **TINY)  # type: ignore[arg-type]
    assert isinstance(out, Result)
    assert max(out.width, out.height) == 32
    assert Image.open(io.BytesIO(out.image_bytes)).size == (out.width, out.height)
    started = [e for e in events if isinstance(e, Started)]
    assert len(started) == 1
    assert started[0].options.max_evaluations == 8
    assert started[0].options.seed == 3
    assert any(isinstance(e, Progress) for e in events)


def test_real_validation_errors_carry_field_violations(
    real_server: ServerProcess, image_files: tuple[Path, Path]
) -> None:
    content, style = image_files
    with (
        StyleTransferClient(real_server.address) as client,
        pytest.raises(InvalidRequestError) as info,
    ):
        client.stylize(content, style, size=100_000, max_evaluations=3)
    assert any("size" in v.field for v in info.value.field_violations)
    assert info.value.request_id


def test_cli_against_the_real_server(
    real_server: ServerProcess, image_files: tuple[Path, Path], tmp_path: Path
) -> None:
    content, style = image_files
    output, strip, previews = tmp_path / "r.png", tmp_path / "sbs.png", tmp_path / "previews"
    code = cli_main(
        [
            "stylize", str(content), str(style), "-o", str(output), "--server",
            real_server.address, "--size", "32", "--max-evaluations", "8", "--preview-every",
            "1", "--previews", str(previews), "--side-by-side", str(strip), "-q",
        ]
    )  # fmt: skip
    assert code == 0
    result = Image.open(output)
    assert max(result.size) == 32
    assert Image.open(strip).height == result.height
    assert any(previews.iterdir())
    assert cli_main(["health", "--server", real_server.address]) == 0
