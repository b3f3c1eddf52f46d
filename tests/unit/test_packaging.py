"""The three distributions move together: one version, and each pins the API of that version;
the API's wheel carries the proto of protos/."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The proto under protos/, and where the API distribution ships it.
PROTO = "styletx/v1/style_transfer.proto"
PACKAGED = "styletx_api/v1/style_transfer.proto"
VERSION_FILES = {
    "styletx-server": ROOT / "styletx" / "__init__.py",
    "styletx-client": ROOT / "client" / "styletx_client" / "_version.py",
    "styletx-api": ROOT / "api" / "styletx_api" / "__init__.py",
}
PROJECTS = {
    "styletx-server": ROOT / "pyproject.toml",
    "styletx-client": ROOT / "client" / "pyproject.toml",
    "styletx-api": ROOT / "api" / "pyproject.toml",
}


def version_of(path: Path) -> str:
    found = re.search(r'^__version__ = "(.+)"$', path.read_text(), re.MULTILINE)
    assert found, path
    return found.group(1)


def test_one_version_and_each_pins_the_api_of_it() -> None:
    versions = {name: version_of(path) for name, path in VERSION_FILES.items()}
    assert len(set(versions.values())) == 1, versions
    (version,) = set(versions.values())
    for name, path in PROJECTS.items():
        project = tomllib.loads(path.read_text())["project"]
        assert project["name"] == name
        assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
        assert (path.parent / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
        if name != "styletx-api":
            assert f"styletx-api=={version}" in project["dependencies"], name
        # The server and the SDK depend on the API, never on each other.
        other = {"styletx-server": "styletx-client", "styletx-client": "styletx-server"}.get(name)
        assert not any(dep.startswith(str(other)) for dep in project["dependencies"]), name


def _build(project: Path, outdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m build` of `project` with this interpreter's setuptools (no download)."""
    return subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", *args, "--outdir", str(outdir), project],
        cwd=project.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _checkout_copy(dest: Path, *names: str) -> Path:
    """Copies of the checkout's `names` in `dest` (the build leaves nothing in the checkout)."""
    skip = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")
    for name in names:
        shutil.copytree(ROOT / name, dest / name, ignore=skip)
    return dest


def test_the_api_wheel_and_sdist_carry_protos_proto(tmp_path: Path) -> None:
    """protos/ is the proto's one source: the API's sdist takes it, and the wheel built from that
    sdist (what `python -m build` and the release do) ships it beside the generated code."""
    src = _checkout_copy(tmp_path / "src", "api", "protos")
    dist = tmp_path / "dist"
    built = _build(src / "api", dist)
    assert built.returncode == 0, built.stdout + built.stderr
    source = (ROOT / "protos" / PROTO).read_bytes()
    (sdist,) = dist.glob("styletx_api-*.tar.gz")
    with tarfile.open(sdist) as archive:
        (member,) = [m for m in archive.getmembers() if m.name.endswith(f"/{PACKAGED}")]
        packed = archive.extractfile(member)
        assert packed is not None and packed.read() == source
    (wheel,) = dist.glob("styletx_api-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(PACKAGED) == source
        (record,) = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
        assert f"{PACKAGED}," in archive.read(record).decode()
        assert "styletx_api/wire.py" in archive.namelist()


def test_the_api_build_without_protos_says_what_is_missing(tmp_path: Path) -> None:
    src = _checkout_copy(tmp_path / "src", "api")
    built = _build(src / "api", tmp_path / "dist", "--sdist")
    assert built.returncode != 0
    assert "style_transfer.proto is missing" in built.stdout + built.stderr
