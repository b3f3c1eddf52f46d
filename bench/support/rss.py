"""Resident memory of a process, from the kernel's /proc/<pid>/status (stdlib only).

Stdlib only so that fresh probe processes (benchmarks on a bare GPU machine, `python -c`
scripts) can import it without pulling in anything else.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def _status_bytes(field: str, pid: int | None) -> int | None:
    """`field` of /proc/<pid>/status (this process when `pid` is None) in bytes; None if absent."""
    status = Path(f"/proc/{'self' if pid is None else pid}/status")
    try:
        text = status.read_text(encoding="ascii")
    except FileNotFoundError:
        if pid is not None:
            raise
        return None  # no /proc (not Linux)
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == field:
            return int(rest.split()[0]) * 1024  # the kernel reports kB
    return None


def peak_rss(pid: int | None = None) -> int:
    """Peak resident set (VmHWM) of `pid` or this process, in bytes.

    VmHWM restarts at exec, so a fresh child measures only itself; `ru_maxrss`, the fallback
    where there is no /proc, would keep the high-water mark of the parent that forked it.
    """
    peak = _status_bytes("VmHWM", pid)
    if peak is not None:
        return peak
    if pid is not None:
        raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes there, KiB on Linux


def current_rss(pid: int | None = None) -> int:
    """Resident set now (VmRSS) of `pid` or this process, in bytes."""
    now = _status_bytes("VmRSS", pid)
    if now is None:
        raise RuntimeError(f"no VmRSS in /proc/{'self' if pid is None else pid}/status")
    return now
