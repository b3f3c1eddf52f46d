"""What users install is what is tested: build the sdists and wheels of the three distributions
from the checkout, install the wheels (not editable) into a fresh virtualenv and run the engine CLI,
the server and the SDK from there, away from the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.support.server_process import launch, png, wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VERSION_FILES = {
    "styletx_server": ROOT / "styletx" / "__init__.py",
    "styletx_client": ROOT / "client" / "styletx_client" / "_version.py",
    "styletx_api": ROOT / "api" / "styletx_api" / "__init__.py",
}

SDK_SCRIPT = """
import sys
import styletx_client
from styletx_client import StyleTransferClient
with StyleTransferClient(sys.argv[1], timeout=120) as client:
    result = client.stylize(sys.argv[2], sys.argv[3], size=32, max_evaluations=3, preset="fast")
result.save(sys.argv[4])
print("client from", styletx_client.__file__)
"""


def clean_env() -> dict[str, str]:
    """The environment without this checkout's virtualenv or import path."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if k not in drop} | {"TF_CPP_MIN_LOG_LEVEL": "2"}


def run(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, f"{args}:\n{completed.stdout}\n{completed.stderr}"
    return completed


def source_files() -> list[str]:
    """The files a clean clone has, plus uncommitted ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return [name for name in listed.stdout.decode().split("\0") if name]


def source_packages(top: Path) -> set[str]:
    """Dotted names of every package (folder with `__init__.py`) under `top`."""
    return {
        ".".join(init.parent.relative_to(top.parent).parts)
        for init in top.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheels: dict[str, Path]
    home: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("installed")
    # A copy of the tree as a clone has it, so the build leaves nothing in the checkout and
    # cannot pick up build/, caches or an editable install's metadata.
    src = tmp / "src"
    for name in source_files():
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    # `python -m build` makes the sdist, then the wheel from the sdist: a file missing from the
    # sdist fails here too.
    for project in (src / "api", src / "client", src):
        run(sys.executable, "-m", "build", "--outdir", dist, project, cwd=tmp, timeout=600)
    wheels = {
        path.name.split("-")[0]: path for path in dist.glob("*.whl")
    }  # distribution (normalised) -> wheel
    assert set(wheels) == set(VERSION_FILES), sorted(dist.iterdir())

    venv = tmp / "venv"
    run(Path(sys.base_prefix) / "bin" / "python3", "-m", "venv", venv, cwd=tmp)
    python = venv / "bin" / "python"
    run(
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-c", ROOT / "requirements" / "lock.txt", *wheels.values(),
        cwd=tmp, timeout=900,
    )  # fmt: skip
    run(python, "-m", "pip", "check", cwd=tmp)
    home = tmp / "home"
    home.mkdir()
    yield Installed(venv, wheels, home)
    # TensorFlow and the rest: ~2.5 GB that CI's image build needs more than a finished test.
    shutil.rmtree(venv, ignore_errors=True)


def test_wheels_ship_every_package_of_the_source_tree(installed: Installed) -> None:
    expected = {
        "styletx_server": source_packages(ROOT / "styletx")
        | source_packages(ROOT / "server" / "styletx_server"),
        "styletx_client": source_packages(ROOT / "client" / "styletx_client"),
        "styletx_api": source_packages(ROOT / "api" / "styletx_api"),
    }
    proto = (ROOT / "protos" / "styletx" / "v1" / "style_transfer.proto").read_bytes()
    for dist, wheel in installed.wheels.items():
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            if dist == "styletx_api":  # protos/' file, taken at build time (api/setup.py)
                assert archive.read("styletx_api/v1/style_transfer.proto") == proto
        shipped = {
            ".".join(Path(name).parent.parts) for name in names if name.endswith("/__init__.py")
        }
        assert shipped == expected[dist], f"{wheel.name}: {sorted(expected[dist] ^ shipped)}"
        assert any(name.endswith("py.typed") for name in names)
        if dist == "styletx_api":  # the proto travels with its generated code
            assert "styletx_api/v1/style_transfer.proto" in names
            assert "styletx_api/v1/style_transfer_pb2.pyi" in names
        assert any("licenses/LICENSE" in name for name in names), names
        assert not any(name.startswith(("tests/", "bench/", "tools/")) for name in names)


def test_versions_match_the_source(installed: Installed) -> None:
    for dist, wheel in installed.wheels.items():
        version = wheel.name.split("-")[1]
        assert f'__version__ = "{version}"' in VERSION_FILES[dist].read_text()
    server_version = installed.wheels["styletx_server"].name.split("-")[1]
    shown = run(installed.bin("styletx-server"), "--version", cwd=installed.home).stdout
    assert shown.startswith(f"styletx-server {server_version}"), shown
    assert run(installed.bin("styletx"), "--version", cwd=installed.home).stdout.strip() == (
        f"styletx {server_version}"
    )


def test_imports_come_from_the_installed_wheels(installed: Installed) -> None:
    probe = run(
        installed.bin("python"),
        "-c",
        "import styletx, styletx.backends.tensorflow, styletx_server.ops.app, styletx_client;"
        "import styletx_api.v1.style_transfer_pb2 as pb;"
        "print(styletx.__file__); print(styletx_server.ops.app.__file__);"
        "print(styletx_client.__file__); print(pb.__file__)",
        cwd=installed.home,
    )
    for path in probe.stdout.split():
        assert Path(path).is_relative_to(installed.venv / "lib"), path


def test_installed_engine_cli_stylizes(installed: Installed, seeded_weights: Path) -> None:
    info = run(installed.bin("styletx"), "info", "--weights", seeded_weights, cwd=installed.home)
    assert "tensorflow" in info.stdout
    content, style = installed.home / "content.png", installed.home / "style.png"
    content.write_bytes(png(40, 30, 1))
    style.write_bytes(png(24, 24, 2))
    out = installed.home / "engine.png"
    run(
        installed.bin("styletx"), "stylize", content, style, "-o", out,
        "--weights", seeded_weights, "--size", "32", "--max-evaluations", "3", "--no-progress",
        cwd=installed.home,
    )  # fmt: skip
    assert max(Image.open(out).size) == 32


def test_installed_server_serves_the_installed_sdk(
    installed: Installed, seeded_weights: Path
) -> None:
    server = launch(
        seeded_weights,
        command=[str(installed.bin("styletx-server"))],
        env=clean_env(),
        cwd=installed.home,
    )
    try:
        wait_ready([server])
        content, style = installed.home / "c.png", installed.home / "s.png"
        content.write_bytes(png(48, 36, 3))
        style.write_bytes(png(32, 32, 4))
        out = installed.home / "sdk.png"
        sdk = run(
            installed.bin("python"), "-c", SDK_SCRIPT, server.address, content, style, out,
            cwd=installed.home,
        )  # fmt: skip
        assert max(Image.open(out).size) == 32
        assert str(installed.venv) in sdk.stdout
        assert server.stylize_requests("OK") == 1
        version = installed.wheels["styletx_server"].name.split("-")[1]
        assert f'version="{version}"' in server.metrics()  # styletx_build_info
    finally:
        server.stop()
    assert server.process.returncode == 0, "".join(server.lines[-20:])
