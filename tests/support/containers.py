"""The container engine (docker or podman) and the built image, for `make image-test` and
`make deploy-test` (tests marked `container`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from styletx_client import ServingStatus, StyleTransferClient

ROOT = Path(__file__).resolve().parents[2]


def version() -> str:
    """The package version, as tools/image.sh reads it for the image tag."""
    text = (ROOT / "styletx" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "(.+)"$', text, re.MULTILINE)
    assert found, "no __version__ in styletx/__init__.py"
    return found.group(1)


def image_ref() -> str:
    """The CPU image under test: $STYLETX_IMAGE, else what `make image` tags."""
    return os.environ.get("STYLETX_IMAGE") or f"localhost/styletx:{version()}-cpu"


def engine() -> str:
    """$ENGINE, else docker where its engine answers, else podman (as tools/container_engine.sh)."""
    if chosen := os.environ.get("ENGINE"):
        return chosen
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return "docker"
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "podman" / "containers.conf"))
    return "podman"


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One engine command; its output is in the assertion message when it fails."""
    done = subprocess.run(
        [engine(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert done.returncode == 0, f"{engine()} {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def wait_serving(address: str, timeout: float, alive: Sequence[str] = ()) -> None:
    """Poll grpc.health.v1 until SERVING; fail early when the container `alive[0]` has exited."""
    deadline = time.monotonic() + timeout
    with StyleTransferClient(address) as client:
        while time.monotonic() < deadline:
            try:
                if client.health(timeout=3) is ServingStatus.SERVING:
                    return
            except Exception:  # not listening yet; retried until the deadline
                pass
            if alive:
                state = run("inspect", "--format", "{{.State.Running}}", alive[0], check=False)
                assert state.stdout.strip() != "false", logs(alive[0])
            time.sleep(1)
    raise AssertionError(f"{address} not SERVING after {timeout} s")


def logs(container: str) -> str:
    done = run("logs", container, check=False)
    return done.stdout + done.stderr
