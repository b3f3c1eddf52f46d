"""The asyncio servicer: Stylize (admission before work, jobs that streams subscribe to), and
GetJob, WatchJob and CancelJob, whose lookups live in `job_rpcs` and which share the call's frame
(`_serve`) and the relay of a job's events (`relay.Relay`) with Stylize.

Each call is a coroutine on the event loop: it costs no thread, however slowly its caller reads.
Order of work: too many calls -> loading -> request key (attach to a running job or a
stored result) -> draining -> option and header checks against the server's limits (no decoding)
-> pixel-budget reservation -> queue slot -> decode on a decode thread -> run on a worker thread.
Every refusal before the queue costs microseconds and no image memory. Whatever raises, the stream
ends with a status (INTERNAL naming only the request id) and the job releases what it held.

A caller that leaves is CANCELLED (or DEADLINE_EXCEEDED) in the logs and metrics, whatever the
write it left in the middle of. A reader that accepts no bytes for `--stall-timeout` seconds has
its call ended (CANCELLED, STALLED) and its slot freed at once; its job is left like any other
caller's (a keyed one lingers for a re-attach), and the call itself waits for gRPC to let go of
it (the reader comes back, or its connection closes), counted against its caller meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from styletx.protocol import Engine
from styletx.tracing import child
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.errors import statuses
from styletx_server.errors.refusals import (
    Draining,
    InvalidKey,
    InvalidRequest,
    KeyReused,
    NotReady,
    Refused,
    Unauthenticated,
)
from styletx_server.errors.statuses import ErrorStatus, Reason, StopReason
from styletx_server.intake.decode import decode
from styletx_server.intake.inspection import Inspection, Limits, inspect, output_encoding
from styletx_server.jobs.job import StylizeJob, scoped_key
from styletx_server.jobs.mailbox import Final
from styletx_server.jobs.registry import (
    KEY_RULE,
    JobRegistry,
    StoredResult,
    request_digest,
    valid_key,
)
from styletx_server.observe.logs import REQUEST_ID_KEY, log_event, request_id_from
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.rpc.calls import (
    METHOD,
    AnyContext,
    Call,
    CallerGone,
    Context,
    ReaderStalled,
    abort,
    let_go,
)
from styletx_server.rpc.job_rpcs import JobRpcs
from styletx_server.rpc.relay import Relay
from styletx_server.scheduling.admission import AdmissionQueue, Throughput
from styletx_server.scheduling.budget import PixelBudget
from styletx_server.scheduling.slots import CallSlots, Slot, caller_of
from styletx_server.security.tenants import TenantDirectory

log = logging.getLogger(__name__)
T = TypeVar("T")


class Lifecycle:
    """Server-wide state the handlers and jobs consult."""

    def __init__(self) -> None:
        #: Set by the server once the model is loaded and warm.
        self.stylizer: Engine | None = None
        #: New jobs are refused with UNAVAILABLE (DRAINING); admitted ones continue.
        self.draining = threading.Event()
        #: Every job still running or waiting must stop now (grace period over).
        self.shutting_down = threading.Event()


@dataclass(frozen=True)
class ServicerParts:
    """Everything the servicer works with (built and owned by the server)."""

    limits: Limits
    admission: AdmissionQueue
    budget: PixelBudget
    registry: JobRegistry
    metrics: ServerMetrics
    lifecycle: Lifecycle
    throughput: Throughput
    decode_pool: Executor
    slots: CallSlots
    linger: float
    stall_timeout: float = 0.0
    #: Who each call is for (no tokens file: everyone is the default tenant).
    tenants: TenantDirectory = field(default_factory=TenantDirectory)


class StyleTransferServicer(pb_grpc.StyleTransferServiceServicer):
    """styletx.v1.StyleTransferService on grpc.aio."""

    def __init__(self, parts: ServicerParts, loop: asyncio.AbstractEventLoop) -> None:
        self._p = parts
        self._loop = loop
        self._live: set[StylizeJob] = set()
        self._live_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._relay = Relay(
            loop,
            metrics=parts.metrics,
            encode_pool=parts.decode_pool,
            withdraw=parts.admission.withdraw,
            linger=parts.linger,
            stall_timeout=parts.stall_timeout,
        )
        self._jobs = JobRpcs(
            parts.registry,
            serve=self._serve,
            relay=self._relay,
            stop=self.stop_jobs,
        )

    # -- the RPC -------------------------------------------------------------------------------

    async def Stylize(  # type: ignore[override]  # noqa: N802 (the gRPC method name)
        self, request: pb.StylizeRequest, context: Context
    ) -> None:
        await self._serve(
            context,
            METHOD,
            lambda call: self._stylize(request, context, call, call.arrived),
            slot=True,
        )

    async def GetJob(  # type: ignore[override]  # noqa: N802 (the gRPC method name)
        self, request: pb.GetJobRequest, context: AnyContext
    ) -> pb.GetJobResponse | None:
        return await self._jobs.get_job(request, context)

    async def WatchJob(  # type: ignore[override]  # noqa: N802 (the gRPC method name)
        self, request: pb.WatchJobRequest, context: AnyContext
    ) -> None:
        await self._jobs.watch_job(request, context)

    async def CancelJob(  # type: ignore[override]  # noqa: N802 (the gRPC method name)
        self, request: pb.CancelJobRequest, context: AnyContext
    ) -> pb.CancelJobResponse | None:
        return await self._jobs.cancel_job(request, context)

    async def _serve(
        self,
        context: AnyContext,
        method: str,
        work: Callable[[Call], Awaitable[T]],
        *,
        slot: bool,
    ) -> T | None:
        """Run one call's `work` and end the call whatever happens: its status, its slot (when it
        takes one: a stream that may last), its record. None when the call ended without a
        response (refused, failed, or gone)."""
        request_id = request_id_from(context.invocation_metadata())
        call = Call(
            request_id=request_id, peer=context.peer(), arrived=time.monotonic(), method=method
        )
        arrived = call.arrived
        held: Slot | None = None
        try:
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
            tenant = self._p.tenants.identify(context.invocation_metadata(), context.auth_context())
            if tenant is None:
                raise Unauthenticated("no tenant for the caller's credentials")
            call.tenant = tenant
            if slot:
                held = self._p.slots.acquire(caller_of(call.peer), tenant)
            return await work(call)
        except Refused as refusal:
            # Every refusal, wherever it was found, ends the call here.
            status = statuses.for_refusal(refusal, self._p.admission.retry_after())
            call.refused(refusal)
            await self._abort(context, call, status)
        except ReaderStalled as stalled:
            assert held is not None
            await self._stalled(context, call, arrived, held, stalled)
        except grpc.aio.AbortError:
            raise  # the call ended with its status (`_abort`)
        except asyncio.CancelledError:
            call.ended_by_caller(context)
            raise
        except CallerGone:
            call.ended_by_caller(context)
            await let_go()
        except Exception as exc:
            if context.done():  # the call is over: nobody to tell, nothing went wrong here
                call.code = None
                call.ended_by_caller(context)
            else:
                log_event(
                    log,
                    "call_failed",
                    level=logging.ERROR,
                    exc_info=exc,
                    request_id=request_id,
                )
                await self._abort(context, call, statuses.internal(request_id))
        finally:
            if held is not None:
                held.close()
            call.record(self._p.metrics)
        return None

    async def _stalled(
        self, context: AnyContext, call: Call, arrived: float, slot: Slot, stalled: ReaderStalled
    ) -> None:
        """End a stalled call now for everyone but gRPC: free its slot, record it, set its
        status; then wait until gRPC lets go of it (its reader comes back and gets the status,
        or its connection closes)."""
        slot.stall()
        call.fields["stalled_seconds"] = round(stalled.seconds, 3)
        call.end(context, statuses.stalled(stalled.seconds))
        call.record(self._p.metrics)
        try:
            await stalled.write
        except grpc.aio.BaseError:  # the connection closed: nobody to send the status to
            await let_go()

    async def _abort(self, context: AnyContext, call: Call, status: ErrorStatus) -> None:
        """End the call with `status` now (raises grpc.aio.AbortError out of the handler),
        recorded first: the caller may act on the status before the handler unwinds."""
        await abort(context, call, status, self._p.metrics)

    async def _stylize(
        self,
        request: pb.StylizeRequest,
        context: AnyContext,
        call: Call,
        arrived: float,
    ) -> None:
        """The request's path: engine ready -> request key (attach) -> draining -> intake ->
        admission (pixel budget, queue) -> decode (a task) -> follow the job. Each step raises
        its refusal; `Stylize` turns it into the call's status."""
        p = self._p
        engine = p.lifecycle.stylizer
        if engine is None:
            raise NotReady("model is loading")
        key = request.request_key or None
        digest = None
        if key is not None:
            call.fields["request_key"] = key
            digest = await self._attach_or_digest(request, key, context, call, arrived)
            if digest is None:
                return  # attached: the call followed the existing job or got its result
        if p.lifecycle.draining.is_set():
            raise Draining("draining")
        with child("intake"):
            inspection = inspect(request, p.limits, engine)
        job = self._admit(call, key, digest, inspection, engine)
        task = asyncio.ensure_future(self._decode(job, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await self._relay.follow(
            job, context, call, arrived, (inspection.output_format, inspection.output_quality)
        )

    async def _attach_or_digest(
        self, request: pb.StylizeRequest, key: str, context: Context, call: Call, arrived: float
    ) -> bytes | None:
        """Follow the job or stored result of `key` and return None; or, when the key is new,
        return the request's digest for the new job."""
        if not valid_key(key):
            raise InvalidKey(KEY_RULE)
        # Hashing a large request takes milliseconds: not on the loop.
        digest = await asyncio.to_thread(request_digest, request)
        found = self._p.registry.lookup(scoped_key(call.tenant.name, key))
        if found is None:
            return digest
        if found.digest != digest:
            raise KeyReused(key)
        # Only the encoding may differ from the job's: the caller gets its own.
        encoding = output_encoding(request)
        if isinstance(found, StoredResult):
            call.fields["attached"] = "stored"
            await self._relay.deliver(found.final, context, call, encoding)
        else:
            call.fields["attached"] = "running"
            await self._relay.follow(found, context, call, arrived, encoding)
        return None

    def _admit(
        self,
        call: Call,
        key: str | None,
        digest: bytes | None,
        inspection: Inspection,
        engine: Engine,
    ) -> StylizeJob:
        """Reserve the request's pixels and queue its job (OverBudget, QueueFull, QueueClosed)."""
        p = self._p
        reservation = p.budget.reserve(inspection.pixels)
        job = StylizeJob(
            request_id=call.request_id,
            key=key,
            digest=digest,
            inspection=inspection,
            reservation=reservation,
            engine=engine,
            metrics=p.metrics,
            throughput=p.throughput,
            shutting_down=p.lifecycle.shutting_down.is_set,
            on_done=self._job_done,
            tenant=call.tenant,
        )
        try:
            p.admission.submit(job)
        except Refused:
            reservation.release()
            raise
        with self._live_lock:
            self._live.add(job)
        if key is not None:
            p.registry.add(job)
        return job

    # -- decoding (after admission) ---------------------------------------------------------------

    async def _decode(self, job: StylizeJob, request: pb.StylizeRequest) -> None:
        """Decode on a decode thread, then make the job runnable; a failure ends the job."""
        p = self._p
        status: ErrorStatus | None = None
        try:
            with child("decode"):
                spec = await self._loop.run_in_executor(
                    p.decode_pool, decode, request, job.inspection, p.limits.max_pixels
                )
            if job.final is None:
                pixels = p.metrics.image_pixels
                pixels.labels(role="content").observe(spec.content.shape[0] * spec.content.shape[1])
                for style in spec.styles:
                    pixels.labels(role="style").observe(style.shape[0] * style.shape[1])
                job.input_sizes = (
                    _size(spec.content.shape),
                    [_size(style.shape) for style in spec.styles],
                )
        except InvalidRequest as exc:
            status = statuses.for_refusal(exc, 0.0)
        except Exception as exc:
            status = statuses.for_exception(exc, job.request_id)
            if status.reason is Reason.INTERNAL:
                log_event(
                    log,
                    "decode_failed",
                    level=logging.ERROR,
                    exc_info=exc,
                    request_id=job.request_id,
                )
        if status is not None:
            job.fail(status)
            p.admission.withdraw(job)
            return
        if job.abandoned:  # stopped while decoding: leave the queue (on_dropped ends it)
            p.admission.withdraw(job)
            return
        job.set_spec(spec)
        p.admission.mark_ready()

    def _job_done(self, job: StylizeJob, final: Final) -> None:
        """Called once per job, from whichever thread ended it."""
        self._p.registry.finish(job, final)
        with self._live_lock:
            self._live.discard(job)
        handle = job.linger
        if handle is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(handle.cancel)

    # -- server-wide operations -------------------------------------------------------------

    def live_jobs(self) -> list[StylizeJob]:
        with self._live_lock:
            return list(self._live)

    def stop_jobs(self, reason: StopReason, jobs: list[StylizeJob] | None = None) -> None:
        """Stop `jobs` (default: all) for `reason`: waiting ones leave the queue now, running
        ones stop within one evaluation; their callers get the matching status."""
        for job in self.live_jobs() if jobs is None else jobs:
            job.stop(reason)
            self._p.admission.withdraw(job)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


__all__ = ["METHOD", "Lifecycle", "ServicerParts", "StyleTransferServicer"]
