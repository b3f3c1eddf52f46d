"""`pip install ./api ./client` into a fresh virtualenv without TensorFlow, then stylize through a
real server with both the installed SDK and the installed CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support.server_process import ServerProcess, launch, png, wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

SDK_SCRIPT = """
import sys
from styletx_client import StyleTransferClient
with StyleTransferClient(sys.argv[1], timeout=120) as client:
    result = client.stylize(sys.argv[2], sys.argv[3], size=32, max_evaluations=3)
result.save(sys.argv[4])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"numpy", "scipy", "tensorflow"})
print("heavy:", heavy)
"""


@pytest.fixture(scope="module")
def server(seeded_weights: Path) -> Iterator[ServerProcess]:
    process = launch(seeded_weights)
    try:
        wait_ready([process])
        yield process
    finally:
        process.stop()


def run(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_fresh_venv_install_has_no_ml_stack_and_stylizes(
    server: ServerProcess, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    # The base interpreter, not this virtualenv's, and no system site-packages.
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    created = run(base_python, "-m", "venv", venv, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    # Copies, so the build leaves no build/ or egg-info behind in the checkout. The SDK needs
    # the API distribution (styletx-api) and nothing of the server's; the API's build takes
    # the proto from protos/ beside api/.
    copies = [
        shutil.copytree(
            ROOT / name,
            tmp_path / name,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
        )
        for name in ("api", "client", "protos")
    ]
    sources = copies[:2]
    installed = run(python, "-m", "pip", "install", "--quiet", *sources, cwd=tmp_path, timeout=110)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    for module in ("tensorflow", "numpy", "scipy"):
        probe = run(python, "-c", f"import {module}", cwd=tmp_path)
        assert probe.returncode != 0, f"{module} is importable in the client-only venv"
        assert "ModuleNotFoundError" in probe.stderr

    content, style = tmp_path / "content.png", tmp_path / "style.png"
    content.write_bytes(png(40, 30, 1))
    style.write_bytes(png(24, 24, 2))

    sdk_out = tmp_path / "sdk.png"
    sdk = run(python, "-c", SDK_SCRIPT, server.address, content, style, sdk_out, cwd=tmp_path)
    assert sdk.returncode == 0, sdk.stderr
    assert "heavy: []" in sdk.stdout
    assert max(Image.open(sdk_out).size) == 32

    cli_out = tmp_path / "out" / "cli.png"
    cli = run(
        venv / "bin" / "styletx-client", "stylize", content, style, "-o", cli_out,
        "--server", server.address, "--size", "32", "--max-evaluations", "3", "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert max(Image.open(cli_out).size) == 32
    # --side-by-side without Pillow in this venv: a clear message and exit code 2.
    no_pil = run(
        venv / "bin" / "styletx-client", "stylize", content, style, "-o", cli_out,
        "--server", server.address, "--side-by-side", tmp_path / "sbs.png",
        cwd=tmp_path,
    )  # fmt: skip
    assert no_pil.returncode == 2
    assert "pip install 'styletx-client[pil]'" in no_pil.stderr
