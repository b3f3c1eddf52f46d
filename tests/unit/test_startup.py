"""styletx.startup: the framework's absl start-up notices become log records, nothing else is
swallowed, the quiet environment defaults never override the user's, and the real entry points
print none of the notices."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from styletx import startup

NOTICES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796481183.341448       6 port.cc:153] oneDNN custom operations are on.\n"
    b"I0000 00:00:1796481183.4      7 cpu_feature_guard.cc:210] This TensorFlow binary is "
    b"optimized.\nTo enable the following instructions: AVX2 FMA, rebuild TensorFlow.\n"
    b"E0000 00:00:1796481186.172507       6 cuda_platform.cc:52] failed call to cuInit: "
    b"UNKNOWN ERROR (303)\n"
)


def test_notices_become_log_records_and_other_lines_stay_on_stderr(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="styletx.startup")
    with startup.framework_notices_to_log():
        os.write(2, NOTICES)
        os.write(2, b"/app/x.py:3: UserWarning: keep me\n")
        os.write(2, b"plain text from a library\n")
    assert (
        capfd.readouterr().err == "/app/x.py:3: UserWarning: keep me\nplain text from a library\n"
    )
    records = [(r.levelno, r.getMessage(), getattr(r, "source", "")) for r in caplog.records]
    assert records == [
        (logging.DEBUG, "framework: oneDNN custom operations are on.", "port.cc:153"),
        (
            logging.DEBUG,
            "framework: This TensorFlow binary is optimized. To enable the following "
            "instructions: AVX2 FMA, rebuild TensorFlow.",
            "cpu_feature_guard.cc:210",
        ),
        # Errors stay visible at INFO: on a GPU node a failed cuInit is the diagnosis.
        (
            logging.INFO,
            "framework: failed call to cuInit: UNKNOWN ERROR (303)",
            "cuda_platform.cc:52",
        ),
    ]


def test_what_a_failing_block_wrote_is_relayed_before_the_error(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ImportError, match="libcudart"), startup.framework_notices_to_log():
        os.write(2, b'Traceback (most recent call last):\n  File "x.py", line 1\n')
        raise ImportError("libcudart.so.12: cannot open shared object file")
    assert capfd.readouterr().err == 'Traceback (most recent call last):\n  File "x.py", line 1\n'
    os.write(2, b"after\n")  # file descriptor 2 is stderr again
    assert capfd.readouterr().err == "after\n"


def test_quiet_environment_sets_defaults_and_keeps_what_the_user_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert startup.QUIET_ENVIRONMENT["TF_CPP_MIN_LOG_LEVEL"] == "2"  # errors stay visible
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    startup.quiet_environment()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # someone debugging TensorFlow
    startup.quiet_environment()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "")  # `VAR= cmd`: no value, the default applies
    startup.quiet_environment()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


def test_ensure_framework_loads_it_only_when_keras_is_not_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str | None] = []
    monkeypatch.setattr(startup, "load_framework", lambda backend=None: calls.append(backend))
    monkeypatch.setitem(sys.modules, "keras", sys)  # any module: "already imported"
    startup.ensure_framework()
    assert calls == []
    monkeypatch.delitem(sys.modules, "keras")
    startup.ensure_framework()
    assert calls == [None]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["info"], "backend: tensorflow"),
        # Builds a VGG16 to verify the file: the framework starts inside the weights module.
        (["weights", "info"], "parameters: 14714688"),
    ],
)
def test_the_engine_cli_prints_no_framework_notices(
    seeded_weights: Path, command: list[str], expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", "styletx", *command, "--weights", str(seeded_weights)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert expected in done.stdout.splitlines()
