"""`make image-test`: the built CPU image run as Kubernetes runs it (uid 10001, read-only root, a
writable /tmp, no capabilities), driven from the host: health over grpc.health.v1, one job through
the SDK, /metrics, then SIGTERM during a job: the job finishes, the server drains and exits 0."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from styletx_client import Progress, Result, StyleTransferClient
from tests.support import containers
from tests.support.server_process import free_port

pytestmark = pytest.mark.container

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONTENT = EXAMPLES / "content_chelsea.png"
STYLE = EXAMPLES / "style_starry_night.jpg"
#: Start-up on two busy cores: Python, TensorFlow, the weights and the warm-up job.
START_TIMEOUT = 300.0
GRACE_SECONDS = 120


@dataclass(frozen=True)
class Container:
    name: str
    address: str
    metrics_url: str

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def log_events(self) -> list[dict[str, object]]:
        events = []
        for line in containers.logs(self.name).splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    image = containers.image_ref()
    found = containers.run("image", "inspect", image, check=False)
    assert found.returncode == 0, f"no image {image}: run `make image` first"
    port, metrics_port = free_port(), free_port()
    name = f"styletx-image-test-{uuid.uuid4().hex[:8]}"
    containers.run(
        "run", "--detach", "--name", name,
        # What the Deployment's securityContext and emptyDir give the pod.
        "--user", "10001:10001", "--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=1g",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--publish", f"127.0.0.1:{port}:50051", "--publish", f"127.0.0.1:{metrics_port}:9090",
        "--env", f"STYLETX_GRACE_PERIOD={GRACE_SECONDS}",
        image,
    )  # fmt: skip
    try:
        yield Container(name, f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        containers.run("rm", "--force", name, check=False, timeout=60)


def test_image_metadata() -> None:
    image = containers.image_ref()
    inspected = json.loads(containers.run("image", "inspect", image).stdout)[0]
    config = inspected.get("Config") or inspected["config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == containers.version()
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["styletx-server"]
    # No pip in the runtime: nothing can be installed into a running pod.
    no_pip = containers.run(
        "run", "--rm", "--entrypoint", "python", image, "-m", "pip", "--version", check=False
    )
    assert no_pip.returncode != 0 and "No module named pip" in no_pip.stderr


def _layers(image: str) -> list[tuple[int, str]]:
    """(bytes, created by) of each layer of `image`, newest first; podman's JSON or docker's."""
    out = containers.run("history", "--no-trunc", "--format", "json", image).stdout.strip()
    if out.startswith("["):
        return [(int(h["size"]), str(h.get("CreatedBy", ""))) for h in json.loads(out)]
    out = containers.run(
        "history", "--no-trunc", "--human=false", "--format", "{{json .}}", image
    ).stdout
    return [(int(h["Size"]), str(h["CreatedBy"])) for h in map(json.loads, out.splitlines()) if h]


def test_third_party_packages_sit_in_a_layer_below_the_projects_files() -> None:
    """A commit rebuilds only the layers above the third-party one (deploy/docker/
    requirements.txt): megabytes per build in the image store, not gigabytes."""
    layers = _layers(containers.image_ref())
    largest = max(range(len(layers)), key=lambda n: layers[n][0])
    size, created_by = layers[largest]
    assert size > 1e9 and "-r deploy/docker/requirements.txt" in created_by, layers[largest]
    above = sum(s for s, _ in layers[:largest])
    assert above < 100e6, f"{above / 1e6:.0f} MB above the third-party layer"


def test_runs_as_kubernetes_runs_it_and_drains_on_sigterm(container: Container) -> None:
    containers.wait_serving(container.address, START_TIMEOUT, alive=[container.name])

    # The server is PID 1 of the container, as uid and gid 10001, on a read-only root.
    status = containers.run("exec", container.name, "cat", "/proc/1/status").stdout
    assert "\nUid:\t10001\t10001\t10001\t10001\n" in status, status
    assert "\nGid:\t10001\t" in status, status
    cmdline = containers.run("exec", container.name, "cat", "/proc/1/cmdline").stdout
    assert "styletx-server" in cmdline
    denied = containers.run("exec", container.name, "touch", "/opt/venv/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    containers.run("exec", container.name, "touch", "/tmp/writable")

    with StyleTransferClient(container.address, timeout=300) as client:
        result = client.stylize(CONTENT, STYLE, preset="fast", size=64, max_evaluations=5, seed=1)
    assert (result.width, result.height) == (64, 43)
    assert result.image_bytes.startswith(b"\x89PNG")

    metrics = container.metrics()
    ok = sum(
        value
        for (name, labels), value in metrics.items()
        if name == "styletx_requests_total" and ("code", "OK") in labels
    )
    assert ok == 1
    info = [labels for (name, labels), _ in metrics.items() if name == "styletx_build_info"]
    assert info and ("version", containers.version()) in info[0]

    # SIGTERM while a job runs: it finishes, the server drains and exits 0.
    progressed = threading.Event()
    outcome: list[Result | BaseException] = []

    def long_job() -> None:
        def on_event(event: object) -> None:
            if isinstance(event, Progress):
                progressed.set()

        try:
            with StyleTransferClient(container.address, timeout=300) as client:
                outcome.append(
                    client.stylize(
                        CONTENT, STYLE, size=96, max_evaluations=40, seed=2, on_event=on_event
                    )
                )
        except BaseException as exc:  # reported by the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=long_job)
    worker.start()
    assert progressed.wait(120), containers.logs(container.name)
    signalled = time.monotonic()
    containers.run("kill", "--signal", "TERM", container.name)
    worker.join(GRACE_SECONDS)
    assert outcome and isinstance(outcome[0], Result), outcome
    assert outcome[0].evaluations == 40

    exit_code = containers.run("wait", container.name, timeout=GRACE_SECONDS + 30).stdout.strip()
    assert exit_code == "0", containers.logs(container.name)
    assert time.monotonic() - signalled < GRACE_SECONDS
    events = [event["event"] for event in container.log_events()]
    assert events.index("shutdown_signal") < events.index("draining") < events.index("drained")
    assert events[-1] == "stopped"
