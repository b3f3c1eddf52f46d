"""The three distributions move together: one version, and each pins the API of that version."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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
