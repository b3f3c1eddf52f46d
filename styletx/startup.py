"""Start the framework quietly: its C++ start-up notices become log records, not raw stderr.

TensorFlow writes notices through absl before logging is initialised ("oneDNN custom operations
are on", "Could not find cuda drivers", "failed call to cuInit" on a machine without a GPU), and
TF_CPP_MIN_LOG_LEVEL does not reach them. In a command-line tool they bury the output; in the
server they break the one-JSON-object-per-line log. The entry points therefore import the
framework and probe its devices once inside `framework_notices_to_log()`, which captures file
descriptor 2 meanwhile and turns each notice into a log record (DEBUG for absl's INFO lines,
INFO for its warnings and errors, since on a GPU node a failed cuInit is the diagnosis). Lines
that are not absl notices (Python warnings, tracebacks) go back to stderr unchanged.

Before that import, `quiet_environment()` sets `QUIET_ENVIRONMENT`'s defaults (never a variable
the user set): the C++ logging after start-up, outside the capture, and that of child processes
then shows errors only. Everything that may be the first to import the framework goes through
this module: the entry points (`load_framework`), and the weights commands that build a model
only sometimes (`ensure_framework`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from styletx.backends.base import Backend

log = logging.getLogger(__name__)

#: Environment defaults applied before the framework's first import. TF_CPP_MIN_LOG_LEVEL=2 keeps
#: TensorFlow's and XLA's (and JAX's) C++ logging to errors once set up; TensorFlow reads it at
#: import, so it must be set before, and child processes inherit it. A value already set wins
#: (the images set 1, to see warnings).
QUIET_ENVIRONMENT: dict[str, str] = {"TF_CPP_MIN_LOG_LEVEL": "2"}

#: absl's own line format: severity letter, MMDD, time, thread id, file:line] message.
_ABSL_LINE = re.compile(
    r"^(?P<severity>[IWEF])\d{4} [\d:.]+ +\d+ (?P<source>[\w./-]+:\d+)\] (?P<text>.*)$"
)
_ABSL_PREAMBLE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
)


#: Lines Python itself writes (warnings, tracebacks): never taken for a notice's continuation.
_PYTHON_LINE = re.compile(r"^(Traceback |  File |\S+:\d+: \w*Warning: )")


def _relay(captured: str) -> None:
    """Log absl notices from `captured`; write every other line back to stderr.

    A notice may run over several lines: lines after it that are neither absl's nor Python's
    belong to it.
    """
    passthrough: list[str] = []
    notices: list[tuple[str, str, list[str]]] = []  # severity, source, lines
    current: list[str] | None = None
    for line in captured.splitlines():
        if line == _ABSL_PREAMBLE:
            current = None
            continue
        notice = _ABSL_LINE.match(line)
        if notice is not None:
            current = [notice["text"]]
            notices.append((notice["severity"], notice["source"], current))
        elif current is not None and line.strip() and not _PYTHON_LINE.match(line):
            current.append(line.strip())
        else:
            current = None
            passthrough.append(line)
    for severity, source, lines in notices:
        level = logging.DEBUG if severity == "I" else logging.INFO
        log.log(level, "framework: %s", " ".join(lines), extra={"source": source})
    if passthrough:
        sys.stderr.write("\n".join(passthrough) + "\n")
        sys.stderr.flush()


@contextlib.contextmanager
def framework_notices_to_log() -> Iterator[None]:
    """Capture file descriptor 2 for the block and relay it through `_relay` afterwards.

    Process-wide (file descriptors are): use it at start-up, before other threads write to stderr.
    Whatever the block raises, the captured text is relayed first, so nothing is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            _relay(capture.read().decode("utf-8", errors="replace"))


def quiet_environment() -> None:
    """Set each unset (or empty) variable of `QUIET_ENVIRONMENT` to its default.

    Effective only before the framework is imported; the variables the user set are kept.
    """
    for name, value in QUIET_ENVIRONMENT.items():
        if not os.environ.get(name):
            os.environ[name] = value


def load_framework(backend: str | None = None) -> Backend:
    """Import Keras and its framework for `backend` (None: the selected one) and probe its
    devices, with the framework's start-up notices sent to the log."""
    from styletx import backends

    quiet_environment()
    with framework_notices_to_log():
        found = backends.load(backend)
        found.accelerators()
    return found


def ensure_framework() -> None:
    """`load_framework()` unless Keras is imported already (its notices are out by then).

    For code that builds a model only on some paths (a weights download, a check of a weights
    file) and may be the first in the process to do so: the framework then starts as quietly as
    at the entry points. A process that started it already pays nothing, and its stderr is not
    captured again while other threads may be writing to it.
    """
    if "keras" not in sys.modules:
        load_framework()
