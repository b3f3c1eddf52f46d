"""A client from another stack: Node.js (@grpc/grpc-js) against a real server process.

`tests/interop/node/interop.js` is built from the proto alone (plus google.rpc's status protos
to read `grpc-status-details-bin`, and grpc.health.v1) and runs named checks: the stream and its
event order, the same bytes twice, a deadline, a cancel mid-stream then a next call, errors with
their rich details, GetJob/WatchJob/CancelJob, tokens and tenants, health, parallel calls. Here
its pinned dependencies are installed (`npm ci` from package-lock.json, once), a server is
started on port 0 with seeded weights and a tokens file of two tenants, the script runs once and
each of its checks is a test.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server_process import ServerProcess, launch, png, wait_ready

pytestmark = pytest.mark.slow  # starts a server process and Node

NODE_DIR = Path(__file__).resolve().parents[1] / "interop" / "node"
#: The checks interop.js runs, in its order.
CHECKS = (
    "health", "stream", "same-bytes", "errors", "deadline", "cancel", "queue-full",
    "tenant-quota", "jobs", "tokens", "parallel",
)  # fmt: skip
TOKEN, OTHER_TOKEN = "node-interop-alpha", "node-interop-beta"
# Two tenants; the second may hold one open call, for the TENANT_QUOTA check.
TOKENS_FILE = f"""
[tenants.alpha]
tokens = ["{TOKEN}"]

[tenants.beta]
tokens = ["{OTHER_TOKEN}"]
max_calls = 1
"""
#: One line per check: `ok NAME (1.23 s): detail` or `FAIL NAME (1.23 s): why`.
LINE = re.compile(r"^(ok|FAIL) (\S+) \(([\d.]+) s\): (.*)$")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed (make test installs Debian's nodejs and npm through "
            "tools/system_tools.sh when it runs as root)"
        )
    return path


def pinned(lockfile: dict[str, object]) -> dict[str, tuple[object, object]]:
    """Each installed package's path, version and integrity in an npm lockfile."""
    packages = lockfile.get("packages")
    assert isinstance(packages, dict)
    return {
        path: (entry.get("version"), entry.get("integrity"))
        for path, entry in packages.items()
        if path  # "" is the project itself
    }


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with the locked dependencies installed in tests/interop/node/."""
    node, npm = tool("node"), tool("npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major, minor = (int(part) for part in version.stdout.strip().lstrip("v").split(".")[:2])
    assert (major, minor) >= (18, 3), f"interop.js needs node >= 18.3, found {version.stdout}"
    lock = NODE_DIR / "package-lock.json"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    with lock.open("rb") as held:  # one `npm ci` at a time in this folder
        fcntl.flock(held, fcntl.LOCK_EX)
        want = pinned(json.loads(lock.read_text()))
        if not installed.exists() or pinned(json.loads(installed.read_text())) != want:
            # From npm's cache when it has them (offline after the first run); no install
            # scripts: nothing here builds anything.
            done = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return node


@pytest.fixture(scope="module")
def server(
    seeded_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One worker, three queue slots, two tenants."""
    tokens = tmp_path_factory.mktemp("node-interop") / "tokens.toml"
    tokens.write_text(TOKENS_FILE)
    process = launch(seeded_weights, "--auth-tokens-file", str(tokens), "--queue-size", "3")
    try:
        wait_ready([process])
        yield process
    finally:
        process.stop()


@dataclass(frozen=True)
class NodeRun:
    returncode: int
    #: Each check's outcome and its detail (or why it failed), in the order they ran.
    results: dict[str, tuple[bool, str]]
    output: str


@pytest.fixture(scope="module")
def node_run(node: str, server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> NodeRun:
    from google.rpc import status_pb2  # type: ignore[import-untyped]

    googleapis = Path(status_pb2.__file__).parents[2]  # site-packages: google/rpc/status.proto
    assert (googleapis / "google" / "rpc" / "status.proto").exists(), googleapis
    images = tmp_path_factory.mktemp("node-images")
    content, style = images / "content.png", images / "style.png"
    content.write_bytes(png(48, 36, 1))
    style.write_bytes(png(32, 32, 2))
    command = [
        node, "interop.js", "--server", server.address, "--token", TOKEN,
        "--other-token", OTHER_TOKEN, "--googleapis", str(googleapis),
        "--content", str(content), "--style", str(style), "--check-timeout", "60",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"interop.js ran over 600 s:\n{expired.stdout!r}\n{expired.stderr!r}")
    results: dict[str, tuple[bool, str]] = {}
    for line in done.stdout.splitlines():
        if match := LINE.match(line):
            results[match[2]] = (match[1] == "ok", line)
    output = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-6000:]}\nserver:\n{server.tail(20)}"
    return NodeRun(done.returncode, results, output)


@pytest.mark.parametrize("name", CHECKS)
def test_node_check(node_run: NodeRun, name: str) -> None:
    passed, line = node_run.results.get(name, (False, f"{name} did not run"))
    assert passed, f"{line}\n\n{node_run.output}"


def test_node_ran_every_check_and_exit_code_agrees(node_run: NodeRun) -> None:
    assert tuple(node_run.results) == CHECKS, node_run.output
    all_passed = all(passed for passed, _ in node_run.results.values())
    assert node_run.returncode == (0 if all_passed else 1), node_run.output


def test_the_server_survived_and_answered_no_call_with_a_fault(
    node_run: NodeRun, server: ServerProcess
) -> None:
    assert server.process.poll() is None, server.tail()
    records = server.requests()
    faults = [r for r in records if r.get("code") in {"INTERNAL", "UNKNOWN"}]
    assert not faults, faults
    # The Node client's x-request-id reached the server's log.
    assert any(str(r.get("request_id", "")).startswith("node-interop-") for r in records)
