"""Hand the C heap's free pages back to the operating system after a job (glibc `malloc_trim`).

TensorFlow's oneDNN builds allocate tensors of 4 KiB and more from a BFC pool that keeps every
page it ever held: one 1024 px job left a process at 4.2 GiB resident for good (0.9 GiB before).
`prefer_system_allocator()` (run when `styletx.backends` is imported, before any framework) routes
them to the C heap instead, where `trim()` returns them after the job: 0.9 GiB again. The price:
glibc maps every block over 32 MiB afresh, so a job of 512 px or more faults its largest
activations in at each evaluation (about 15 % more CPU per evaluation at 512 px; nothing
measurable at 260 px, whose tensors stay under 32 MiB). Keeping those pages instead (one arena,
no per-block mappings) removed the faults but fragmented the heap: a 1024 px job peaked at
6.9 GiB instead of 3.7. `TF_ONEDNN_USE_SYSTEM_ALLOCATOR=0` keeps TensorFlow's pool (large jobs
faster, their memory kept for good: size the pod for it).

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
from collections.abc import Callable

log = logging.getLogger(__name__)


#: TensorFlow's switch from its oneDNN BFC pool to the C heap for CPU tensors (read once, at
#: TensorFlow's first CPU allocation); "0" keeps the pool.
SYSTEM_ALLOCATOR_ENV = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"


def prefer_system_allocator() -> None:
    """Have TensorFlow allocate CPU tensors from the C heap (unless the environment says
    otherwise), so the memory of a large job can be given back; a no-op once it allocated."""
    os.environ.setdefault(SYSTEM_ALLOCATOR_ENV, "1")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def trim() -> bool:
    """Return the heap's free pages to the OS; False where the C library cannot."""
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return False
    started = time.perf_counter()
    malloc_trim(0)
    log.debug("heap trimmed", extra={"seconds": round(time.perf_counter() - started, 4)})
    return True


__all__ = ["SYSTEM_ALLOCATOR_ENV", "prefer_system_allocator", "trim"]
