"""Start the framework quietly: its C++ start-up notices become log records, not raw stderr.

TensorFlow writes notices through absl before logging is initialised ("oneDNN custom operations
are on", "Could not find cuda drivers", "failed call to cuInit" on a machine without a GPU), and
TF_CPP_MIN_LOG_LEVEL does not reach them. In a command-line tool they bury the output; in the
server they break the one-JSON-object-per-line log. The entry points therefore import the
framework and probe its devices once inside `framework_notices_to_log()`, which captures file
descriptor 2 meanwhile and turns each notice into a log record (DEBUG for absl's INFO lines,
INFO for its warnings and errors, since on a GPU node a failed cuInit is the diagnosis). Lines
that are not absl notices (Python warnings, tracebacks) go back to stderr unchanged.
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


def load_framework(backend: str | None = None) -> Backend:
    """Import Keras and its framework for `backend` (None: the selected one) and probe its
    devices, with the framework's start-up notices sent to the log."""
    from styletx import backends

    with framework_notices_to_log():
        found = backends.load(backend)
        found.accelerators()
    return found
