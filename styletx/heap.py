"""Hand the C heap's free pages back to the operating system after a job (glibc `malloc_trim`).

TensorFlow's oneDNN builds allocate tensors of 4 KiB and more from a BFC pool that keeps every
page it ever held: one 1024 px job left a process at 4.2 GiB resident for good (0.9 GiB before).
`prefer_system_allocator()` (run when `styletx.backends` is imported, before any framework) routes
them to the C heap instead, where `trim()` returns them after the job: 0.9 GiB again.

A job allocates activations of its own shapes; freed, they leave holes that glibc keeps for
reuse but never unmaps, so the process' resident memory (what a container limit and the
OOM killer see) grows with every new image shape although the live data does not: 50 aspect
ratios left about 100 MiB of such holes (bench/shape_bench.py). `malloc_trim(0)` returns them
(Linux `madvise`), a few milliseconds after a job of seconds. Elsewhere (musl, macOS) it is a
no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import time

log = logging.getLogger(__name__)


#: TensorFlow's switch from its oneDNN BFC pool to the C heap for CPU tensors (read once, at
#: TensorFlow's first CPU allocation); "0" keeps the pool.
SYSTEM_ALLOCATOR_ENV = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"
#: glibc `mallopt` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc only: raises elsewhere)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def prefer_system_allocator() -> None:
    """Have TensorFlow allocate CPU tensors from the C heap (unless the environment says
    otherwise), so the memory of a large job can be given back; a no-op once it allocated."""
    os.environ.setdefault(SYSTEM_ALLOCATOR_ENV, "1")
    if os.environ[SYSTEM_ALLOCATOR_ENV] == "1":
        keep_pages_within_jobs()


def keep_pages_within_jobs() -> bool:
    """Make glibc keep freed pages until `trim()`: one arena, no chunk of its own mapping, no
    trimming on `free`. Left to itself, glibc unmaps a thread arena's heap and each large
    tensor's mapping as soon as they are free, so every evaluation faulted its activations in
    again (251,000 page faults and 14 % more CPU time per evaluation at 512 px than the BFC
    pool; about 3,700 and the same time with these). False where the C library cannot."""
    libc = _libc()
    if libc is None:
        return False
    return all(
        libc.mallopt(option, value) == 1
        for option, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
    )


def trim() -> bool:
    """Return the heap's free pages to the OS; False where the C library cannot."""
    libc = _libc()
    if libc is None:
        return False
    started = time.perf_counter()
    libc.malloc_trim(0)
    log.debug("heap trimmed", extra={"seconds": round(time.perf_counter() - started, 4)})
    return True


__all__ = ["SYSTEM_ALLOCATOR_ENV", "keep_pages_within_jobs", "prefer_system_allocator", "trim"]
