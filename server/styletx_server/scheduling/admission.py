"""Admission control: a bounded queue of jobs in front of N worker threads, fair across tenants.

A full queue refuses at once (the caller retries later or elsewhere) instead of letting latency
grow without bound; so does a tenant's own share of it (`max_queued`). A job takes its slot before
its images are decoded and becomes runnable once they are (`mark_ready`); workers take the next
runnable job in fair order (`fairqueue.FairQueue`: by tenant weight, a tenant at its `max_running`
skipped). Waiting jobs are told their position whenever it changes; a job withdrawn while waiting
(nobody wants it any more) frees its slot and never starts. `plan_drain` picks the waiting jobs
that cannot finish within a drain's grace period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol

from styletx_server.errors.refusals import QueueClosed, QueueFull, TenantQuota
from styletx_server.scheduling.fairqueue import FairQueue
from styletx_server.security.tenants import Tenant

log = logging.getLogger(__name__)

#: Weight of the newest job in the running mean of job durations (for retry hints).
_EWMA_ALPHA = 0.3


class Job(Protocol):
    """What the queue needs from a unit of work."""

    @property
    def abandoned(self) -> bool:
        """True when nobody wants the result any more: a waiting job is then skipped."""
        ...

    @property
    def ready(self) -> bool:
        """True once the job can run (its images are decoded)."""
        ...

    @property
    def tenant(self) -> Tenant:
        """Whose job it is: its fair share and quotas."""
        ...

    def on_position(self, position: int) -> None:
        """The 1-based position changed (called under the queue lock, so in order)."""
        ...

    def on_dropped(self) -> None:
        """Called when the job leaves the queue without running."""
        ...

    def run(self) -> None:
        """Do the work, on a worker thread."""
        ...


#: Waiting and running jobs of each tenant that has any, by tenant name.
TenantCounts = Mapping[str, tuple[int, int]]


class AdmissionQueue:
    """Bounded queue + worker threads; `on_change(waiting, running)` observes every change, and
    `on_tenants` the same counts per tenant."""

    def __init__(
        self,
        capacity: int,
        workers: int,
        *,
        on_change: Callable[[int, int], None] | None = None,
        on_tenants: Callable[[TenantCounts], None] | None = None,
        initial_job_seconds: float = 1.0,
    ) -> None:
        if capacity < 1 or workers < 1:
            raise ValueError("capacity and workers must be >= 1")
        self.capacity = capacity
        self.workers = workers
        self._on_change = on_change
        self._on_tenants = on_tenants
        self._cond = threading.Condition()
        self._waiting: FairQueue[Job] = FairQueue()
        self._running_jobs: list[Job] = []
        self._running_by_tenant: Counter[str] = Counter()
        #: Position last told to each waiting job (by id), so only changes are reported.
        self._told: dict[int, int] = {}
        self._running = 0
        self._closed = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._mean_job_seconds = initial_job_seconds
        self._listeners: list[Callable[[int, int], None]] = []

    # -- observers -------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    def waiting_jobs(self) -> list[Job]:
        """The waiting jobs in queue order (a snapshot)."""
        with self._cond:
            return self._waiting.order()

    def running_jobs(self) -> list[Job]:
        """The jobs the workers run now (a snapshot)."""
        with self._cond:
            return list(self._running_jobs)

    def retry_after(self) -> float:
        """Seconds until a slot is likely free: the mean job time, at least one second."""
        with self._cond:
            return max(1.0, self._mean_job_seconds)

    def listen(self, listener: Callable[[int, int], None]) -> None:
        """Also tell `listener(waiting, running)` of every change (under the queue's lock, on
        whichever thread changed it: it must only hand the news on)."""
        with self._cond:
            self._listeners.append(listener)

    def _changed(self) -> None:
        """Must hold the lock: report counts and renumber the waiting jobs."""
        if self._on_change is not None:
            self._on_change(len(self._waiting), self._running)
        for listener in self._listeners:
            listener(len(self._waiting), self._running)
        if self._on_tenants is not None:
            waiting = self._waiting.tenants()
            names = set(waiting) | {n for n, c in self._running_by_tenant.items() if c}
            self._on_tenants(
                {n: (waiting.get(n, 0), self._running_by_tenant[n]) for n in sorted(names)}
            )
        self._cond.notify_all()

    def _renumber(self) -> None:
        """Tell each waiting job its position if it changed (jobs that left are forgotten)."""
        told = self._told
        self._told = {}
        for position, job in enumerate(self._waiting.order(), start=1):
            self._told[id(job)] = position
            if told.get(id(job)) != position:
                job.on_position(position)

    # -- producers -------------------------------------------------------------------------

    def submit(self, job: Job) -> int:
        """Enqueue `job` and return its 1-based position; QueueFull/QueueClosed."""
        with self._cond:
            if self._closed:
                raise QueueClosed("the server is shutting down")
            retry = max(1.0, self._mean_job_seconds)
            if len(self._waiting) >= self.capacity:
                raise QueueFull(self.capacity, retry)
            tenant = job.tenant
            if tenant.max_queued is not None:
                waiting = self._waiting.waiting(tenant.name)
                if waiting >= tenant.max_queued:
                    raise TenantQuota(tenant.name, "max_queued", tenant.max_queued, retry)
            self._waiting.push(job, tenant.name, tenant.weight)
            self._renumber()
            self._changed()
            return self._told[id(job)]

    def withdraw(self, job: Job) -> bool:
        """Remove a waiting job (it never starts); False when it already left the queue."""
        with self._cond:
            if not self._waiting.remove(job):
                return False
            self._renumber()
            self._changed()
        job.on_dropped()
        return True

    def mark_ready(self) -> None:
        """A waiting job became runnable: wake the workers."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Refuse new jobs; waiting and running ones continue."""
        with self._cond:
            self._closed = True

    def drop_waiting(self) -> int:
        """Remove every waiting job (each gets `on_dropped`); returns how many."""
        with self._cond:
            dropped = self._waiting.clear()
            self._told.clear()
            self._changed()
        for job in dropped:
            job.on_dropped()
        return len(dropped)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing waits or runs; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and not self._running, timeout)

    # -- workers ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads (daemons: a stuck job never blocks process exit)."""
        with self._cond:
            if self._threads:
                return
            self._changed()
            for index in range(self.workers):
                thread = threading.Thread(
                    target=self._work, name=f"styletx-worker-{index}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Close, drop waiting jobs, let running ones end, and join the workers."""
        self.close()
        self.drop_waiting()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)

    def _take(self) -> tuple[Job | None, list[Job]]:
        """Under the lock: the first runnable job (or None) and the abandoned ones removed."""
        abandoned = [job for job in self._waiting.order() if job.abandoned]
        for job in abandoned:
            self._waiting.remove(job)
        chosen = self._waiting.take(self._may_run)
        if chosen is not None or abandoned:
            self._renumber()
        return chosen, abandoned

    def _may_run(self, job: Job) -> bool:
        """Under the lock: decoded, and its tenant below its own `max_running`."""
        limit = job.tenant.max_running
        return job.ready and (limit is None or self._running_by_tenant[job.tenant.name] < limit)

    def _next(self) -> Job | None:
        """The next runnable job (dropping abandoned ones), or None when stopping."""
        while True:
            with self._cond:
                job, abandoned = self._take()
                while job is None and not abandoned and not self._stopping:
                    self._cond.wait()
                    job, abandoned = self._take()
                if job is not None:
                    self._running += 1
                    self._running_jobs.append(job)
                    self._running_by_tenant[job.tenant.name] += 1
                if job is not None or abandoned:
                    self._changed()
            for gone in abandoned:
                gone.on_dropped()
            if job is not None:
                return job
            if not abandoned and self._stopping:
                return None

    def _work(self) -> None:
        while (job := self._next()) is not None:
            started = time.monotonic()
            try:
                job.run()
            except Exception:  # a job must never kill its worker
                log.exception("job raised past its own error handling")
            finally:
                elapsed = time.monotonic() - started
                with self._cond:
                    self._running -= 1
                    self._running_jobs.remove(job)
                    self._running_by_tenant[job.tenant.name] -= 1
                    if not self._running_by_tenant[job.tenant.name]:
                        del self._running_by_tenant[job.tenant.name]
                    self._mean_job_seconds += _EWMA_ALPHA * (elapsed - self._mean_job_seconds)
                    self._changed()


def plan_drain(
    grace: float,
    workers: int,
    running_remaining: list[float],
    waiting: list[tuple[Job, float]],
) -> list[Job]:
    """The waiting jobs to refuse now because they cannot finish within `grace` seconds.

    Simulates the workers: each is free after its running job's estimated remaining time; waiting
    jobs (in queue order, with their estimated durations) go to the worker free first. A job whose
    estimated end is past the grace period is refused at once (its caller retries elsewhere now
    rather than being cancelled at the end of the grace), and takes no worker time.
    """
    free_at = [*running_remaining, *([0.0] * max(0, workers - len(running_remaining)))]
    refused: list[Job] = []
    for job, seconds in waiting:
        start = min(free_at)
        end = start + seconds
        if end > grace:
            refused.append(job)
            continue
        free_at[free_at.index(start)] = end
    return refused


class Throughput:
    """Running estimate of seconds per evaluation per output pixel (EWMA), to predict job times."""

    #: A CPU-like start (2 cores, 260 px: ~0.24 s per evaluation); replaced by measurements.
    INITIAL_SECONDS_PER_PIXEL = 4e-6

    def __init__(self, initial: float = INITIAL_SECONDS_PER_PIXEL, alpha: float = 0.2) -> None:
        self._rate = initial
        self._alpha = alpha
        self._lock = threading.Lock()

    @property
    def seconds_per_pixel(self) -> float:
        with self._lock:
            return self._rate

    def observe(self, seconds: float, pixels: int) -> None:
        """One evaluation of `seconds` on an output of `pixels`."""
        if pixels <= 0 or seconds < 0:
            return
        with self._lock:
            self._rate += self._alpha * (seconds / pixels - self._rate)

    def estimate(self, evaluations: int, pixels: int) -> float:
        """Predicted seconds of `evaluations` evaluations at `pixels` output pixels."""
        return evaluations * pixels * self.seconds_per_pixel


__all__ = [
    "AdmissionQueue",
    "Job",
    "TenantCounts",
    "Throughput",
    "plan_drain",
]
