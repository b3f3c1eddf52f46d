"""One unit of work that streams subscribe to: runs the engine on a worker thread.

The worker never touches an RPC: it publishes events (`events.JobEvents`), which fan them out to
every subscriber's mailbox; `accounting.JobAccounting` keeps its times, counters and estimates.
The engine polls `should_stop` before every evaluation, so a stop takes effect within one
evaluation. Every path out of a job (result, failure, stop, drop) goes through `_complete`, once:
it releases the pixel reservation and tells the job's ledger, so nothing leaks whatever raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from styletx.protocol import Engine
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors import statuses
from styletx_server.errors.statuses import ErrorStatus, StopReason
from styletx_server.intake.decode import JobSpec
from styletx_server.intake.inspection import Inspection
from styletx_server.jobs.accounting import JobAccounting, JobStats, JobTimes
from styletx_server.jobs.events import JobEvents, JobSnapshot
from styletx_server.jobs.mailbox import Final, Mailbox
from styletx_server.jobs.run import JobRun
from styletx_server.observe.logs import log_event
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.observe.tracing import JobTrace
from styletx_server.scheduling.admission import Throughput
from styletx_server.scheduling.budget import Reservation
from styletx_server.security.tenants import DEFAULT, Tenant

log = logging.getLogger(__name__)


class JobLedger(Protocol):
    """Who keeps the books of a replica's jobs: told once when each job ends."""

    def ended(self, job: StylizeJob, final: Final) -> None: ...


class StylizeJob:
    """Implements admission.Job; created by the first call of a request, attached to by others."""

    def __init__(
        self,
        *,
        request_id: str,
        key: str | None,
        digest: bytes | None,
        inspection: Inspection,
        reservation: Reservation,
        engine: Engine,
        metrics: ServerMetrics,
        throughput: Throughput,
        ledger: JobLedger,
        shutting_down: Callable[[], bool] = lambda: False,
        tenant: Tenant = DEFAULT,
    ) -> None:
        self.request_id = request_id
        self.key = key
        #: Whose job it is (admission.Job): its share of the queue, and who may see it by key.
        self.tenant = tenant
        #: The key the registry files it under: keys are per tenant.
        self.registry_key = None if key is None else scoped_key(tenant.name, key)
        self.digest = digest
        self.inspection = inspection
        self.events = JobEvents()
        self.accounting = JobAccounting(
            metrics,
            throughput,
            tenant=tenant.name,
            max_evaluations=inspection.options.max_evaluations,
            output_pixels=inspection.output_pixels,
        )
        #: The creating call's trace context and the job's queue_wait span.
        self.trace = JobTrace()
        self.spec: JobSpec | None = None
        self._shutting_down = shutting_down
        self._reservation = reservation
        self._engine = engine
        self._ledger = ledger

    # -- what the job's streams and views read -----------------------------------------------

    @property
    def times(self) -> JobTimes:
        return self.accounting.times

    @property
    def stats(self) -> JobStats | None:
        return self.accounting.stats

    @property
    def input_sizes(self) -> tuple[str, list[str]] | None:
        return self.accounting.input_sizes

    def subscribe(self, mailbox: Mailbox) -> None:
        self.events.subscribe(mailbox)

    def unsubscribe(self, mailbox: Mailbox) -> int:
        return self.events.unsubscribe(mailbox)

    @property
    def subscribers(self) -> int:
        return self.events.subscribers

    def snapshot(self) -> JobSnapshot:
        return self.events.snapshot()

    @property
    def final(self) -> Final | None:
        return self.events.final

    def estimated_seconds(self) -> float:
        return self.accounting.estimated_seconds()

    def remaining_seconds(self) -> float:
        return self.accounting.remaining_seconds()

    # -- stopping and ending -----------------------------------------------------------------

    def stop(self, reason: StopReason) -> None:
        """Ask the job to stop (the first reason wins); the engine sees it within one evaluation."""
        self.events.stop(reason)

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the job must stop, or None to carry on (a hurried shutdown stops every job)."""
        reason = self.events.stop_requested
        if reason is None and self._shutting_down():
            return StopReason.SHUTDOWN
        return reason

    def should_stop(self) -> bool:
        """The engine's cancellation hook, polled before every evaluation."""
        return self.stop_reason is not None

    def fail(self, status: ErrorStatus) -> bool:
        """End the job with an error status (before it ran: decode failure, drain refusal)."""
        return self.complete(Final(status=status))

    def end_stopped(self) -> None:
        """End the job with the status of why it was stopped."""
        self.complete(Final(status=statuses.for_stop(self.stop_reason or StopReason.SHUTDOWN)))

    def complete(self, final: Final) -> bool:
        """End the job with `final` (first call wins): release everything, tell the ledger,
        then every stream, so that a caller told of the end finds the job filed and its pixels
        free."""
        subscribers = self.events.complete(final)
        if subscribers is None:
            return False
        self.spec = None  # the decoded images are no longer needed
        self.trace.dequeued()
        self._reservation.release()
        try:
            self._ledger.ended(self, final)
        except Exception as exc:  # bookkeeping must not keep the job from ending
            log_event(log, "job_ledger_failed", level=logging.ERROR, exc_info=exc)
        for mailbox in subscribers:
            mailbox.put(final)
        return True

    # -- admission.Job -----------------------------------------------------------------------

    @property
    def abandoned(self) -> bool:
        return self.stop_reason is not None or self.final is not None

    @property
    def ready(self) -> bool:
        return self.spec is not None

    def set_spec(self, spec: JobSpec) -> None:
        """The decoded request: the job can run."""
        self.spec = spec

    def on_position(self, position: int) -> None:
        self.events.publish(
            pb.StylizeResponse(queued=pb.QueuedEvent(position=position, request_id=self.request_id))
        )

    def on_dropped(self) -> None:
        self.end_stopped()

    # -- the work, on a worker thread --------------------------------------------------------

    def run(self) -> None:
        """Run the engine on this worker thread (`run.JobRun`); the job ends whatever happens."""
        JobRun(self, self._engine).run()


def scoped_key(tenant: str, key: str) -> str:
    """A request key as the registry files it: tenant names hold no `/`, keys hold none either,
    so two tenants' equal keys never meet."""
    return f"{tenant}/{key}"


__all__ = ["JobLedger", "JobSnapshot", "JobStats", "JobTimes", "StylizeJob", "scoped_key"]
