"""A real server killed and restarted under an SDK call.

The SDK's default policy rides out the restart (connection refused, then LOADING) and re-attaches
by key; the job, recomputed by the new process, gives the same bytes the old process gave and
stored for the same request: same request, same bytes, whatever ran before.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from styletx_client import Progress, Result, StyleTransferClient
from tests.support.server_process import ServerProcess, free_port, launch, png, wait_ready

pytestmark = pytest.mark.slow  # server processes, TensorFlow imports included

OPTIONS: dict[str, Any] = {"size": 56, "max_evaluations": 60, "seed": 7}


def _server(weights: Path, port: int) -> ServerProcess:
    return launch(weights, "--address", f"127.0.0.1:{port}", "--stall-timeout", "5")


def test_the_sdk_rides_out_a_restart_and_the_recomputed_job_gives_the_same_bytes(
    seeded_weights: Path,
) -> None:
    port = free_port()
    # A content image of a shape never seen before (57 x 40 at size 56: not on the 16 px step).
    content, style = png(57, 40, 1), png(32, 40, 2)
    first = _server(seeded_weights, port)
    second: ServerProcess | None = None
    try:
        wait_ready([first])
        with StyleTransferClient(first.address, timeout=180) as client:
            stored = client.stylize(content, style, request_key="reference", **OPTIONS)
            again = client.stylize(content, style, request_key="reference", **OPTIONS)
            assert again.image_bytes == stored.image_bytes  # attached to the stored result

            outcome: list[Result | BaseException] = []
            progressed = threading.Event()

            def on_event(event: object) -> None:
                if isinstance(event, Progress):
                    progressed.set()

            def run() -> None:
                try:
                    outcome.append(
                        client.stylize(
                            content, style, request_key="restarted", on_event=on_event, **OPTIONS
                        )
                    )
                except BaseException as exc:  # reported by the assertions below
                    outcome.append(exc)

            caller = threading.Thread(target=run)
            caller.start()
            assert progressed.wait(120)
            killed = time.monotonic()
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(30)
            # An outage of seconds whatever the machine's speed (a fast one restarts in 2 s).
            time.sleep(max(0.0, 3.5 - (time.monotonic() - killed)))
            second = _server(seeded_weights, port)
            wait_ready([second])
            outage = time.monotonic() - killed
            caller.join(180)
            assert not caller.is_alive()
        # Refused, then loading: seconds of UNAVAILABLE, which the old policy's retry budget
        # (5 failures) gave up on; the default rides out 30 s.
        assert outage > 3, outage
        assert len(outcome) == 1 and isinstance(outcome[0], Result), outcome
        assert outcome[0].image_bytes == stored.image_bytes
        # The stored key is gone with the old process: recomputed, the same bytes again.
        with StyleTransferClient(second.address, timeout=180) as client:
            recomputed = client.stylize(content, style, request_key="reference", **OPTIONS)
        assert recomputed.image_bytes == stored.image_bytes
    finally:
        first.stop()
        if second is not None:
            second.stop()
