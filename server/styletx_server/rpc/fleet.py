"""Stylize, GetJob, WatchJob and CancelJob where the replicas share one job store: a call is
answered by whichever replica it reaches, while its job runs on whichever has a free worker.

A new job is inspected here (refusals cost no store call), then admitted to the fleet's queue
(`JobStore.admit`: the queue bound, the tenant's quota and request keys hold for the fleet). The
call follows the job's numbered events in the store until its outcome; the result is read from
the store once. A store that does not answer in time refuses the call (UNAVAILABLE,
STORE_UNAVAILABLE, with RetryInfo) instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from styletx.tracing import child
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.refusals import (
    Draining,
    JobNotFound,
    KeyReused,
    NotReady,
    QueueFull,
    StoreDown,
    TenantQuota,
)
from styletx_server.intake.convert import duration
from styletx_server.intake.inspection import Limits, inspect, output_encoding
from styletx_server.jobs import stored
from styletx_server.jobs.fleet import payload_of
from styletx_server.jobs.mailbox import Final
from styletx_server.jobs.views import job_error
from styletx_server.observe.logs import log_event
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.rpc.calls import AnyContext, Call, Context
from styletx_server.rpc.job_rpcs import cancel_wait, checked_key, state_name, watch_event
from styletx_server.rpc.relay import Convert, Relay
from styletx_server.rpc.stylize import Lifecycle
from styletx_server.store.protocol import (
    Admission,
    AdmitRequest,
    Created,
    Existing,
    JobRecord,
    JobState,
    JobStore,
    Refusal,
    StoreUnavailable,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Events a GetJob reads to describe a running job (the store keeps 256 per job by default).
EVENTS_KEPT = 256
#: Longest wait of one read of a job's events for the next one (the store answers as soon as
#: one is added: progress reaches a caller within the store's latency).
WAIT_SECONDS = 0.05
#: Empty reads between looks at the job's record (its end without a final event: cancelled
#: while queued, out of attempts; a queued job's position).
RECORD_EVERY = 10
#: Seconds a following call rides out a store that stopped answering before it gives up.
STORE_PATIENCE = 10.0


class FleetCalls:
    """The job calls of a replica of a fleet (one per server)."""

    def __init__(
        self,
        store: JobStore,
        *,
        limits: Limits,
        lifecycle: Lifecycle,
        relay: Relay,
        metrics: ServerMetrics,
        capacity: int,
        retry_after: Callable[[], float] = lambda: 1.0,
    ) -> None:
        self._store = store
        self._limits = limits
        self._lifecycle = lifecycle
        self._relay = relay
        self._metrics = metrics
        self._capacity = capacity
        self._retry_after = retry_after
        self._tasks: set[asyncio.Task[object]] = set()
        #: Called on the loop after each job this replica admits (the fleet worker claims at
        #: once instead of at its next poll).
        self.on_admitted: Callable[[], None] = lambda: None
        #: Results this replica's fleet worker committed (set by the fleet's wiring).
        self.recent = stored.RecentResults(0)

    # -- Stylize ---------------------------------------------------------------------------------

    async def stylize(
        self,
        request: pb.StylizeRequest,
        context: Context,
        call: Call,
        key: str | None,
        digest: bytes | None,
    ) -> None:
        """Attach to the tenant's job under `key`, or inspect and admit a new job; follow it."""
        tenant = call.tenant
        encoding = output_encoding(request)
        if key is not None:
            found = await self._ask("find", self._store.find(tenant.name, key))
            if found is not None and stored.attachable(found):
                await self._attach(found, digest, key, context, call, encoding)
                return
        if self._lifecycle.draining.is_set():
            raise Draining("draining")
        engine = self._lifecycle.stylizer
        if engine is None:
            raise NotReady("model is loading")
        with child("intake"):
            inspection = inspect(request, self._limits, engine)
        filing = asyncio.ensure_future(
            self._ask(
                "admit",
                self._store.admit(
                    AdmitRequest(
                        tenant=tenant.name,
                        key=key,
                        digest=digest or b"",
                        weight=tenant.weight,
                        capacity=self._capacity,
                        count_running=True,
                        max_queued=tenant.max_queued,
                        max_running=tenant.max_running,
                        payload=payload_of(call.request_id, request),
                    )
                ),
            )
        )
        filing.add_done_callback(_retrieved)
        try:
            # The store may file the job even if the caller leaves meanwhile: let it finish.
            admitted = await asyncio.shield(filing)
        except asyncio.CancelledError:
            if key is None:  # nobody can ask for it again: take it back once it is filed
                self._background(self._withdraw(filing))
            raise
        if isinstance(admitted, Refusal):
            if admitted.quota == "queue":
                raise QueueFull(admitted.limit, self._retry_after())
            raise TenantQuota(tenant.name, admitted.quota, admitted.limit, self._retry_after())
        if isinstance(admitted, Existing):  # the same key, filed a moment ago elsewhere
            await self._attach(admitted.record, digest, key, context, call, encoding)
            return
        assert isinstance(admitted, Created)
        self.on_admitted()
        call.fields["job_id"] = admitted.record.job_id
        encoding = (inspection.output_format, inspection.output_quality)
        await self.follow(admitted.record, context, call, encoding, position=admitted.position)

    async def _withdraw(self, filing: asyncio.Future[Admission]) -> None:
        """Cancel the job a departed caller's admission filed (an unkeyed one)."""
        try:
            admitted = await filing
        except StoreDown:
            return
        if isinstance(admitted, Created):
            await self._store.cancel(admitted.record.job_id)

    async def _attach(
        self,
        record: JobRecord,
        digest: bytes | None,
        key: str | None,
        context: Context,
        call: Call,
        encoding: tuple[str, int],
    ) -> None:
        if key is not None and record.digest != (digest or b""):
            raise KeyReused(key)
        call.fields["attached"] = "stored" if record.state.ended else "running"
        await self.follow(record, context, call, encoding)

    # -- following a job's events ------------------------------------------------------------

    async def follow(
        self,
        record: JobRecord,
        context: AnyContext,
        call: Call,
        encoding: tuple[str, int] | None,
        convert: Convert | None = None,
        *,
        after: int = 0,
        position: int | None = None,
    ) -> None:
        """Relay the job's events after `after` until its outcome; an unkeyed job whose caller
        leaves is cancelled (nobody else can ask for it)."""
        job_id = record.job_id
        try:
            if position is not None and after == 0:
                await self._queued(context, record, position, convert)
            await self._follow(record, context, call, encoding, convert, after, position)
        except asyncio.CancelledError:
            if record.key is None:
                self._background(self._store.cancel(job_id))
            raise

    async def _follow(
        self,
        record: JobRecord,
        context: AnyContext,
        call: Call,
        encoding: tuple[str, int] | None,
        convert: Convert | None,
        after: int,
        position: int | None,
    ) -> None:
        job_id = record.job_id
        idle = 0
        while True:
            events = await self._patient(
                "events", functools.partial(self._store.events, job_id, after, 100, WAIT_SECONDS)
            )
            for event in events:
                after = event.id
                item = stored.decode(event)
                if isinstance(item, Final):
                    await self._deliver(record, item, context, call, encoding, convert)
                    return
                await self._relay.send(context, item if convert is None else convert(item))
            if events:
                idle = 0
                continue
            idle += 1
            if idle % RECORD_EVERY == 0:
                now = await self._patient("get", lambda: self._store.get(job_id))
                if now is None:
                    raise JobNotFound(record.key or job_id, "it expired (--result-ttl)")
                final = stored.final_of_record(now)
                if final is not None:
                    await self._relay.deliver(final, context, call, encoding, convert)
                    return
                if now.state is JobState.QUEUED:
                    place = await self._patient("position", lambda: self._store.position(job_id))
                    if place is not None and place != position:
                        position = place
                        await self._queued(context, now, place, convert)

    async def _queued(
        self, context: AnyContext, record: JobRecord, position: int, convert: Convert | None
    ) -> None:
        event = pb.StylizeResponse(
            queued=pb.QueuedEvent(position=position, request_id=record.job_id)
        )
        await self._relay.send(context, event if convert is None else convert(event))

    async def _deliver(
        self,
        record: JobRecord,
        final: Final,
        context: AnyContext,
        call: Call,
        encoding: tuple[str, int] | None,
        convert: Convert | None,
    ) -> None:
        """Send the outcome; a result is read from the store now, once for this call (unless
        this replica committed it a moment ago)."""
        if final.status is None:
            data = await self.recent.get(record.job_id)
            if data is None:
                data = await self._ask("result", self._store.result(record.job_id))
            if data is None:
                raise JobNotFound(record.key or record.job_id, stored.result_gone(record))
            final = Final(response=pb.StylizeResponse.FromString(data), encoding=final.encoding)
        await self._relay.deliver(final, context, call, encoding, convert)

    # -- GetJob, WatchJob, CancelJob -----------------------------------------------------------

    async def get_job(self, request: pb.GetJobRequest, call: Call) -> pb.GetJobResponse:
        key = checked_key(request.request_key, call)
        record = await self._found(call, key)
        view = await self._view(record, key)
        if not request.omit_image and view.state == pb.JOB_STATE_DONE:
            data = await self._ask("result", self._store.result(record.job_id))
            if data is None:
                raise JobNotFound(key, stored.result_gone(record))
            view.result.image.data = pb.StylizeResponse.FromString(data).result.image.data
        call.fields["state"] = state_name(view.state)
        call.code = grpc.StatusCode.OK
        return view

    async def watch_job(self, request: pb.WatchJobRequest, context: AnyContext, call: Call) -> None:
        key = checked_key(request.request_key, call)
        record = await self._found(call, key)
        call.fields["attached"] = "stored" if record.state.ended else "running"
        position = None
        if record.state is JobState.QUEUED and not request.after_event_id:
            position = await self._ask("position", self._store.position(record.job_id))
        await self.follow(
            record,
            context,
            call,
            None,
            watch_event,
            after=request.after_event_id,
            position=position,
        )

    async def cancel_job(
        self, request: pb.CancelJobRequest, context: AnyContext, call: Call
    ) -> pb.CancelJobResponse:
        key = checked_key(request.request_key, call)
        record = await self._found(call, key)
        if record.live:
            asked = await self._ask("cancel", self._store.cancel(record.job_id))
            record = await self._ended(asked or record, context)
        state = stored.state_of_record(record)
        if record.live:  # not ended in time (a very slow evaluation): it will end cancelled
            state = pb.JOB_STATE_CANCELLED
        call.fields["state"] = state_name(state)
        call.code = grpc.StatusCode.OK
        return pb.CancelJobResponse(state=state)

    async def _ended(self, record: JobRecord, context: AnyContext) -> JobRecord:
        """The job's record once it has ended, or as it is when the caller's deadline nears."""
        deadline = time.monotonic() + cancel_wait(context)
        while record.live and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            now = await self._ask("get", self._store.get(record.job_id))
            record = now or record
        return record

    async def _found(self, call: Call, key: str) -> JobRecord:
        record = await self._ask("find", self._store.find(call.tenant.name, key))
        if record is None:
            ttl = self._store.config.result_ttl
            raise JobNotFound(
                key,
                "it was never started in this fleet, or it ended more than "
                f"{ttl:g} s ago (--result-ttl); a Stylize call with the key and its request "
                "runs it",
            )
        return record

    async def _view(self, record: JobRecord, key: str) -> pb.GetJobResponse:
        """What GetJob says of a stored job (without the image)."""
        if record.state.ended and record.detail:
            view = pb.GetJobResponse.FromString(record.detail)
            view.request_key = key
            return view
        view = pb.GetJobResponse(
            request_key=key, request_id=record.job_id, state=stored.state_of_record(record)
        )
        times = record.times
        now = time.time()
        if record.state is JobState.QUEUED:
            place = await self._ask("position", self._store.position(record.job_id))
            view.queue_position = place or 0
            view.queue_time.CopyFrom(duration(max(0.0, now - times.admitted)))
        elif times.started is not None:
            view.queue_time.CopyFrom(duration(max(0.0, times.started - times.admitted)))
            view.compute_time.CopyFrom(duration(max(0.0, (times.ended or now) - times.started)))
            await self._running_view(record, view)
        final = stored.final_of_record(record)
        if final is not None and final.status is not None:
            view.error.CopyFrom(job_error(final.status))
        return view

    async def _running_view(self, record: JobRecord, view: pb.GetJobResponse) -> None:
        """The running attempt's Started event (resolved options) and latest progress."""
        events = await self._ask("events", self._store.events(record.job_id, 0, EVENTS_KEPT))
        for event in events:
            item = stored.decode(event)
            if isinstance(item, Final):
                continue
            if item.HasField("started"):
                view.started.CopyFrom(item.started)
                view.options.CopyFrom(item.started.options)
                view.ClearField("progress")  # a new attempt starts over
            elif item.HasField("progress"):
                view.progress.CopyFrom(item.progress)
                view.progress.ClearField("preview")  # GetJob describes; WatchJob sends pictures

    # -- the store, bounded ----------------------------------------------------------------------

    async def _ask(self, operation: str, work: Awaitable[T]) -> T:
        """One store call on behalf of an API call; StoreDown (UNAVAILABLE) when it fails."""
        start = time.perf_counter()
        try:
            return await work
        except StoreUnavailable as exc:
            self._metrics.store_errors.labels(operation=operation).inc()
            # The caller learns only that it may retry; the log says which store and why.
            log_event(
                log, "store_unavailable", level=logging.WARNING, operation=operation, error=str(exc)
            )
            raise StoreDown(str(exc), retry_after=1.0) from exc
        finally:
            self._metrics.store_call_duration.observe(time.perf_counter() - start)

    async def _patient(self, operation: str, work: Callable[[], Awaitable[T]]) -> T:
        """A store call made while following a job: a store that is down is asked again for
        `STORE_PATIENCE` seconds (a Redis restart) before the call gives up."""
        give_up = time.monotonic() + STORE_PATIENCE
        while True:
            try:
                return await self._ask(operation, work())
            except StoreDown:
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.25)

    def _background(self, work: Awaitable[object]) -> None:
        async def run() -> object:
            with contextlib.suppress(StoreUnavailable):
                return await work
            return None

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _retrieved(task: asyncio.Future[Admission]) -> None:
    """Consume the outcome of an admission nobody may await (its caller left)."""
    if not task.cancelled():
        task.exception()


__all__ = ["WAIT_SECONDS", "FleetCalls"]
