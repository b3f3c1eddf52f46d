"""One Stylize call, top to bottom.

The frame (`frame.CallFrame`) has already authenticated the caller, found its tenant and given it
a call slot; then, in this order: the engine is loaded -> a request key attaches to its job or
stored result -> not draining -> options and image headers against the limits (no decoding) ->
the pixel budget and a queue slot -> decoding on a decode thread -> the job runs on a worker while
the relay streams its events. Every step raises its refusal (`errors.refusals`); the frame turns
it into the call's status. Every refusal before the queue costs microseconds and no image memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import Executor
from typing import Any, Protocol

from styletx.protocol import Engine
from styletx.tracing import child
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors import statuses
from styletx_server.errors.refusals import (
    Draining,
    InvalidKey,
    InvalidRequest,
    KeyReused,
    NotReady,
    Refused,
)
from styletx_server.errors.statuses import ErrorStatus, Reason
from styletx_server.intake.decode import decode
from styletx_server.intake.inspection import Limits, inspect, output_encoding
from styletx_server.jobs.board import JobBoard
from styletx_server.jobs.job import StylizeJob, scoped_key
from styletx_server.jobs.registry import KEY_RULE, StoredResult, request_digest, valid_key
from styletx_server.observe.logs import caller_text, log_event
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.rpc.calls import Call, Context
from styletx_server.rpc.relay import Relay
from styletx_server.scheduling.admission import Throughput
from styletx_server.scheduling.budget import PixelBudget
from styletx_server.security.tenants import Tenant

log = logging.getLogger(__name__)


class Lifecycle:
    """Server-wide state the calls and jobs consult."""

    def __init__(self) -> None:
        #: Set by the server once the model is loaded and warm.
        self.stylizer: Engine | None = None
        #: New jobs are refused with UNAVAILABLE (DRAINING); admitted ones continue.
        self.draining = threading.Event()
        #: Every job still running or waiting must stop now (grace period over).
        self.shutting_down = threading.Event()


class FleetStylize(Protocol):
    """Stylize where replicas share a job store (`rpc.fleet.FleetCalls`)."""

    async def stylize(
        self,
        request: pb.StylizeRequest,
        context: Context,
        call: Call,
        key: str | None,
        digest: bytes | None,
    ) -> None: ...


class Stylize:
    """The Stylize call's work (one per server)."""

    def __init__(
        self,
        *,
        limits: Limits,
        lifecycle: Lifecycle,
        budget: PixelBudget,
        board: JobBoard,
        relay: Relay,
        metrics: ServerMetrics,
        throughput: Throughput,
        decode_pool: Executor,
        fleet: FleetStylize | None = None,
    ) -> None:
        self._fleet = fleet
        self._limits = limits
        self._lifecycle = lifecycle
        self._budget = budget
        self._board = board
        self._relay = relay
        self._metrics = metrics
        self._throughput = throughput
        self._decode_pool = decode_pool
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, request: pb.StylizeRequest, context: Context, call: Call) -> None:
        if self._lifecycle.stylizer is None:
            raise NotReady("model is loading")

        key = request.request_key or None
        digest = None
        if key is not None:
            call.fields["request_key"] = caller_text(key)
            if not valid_key(key):
                raise InvalidKey(KEY_RULE)
            # Hashing a large request takes milliseconds: not on the loop.
            digest = await asyncio.to_thread(request_digest, request)

        if self._fleet is not None:  # the replicas share one queue: the job may run elsewhere
            await self._fleet.stylize(request, context, call, key, digest)
            return

        if key is not None:
            found = self._board.registry.lookup(scoped_key(call.tenant.name, key))
            if found is not None:
                if found.digest != digest:
                    raise KeyReused(key)
                # Only the encoding may differ from the job's: the caller gets its own.
                encoding = output_encoding(request)
                if isinstance(found, StoredResult):
                    call.fields["attached"] = "stored"
                    await self._relay.deliver(found.final, context, call, encoding)
                else:
                    call.fields["attached"] = "running"
                    await self._relay.follow(found, context, call, call.arrived, encoding)
                return

        if self._lifecycle.draining.is_set():
            raise Draining("draining")

        job = self.open_job(
            request, request_id=call.request_id, tenant=call.tenant, key=key, digest=digest
        )
        encoding = (job.inspection.output_format, job.inspection.output_quality)
        await self._relay.follow(job, context, call, call.arrived, encoding)

    def open_job(
        self,
        request: pb.StylizeRequest,
        *,
        request_id: str,
        tenant: Tenant,
        key: str | None,
        digest: bytes | None,
    ) -> StylizeJob:
        """Inspect `request` against the limits, reserve its pixels, queue its job and decode
        its images beside the caller; raises the refusal of the first step that fails."""
        engine = self._lifecycle.stylizer
        if engine is None:
            raise NotReady("model is loading")
        with child("intake"):
            inspection = inspect(request, self._limits, engine)

        reservation = self._budget.reserve(inspection.pixels)
        job = StylizeJob(
            request_id=request_id,
            key=key,
            digest=digest,
            inspection=inspection,
            reservation=reservation,
            engine=engine,
            metrics=self._metrics,
            throughput=self._throughput,
            ledger=self._board,
            shutting_down=self._lifecycle.shutting_down.is_set,
            tenant=tenant,
        )
        try:
            self._board.admit(job)
        except Refused:
            reservation.release()
            raise

        self._background(self._decode(job, request))
        return job

    async def _decode(self, job: StylizeJob, request: pb.StylizeRequest) -> None:
        """Decode on a decode thread, then make the job runnable; a failure ends the job."""
        status: ErrorStatus | None = None
        try:
            with child("decode"):
                loop = asyncio.get_running_loop()
                spec = await loop.run_in_executor(
                    self._decode_pool, decode, request, job.inspection, self._limits.max_pixels
                )
            if job.final is None:
                job.accounting.decoded(spec.content.shape, [s.shape for s in spec.styles])
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
            self._board.withdraw(job)
        elif job.abandoned:  # stopped while decoding: leave the queue (on_dropped ends it)
            self._board.withdraw(job)
        else:
            self._board.runnable(job, spec)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` beside the call (kept referenced until it ends)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = ["FleetStylize", "Lifecycle", "Stylize"]
