"""GetJob, WatchJob and CancelJob: a keyed job's state, its events and its end, by request key.

The call frame (`frame.CallFrame`) owns the call's status, slot and request log, `relay.Relay`
the stream of a job's events; these handlers only find the job and decide what to say. A key is
looked up among the running jobs first, then the stored results, then the records of ended jobs
(kept for the result TTL), so a job is found from the moment its Stylize call registers it until
its outcome expires. CancelJob stops the job (it leaves the queue, or the engine stops within one
evaluation) and answers once the job has ended, so a caller knows its worker is free again. Keys
are looked up in the caller's tenant only: another tenant's job is NOT_FOUND, word for word like
an unknown key.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TypeVar

import grpc

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.refusals import InvalidKey, JobNotFound
from styletx_server.errors.statuses import StopReason
from styletx_server.jobs.board import JobBoard
from styletx_server.jobs.job import StylizeJob, scoped_key
from styletx_server.jobs.mailbox import Final, Mailbox
from styletx_server.jobs.registry import KEY_RULE, StoredResult, valid_key
from styletx_server.jobs.views import Gone, ended_view, live_view, state_of, stored_view
from styletx_server.observe.logs import caller_text
from styletx_server.rpc.calls import AnyContext, Call
from styletx_server.rpc.frame import CallFrame
from styletx_server.rpc.relay import Relay

T = TypeVar("T")

#: Longest a CancelJob waits for the job to end (one evaluation of a huge image on a CPU).
CANCEL_WAIT_SECONDS = 60.0


def watch_event(event: pb.StylizeResponse) -> pb.WatchJobResponse:
    """The WatchJob message of a Stylize event (the same event, in WatchJob's type)."""
    message = pb.WatchJobResponse()
    kind = event.WhichOneof("event")
    if kind is not None:
        getattr(message, kind).CopyFrom(getattr(event, kind))
    message.event_id = event.event_id
    return message


class JobRpcs:
    """The three job RPCs, on this replica's jobs, in the frame every call runs in."""

    def __init__(self, board: JobBoard, *, frame: CallFrame, relay: Relay) -> None:
        self._board = board
        self._registry = board.registry
        self._frame = frame
        self._relay = relay

    # -- the RPCs ------------------------------------------------------------------------------

    async def get_job(
        self, request: pb.GetJobRequest, context: AnyContext
    ) -> pb.GetJobResponse | None:
        """GetJob: the job's state (its result too, unless `omit_image`)."""

        async def work(call: Call) -> pb.GetJobResponse:
            key, scoped = self._key(request.request_key, call)
            view = self._view(key, scoped, with_image=not request.omit_image)
            call.fields["state"] = state_name(view.state)
            call.code = grpc.StatusCode.OK
            return view

        return await self._frame.serve(context, "GetJob", work, slot=False)

    async def watch_job(self, request: pb.WatchJobRequest, context: AnyContext) -> None:
        """WatchJob: the job's current state, the events that follow, then its outcome."""

        async def work(call: Call) -> None:
            key, scoped = self._key(request.request_key, call)
            found = self._registry.lookup(scoped)
            if isinstance(found, StylizeJob):
                call.fields["attached"] = "running"
                await self._relay.follow(found, context, call, call.arrived, None, watch_event)
                return
            if isinstance(found, StoredResult):
                call.fields["attached"] = "stored"
                await self._relay.deliver(found.final, context, call, None, watch_event)
                return
            record = self._registry.ended.get(scoped)
            if record is None:
                raise JobNotFound(key, self._unknown(scoped))
            if record.status is None:  # it succeeded, but its result was dropped since
                raise JobNotFound(key, _DROPPED)
            call.fields["attached"] = "ended"
            await self._relay.deliver(Final(status=record.status), context, call, None)

        await self._frame.serve(context, "WatchJob", work, slot=True)

    async def cancel_job(
        self, request: pb.CancelJobRequest, context: AnyContext
    ) -> pb.CancelJobResponse | None:
        """CancelJob: stop the job and answer once it ended (or say how it ended before)."""

        async def work(call: Call) -> pb.CancelJobResponse:
            key, scoped = self._key(request.request_key, call)
            found = self._registry.lookup(scoped)
            if isinstance(found, StylizeJob):
                self._board.stop(StopReason.JOB_CANCELLED, [found])
                final = await _ended(found, context)
                # Not ended in time (a very slow evaluation): it will end cancelled.
                state = pb.JOB_STATE_CANCELLED if final is None else state_of(final)
                call.add_job(found)
            elif isinstance(found, StoredResult):
                state = pb.JOB_STATE_DONE
            else:
                record = self._registry.ended.get(scoped)
                if record is None:
                    raise JobNotFound(key, self._unknown(scoped))
                state = record.state
            call.fields["state"] = state_name(state)
            call.code = grpc.StatusCode.OK
            return pb.CancelJobResponse(state=state)

        return await self._frame.serve(context, "CancelJob", work, slot=False)

    # -- lookups ---------------------------------------------------------------------------------

    @staticmethod
    def _key(key: str, call: Call) -> tuple[str, str]:
        """The request's key, and the key the registry files it under for the caller's tenant."""
        return checked_key(key, call), scoped_key(call.tenant.name, key)

    def _view(self, key: str, scoped: str, *, with_image: bool) -> pb.GetJobResponse:
        found = self._registry.lookup(scoped)
        if isinstance(found, StylizeJob):
            snapshot = found.snapshot()
            if snapshot.final is None:
                return live_view(found, snapshot)
            # It ended a moment ago; the registry has not filed it yet.
            return _with_image(ended_view(found, snapshot.final), snapshot.final, with_image)
        record = self._registry.ended.get(scoped)
        if isinstance(found, StoredResult):
            view = pb.GetJobResponse()
            if record is not None and record.state == pb.JOB_STATE_DONE:
                view.CopyFrom(record.view)
            else:  # the record was forgotten (more ended jobs than kept) before the result
                view = stored_view(key, found.final)
            return _with_image(view, found.final, with_image)
        if record is None:
            raise JobNotFound(key, self._unknown(scoped))
        if record.state == pb.JOB_STATE_DONE and with_image:
            raise JobNotFound(key, _dropped(record.result))
        view = pb.GetJobResponse()
        view.CopyFrom(record.view)
        return view

    def _unknown(self, scoped: str) -> str:
        """Why the caller's tenant has no job under `scoped`: it expired, its record was
        evicted, or it never ran here (another tenant's key reads like one never used)."""
        ended = self._registry.ended
        ttl = ended.ttl
        if ttl <= 0:
            return "it was never started here, or it ended (this server keeps no outcomes)"
        again = "a Stylize call with the key and its request runs it again"
        gone = ended.gone(scoped)
        if gone is Gone.EXPIRED:
            return f"it expired: it ended more than {ttl:g} s ago (--result-ttl); {again}"
        if gone is Gone.EVICTED:
            return (
                "it was evicted: its tenant's later ended jobs took its place before its "
                f"--result-ttl of {ttl:g} s ran out (the server remembers {ended.max_jobs} ended "
                f"jobs, shared among tenants); {again}"
            )
        if ended.forgetting(scoped):
            return (
                "it was never started on this server, or it ended and is forgotten: its tenant "
                f"ended more jobs lately than the server remembers ({ended.max_jobs}); {again}"
            )
        return (
            f"it was never started on this server, or it ended more than {2 * ttl:g} s ago "
            "(twice --result-ttl); a Stylize call with the key and its request runs it"
        )


def _dropped(why: Gone | None) -> str:
    """Why a finished job's result cannot be sent (its record still describes it)."""
    if why is Gone.EVICTED:
        cause = (
            "was evicted: the server keeps --max-stored-results results of "
            "--max-stored-result-bytes, shared among tenants, and a tenant's newer results take "
            "the place of its own oldest (or of those of a tenant holding more)"
        )
    elif why is Gone.NOT_KEPT:
        cause = "was not kept: it is larger than --max-stored-result-bytes allows"
    else:
        cause = (
            "is no longer kept (evicted by newer results within --max-stored-results and "
            "--max-stored-result-bytes, or too large to keep)"
        )
    return (
        f"it finished, but its result {cause}; GetJob with omit_image still describes it, or run "
        "it again"
    )


#: Why a finished job's result cannot be sent, when its record does not say.
_DROPPED = _dropped(None)


def _with_image(view: pb.GetJobResponse, final: Final, with_image: bool) -> pb.GetJobResponse:
    """`view` with the result's image data from `final` when asked for and there is one."""
    if with_image and final.response is not None:
        view.result.image.data = final.response.result.image.data
    return view


def checked_key(key: str, call: Call) -> str:
    """The request's key, recorded for the call's log; InvalidKey unless it follows KEY_RULE."""
    call.fields["request_key"] = caller_text(key)
    if not valid_key(key):
        raise InvalidKey(KEY_RULE)
    return key


def state_name(state: pb.JobState.ValueType) -> str:
    """A job state as the request log names it (`done`, `cancelled`, ...)."""
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def cancel_wait(context: AnyContext) -> float:
    """How long CancelJob waits for the job to end: the cap, or just under the caller's
    deadline (answer rather than let the call fail)."""
    remaining = context.time_remaining()
    if remaining is not None and math.isfinite(remaining):
        return max(0.0, min(CANCEL_WAIT_SECONDS, remaining - 0.1))
    return CANCEL_WAIT_SECONDS


async def _ended(job: StylizeJob, context: AnyContext) -> Final | None:
    """The job's outcome once it has one; None when the call's deadline or the cap comes first."""
    limit = cancel_wait(context)
    mailbox = Mailbox(asyncio.get_running_loop())
    job.subscribe(mailbox)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while True:
                    item = await mailbox.get()
                    if isinstance(item, Final):
                        return item
        return None
    finally:
        job.unsubscribe(mailbox)


__all__ = [
    "CANCEL_WAIT_SECONDS",
    "JobRpcs",
    "cancel_wait",
    "checked_key",
    "state_name",
    "watch_event",
]
