"""Fair queueing across tenants: start-time fair queueing (SFQ) over one FIFO per tenant.

Each waiting job gets a virtual start tag when it arrives: the later of the queue's virtual time
(the start tag of the job dispatched last) and the finish tag of its tenant's previous job, where
a job's finish tag is its start tag + 1 / its tenant's weight. The tenant whose oldest waiting job
has the smallest start tag goes next (ties: arrival order), among tenants with a job that may
run; its first such job runs, on that oldest job's tag. So a tenant with nothing waiting
gets the current virtual time as its first job's tag, no later than any waiting job's: it is
dispatched next, after at most the one job of another tenant whose tag ties with it. While
tenants are backlogged, each gets jobs in proportion to its weight. Not thread-safe: the
admission queue calls it under its lock.

The clock is exact whatever the weights: a job's cost, 1 / weight, is counted in integer units of
2**-40 (`cost`), and Python integers never round. A float clock could be pushed so far (one job of
a weight of 1e-300 moves it by 1e300) that adding one job no longer changed a tag; every tenant
then ran in arrival order for good. A tenant's last finish tag is forgotten once the clock has
passed it (it no longer holds the tenant back), so tenants that left cost nothing.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Generic, TypeVar

J = TypeVar("J")

#: Virtual-clock units per job of weight 1: a job of weight w costs round(2**40 / w) units.
UNIT = 1 << 40


@functools.lru_cache(maxsize=4096)
def cost(weight: float) -> int:
    """A job's cost on the virtual clock, 1 / `weight` in integer units (at least one); exact
    for any positive finite weight (no float is divided)."""
    if not (math.isfinite(weight) and weight > 0):
        raise ValueError(f"a tenant's weight must be a positive finite number, got {weight!r}")
    return max(1, round(Fraction(UNIT) / Fraction(weight)))


@dataclass
class _Entry(Generic[J]):
    job: J
    tenant: str
    start: int
    finish: int
    seq: int

    @property
    def order(self) -> tuple[int, int]:
        return self.start, self.seq


class FairQueue(Generic[J]):
    """Waiting jobs by tenant; `take` picks the next one fairly among those allowed to run."""

    def __init__(self) -> None:
        self._fifos: dict[str, deque[_Entry[J]]] = {}
        self._entries: dict[int, _Entry[J]] = {}
        self._virtual = 0
        #: Finish tag of each tenant's last dispatched job (its next job starts no earlier), while
        #: it is ahead of the virtual time.
        self._finished: dict[str, int] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[J]:
        """The waiting jobs in the order they would be dispatched if all could run."""
        return iter(self.order())

    def __contains__(self, job: object) -> bool:
        return id(job) in self._entries

    def waiting(self, tenant: str) -> int:
        """Jobs of `tenant` waiting now."""
        fifo = self._fifos.get(tenant)
        return 0 if fifo is None else len(fifo)

    def tenants(self) -> dict[str, int]:
        """Waiting jobs per tenant with any waiting."""
        return {name: len(fifo) for name, fifo in self._fifos.items()}

    def order(self) -> list[J]:
        """Every waiting job, by start tag then arrival."""
        return [e.job for e in sorted(self._entries.values(), key=lambda e: e.order)]

    def remembered(self) -> int:
        """Tenants with no waiting job whose last finish tag is still ahead of the clock."""
        return len(self._finished)

    def push(self, job: J, tenant: str, weight: float) -> None:
        """Add `job` of `tenant` (weight > 0, finite) at the end of its tenant's FIFO."""
        job_cost = cost(weight)  # ValueError before anything changes
        fifo = self._fifos.setdefault(tenant, deque())
        previous = fifo[-1].finish if fifo else self._finished.get(tenant, 0)
        start = max(self._virtual, previous)
        entry = _Entry(job, tenant, start, start + job_cost, next(self._seq))
        fifo.append(entry)
        self._entries[id(job)] = entry

    def remove(self, job: J) -> bool:
        """Take `job` out without dispatching it; False when it is not waiting."""
        entry = self._entries.pop(id(job), None)
        if entry is None:
            return False
        fifo = self._fifos[entry.tenant]
        fifo.remove(entry)
        if not fifo:
            del self._fifos[entry.tenant]
        return True

    def take(self, may_run: Callable[[J], bool]) -> J | None:
        """Remove and return the job to run next: of each tenant with a job that `may_run`, the
        one whose oldest waiting job has the smallest start tag; of that tenant, its first job
        that may run. None when none may run."""
        best: tuple[_Entry[J], _Entry[J]] | None = None  # (tenant's head, job to run)
        for fifo in self._fifos.values():
            entry = next((e for e in fifo if may_run(e.job)), None)
            if entry is not None and (best is None or fifo[0].order < best[0].order):
                best = fifo[0], entry
        if best is None:
            return None
        head, chosen = best
        if chosen is not head:
            self._run_on_the_tenants_turn(chosen)
        self.remove(chosen.job)
        self._finished[chosen.tenant] = max(self._finished.get(chosen.tenant, 0), chosen.finish)
        if chosen.start > self._virtual:
            self._virtual = chosen.start
            # A finish tag the clock has reached holds its tenant back no more: forget it.
            passed = [name for name, tag in self._finished.items() if tag <= self._virtual]
            for name in passed:
                del self._finished[name]
        return chosen.job

    def _run_on_the_tenants_turn(self, chosen: _Entry[J]) -> None:
        """A job that overtakes its own tenant's older ones (they are not ready yet) runs on its
        tenant's turn: it takes the head's tags, and each job it passed moves one place back.
        Keeping its own later tag instead would move the virtual time past the tags still
        waiting, and a newcomer would then queue behind the overtaken jobs."""
        fifo = self._fifos[chosen.tenant]
        passed = list(itertools.takewhile(lambda e: e is not chosen, fifo))
        tags = [(e.start, e.finish, e.seq) for e in (*passed, chosen)]
        for entry, (start, finish, seq) in zip((chosen, *passed), tags, strict=True):
            entry.start, entry.finish, entry.seq = start, finish, seq

    def clear(self) -> list[J]:
        """Remove every waiting job; returns them in dispatch order."""
        jobs = self.order()
        self._fifos.clear()
        self._entries.clear()
        return jobs


__all__ = ["UNIT", "FairQueue", "cost"]
