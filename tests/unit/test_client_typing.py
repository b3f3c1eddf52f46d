"""mypy --strict accepts the SDK and a consumer using every public call, and rejects misuse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "typing" / "sample_consumer.py"

MISUSE = """
from styletx_client import AsyncStyleTransferClient, Result, StyleTransferClient

def misuse(client: StyleTransferClient, aclient: AsyncStyleTransferClient) -> None:
    client.stylize(b"c", b"s", size="large")
    client.stylize(b"c", b"s", colour="blue")
    client.stylize(b"c", b"s", init="noise")
    client.stylize(42, b"s")
    result: int = client.stylize(b"c", b"s")
    pending: Result = aclient.stylize(b"c", b"s")
"""


def mypy(*paths: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sdk_and_sample_consumer_pass_mypy_strict(tmp_path: Path) -> None:
    completed = mypy(ROOT / "client" / "styletx_client", SAMPLE, cache=tmp_path / "cache")
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_mypy_catches_misuse_of_the_sdk(tmp_path: Path) -> None:
    misuse = tmp_path / "misuse.py"
    misuse.write_text(MISUSE)
    completed = mypy(misuse, cache=tmp_path / "cache")
    assert completed.returncode == 1
    error_lines = {
        int(line.split(":")[1]) for line in completed.stdout.splitlines() if ": error:" in line
    }
    # Every call in misuse() (lines 5-10 of MISUSE) is flagged.
    assert error_lines == set(range(5, 11)), completed.stdout
