"""The SDK's job calls and the CLI: `job get|watch|cancel KEY`, and Ctrl-C during `stylize`
cancelling the job (SIGINT to a real `styletx-client` process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_client.cli import EXIT_NOT_FOUND, main
from styletx_server.jobs.job import scoped_key
from tests.integration.conftest import (
    SIZE,
    WAIT,
    Consumer,
    GatedStylizer,
    ServerFactory,
    make_request,
    png,
    wait_for,
)


def test_job_get_watch_and_cancel_commands(
    stylizer: Stylizer,
    server_factory: ServerFactory,
    stub_for: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated)
    address = f"127.0.0.1:{server.port}"
    stub = stub_for(server)  # type: ignore[operator]
    running = Consumer(stub, make_request(request_key="cli-a"))
    assert gated.paused.wait(WAIT)
    wait_for(lambda: "progress" in running.kinds())
    assert main(["job", "get", "cli-a", "--server", address]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cli-a: running; iteration ")

    gated.release()
    output = tmp_path / "watched.png"
    assert main(["job", "watch", "cli-a", "--server", address, "-q", "-o", str(output)]) == 0
    running.join()  # the original stream may get the result just after the watcher
    assert output.read_bytes() == running.events[-1].result.image.data
    assert "cli-a: done" in capsys.readouterr().out

    saved = tmp_path / "got.png"
    assert main(["job", "get", "cli-a", "--server", address, "-o", str(saved)]) == 0
    assert saved.read_bytes() == output.read_bytes()
    assert "cli-a: done;" in capsys.readouterr().out

    assert main(["job", "cancel", "cli-a", "--server", address]) == 0
    assert capsys.readouterr().out == "cli-a: done\n"

    assert main(["job", "get", "nobody", "--server", address]) == EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert "no such job" in err and "--result-ttl" in err


def test_ctrl_c_during_stylize_cancels_the_job_on_the_server(
    stylizer: Stylizer, server_factory: ServerFactory, tmp_path: Path
) -> None:
    gated = GatedStylizer(stylizer)
    # Without CancelJob the job would keep running for the whole --linger after the stream closed.
    server = server_factory(engine=gated, linger=WAIT)
    content, style = tmp_path / "c.png", tmp_path / "s.png"
    content.write_bytes(png(48, 64, 1))
    style.write_bytes(png(40, 40, 2))
    command = [
        sys.executable, "-m", "styletx_client.cli", "stylize", str(content), str(style),
        "-o", str(tmp_path / "o.png"), "-q", "--server", f"127.0.0.1:{server.port}",
        "--request-key", "interrupted-1", "--size", str(SIZE), "--max-evaluations", "1000",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert gated.paused.wait(WAIT), "the job never started"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "job interrupted-1 was cancelled" in err
    record = server.jobs.ended.get(scoped_key("default", "interrupted-1"))
    assert record is not None and record.state == pb.JOB_STATE_CANCELLED
    wait_for(lambda: server.admission.running == 0)
    assert gated.evaluations_at_pause is not None
    assert stylizer.evaluations_total - gated.evaluations_at_pause <= 1
    assert not (tmp_path / "o.png").exists()
