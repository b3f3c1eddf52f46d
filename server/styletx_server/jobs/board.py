"""The jobs of this replica: every live job (keyed or not), the ledger each job reports its end
to, and stopping jobs (waiting ones leave the queue at once, running ones stop within one
evaluation).

The board files a keyed job with the registry (`registry.JobRegistry`) when it is admitted and
when it ends, so lookups by key see it from its first moment to its outcome's expiry.
"""

from __future__ import annotations

import threading

from styletx_server.errors.statuses import StopReason
from styletx_server.intake.decode import JobSpec
from styletx_server.jobs.job import StylizeJob
from styletx_server.jobs.mailbox import Final
from styletx_server.jobs.registry import JobRegistry
from styletx_server.scheduling.admission import AdmissionQueue


class JobBoard:
    """Live jobs and their filing; implements `job.JobLedger`. Thread-safe."""

    def __init__(self, registry: JobRegistry, admission: AdmissionQueue) -> None:
        self.registry = registry
        self._admission = admission
        self._lock = threading.Lock()
        self._live: set[StylizeJob] = set()

    def admit(self, job: StylizeJob) -> None:
        """Queue `job` (QueueFull, QueueClosed, TenantQuota) and file it."""
        self._admission.submit(job)
        with self._lock:
            self._live.add(job)
        if job.key is not None:
            self.registry.add(job)

    def ended(self, job: StylizeJob, final: Final) -> None:
        """Called once per job, from whichever thread ended it."""
        self.registry.finish(job, final)
        with self._lock:
            self._live.discard(job)

    def live(self) -> list[StylizeJob]:
        with self._lock:
            return list(self._live)

    def runnable(self, job: StylizeJob, spec: JobSpec) -> None:
        """`job`'s images are decoded: it may run."""
        job.set_spec(spec)
        self._admission.mark_ready()

    def withdraw(self, job: StylizeJob) -> None:
        """`job` will not run (failed before it could, or stopped): free its queue slot."""
        self._admission.withdraw(job)

    def stop(self, reason: StopReason, jobs: list[StylizeJob] | None = None) -> None:
        """Stop `jobs` (default: all) for `reason`: waiting ones leave the queue now, running
        ones stop within one evaluation; their callers get the matching status."""
        for job in self.live() if jobs is None else jobs:
            job.stop(reason)
            self._admission.withdraw(job)


__all__ = ["JobBoard"]
