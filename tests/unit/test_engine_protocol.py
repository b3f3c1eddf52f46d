"""`Stylizer` and `StylizerPool` are both the `Engine` the server is typed against."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from styletx.engine import Stylizer
from styletx.pool import StylizerPool
from styletx.protocol import Engine
from tests.support.engines import StubEngine, WrappedEngine

ROOT = Path(__file__).resolve().parents[2]
CONSUMER = ROOT / "tests" / "typing" / "engine_consumer.py"

#: An engine one member short: mypy must refuse it where an Engine is expected.
MISSING_MEMBER = """
from styletx.protocol import Engine
from tests.support.engines import StubEngine

class NoCheckFits(StubEngine):
    check_fits = None  # type: ignore[assignment]

engine: Engine = NoCheckFits()
"""


def members() -> list[str]:
    return sorted(name for name in vars(Engine) if not name.startswith("_"))


def test_the_protocol_lists_what_the_server_uses() -> None:
    assert members() == [
        "backend",
        "batch_stats",
        "batch_window",
        "check_fits",
        "device",
        "memory_capacity",
        "memory_info",
        "precision",
        "precision_for",
        "stylize",
        "warmup",
    ]


@pytest.mark.parametrize("cls", [Stylizer, StylizerPool, StubEngine, WrappedEngine])
def test_every_engine_class_has_every_member(cls: type) -> None:
    missing = [name for name in members() if not hasattr(cls, name)]
    assert not missing, f"{cls.__name__} lacks {missing}"


def test_a_stylizer_and_a_pool_are_engines_at_run_time(seeded_weights: Path) -> None:
    stylizer = Stylizer(seeded_weights)
    pool = StylizerPool(seeded_weights, ["CPU:0"])
    for engine in (stylizer, pool, WrappedEngine(stylizer), StubEngine()):
        assert isinstance(engine, Engine), engine
    assert not isinstance(object(), Engine)


def test_mypy_accepts_both_engines_and_refuses_one_member_short(tmp_path: Path) -> None:
    short = tmp_path / "short.py"
    short.write_text(MISSING_MEMBER)
    command = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache")]
    completed = subprocess.run(
        [*command, "--follow-imports", "silent", str(CONSUMER), str(short)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in completed.stdout.splitlines() if ": error:" in line]
    assert all(line.startswith(str(short)) for line in errors), completed.stdout
    assert any("incompatible types in assignment" in line.lower() for line in errors), (
        completed.stdout + completed.stderr
    )
