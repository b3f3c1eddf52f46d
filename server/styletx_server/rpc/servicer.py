"""The asyncio servicer of styletx.v1.StyleTransferService: each RPC runs its work in the call
frame (`frame.CallFrame`: tenant, slot, status, record). Stylize's work reads top to bottom in
`stylize.Stylize`; GetJob, WatchJob and CancelJob's in `job_rpcs.JobRpcs`.

Each call is a coroutine on the event loop: it costs no thread, however slowly its caller reads.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.intake.inspection import Limits
from styletx_server.jobs.board import JobBoard
from styletx_server.jobs.job import StylizeJob
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.rpc.calls import METHOD, AnyContext, Context
from styletx_server.rpc.fleet import FleetCalls
from styletx_server.rpc.frame import CallFrame
from styletx_server.rpc.job_rpcs import JobRpcs
from styletx_server.rpc.relay import Relay
from styletx_server.rpc.stylize import Lifecycle, Stylize
from styletx_server.scheduling.admission import AdmissionQueue, Throughput
from styletx_server.scheduling.budget import PixelBudget
from styletx_server.scheduling.slots import CallSlots
from styletx_server.security.tenants import TenantDirectory
from styletx_server.store.protocol import JobStore


@dataclass(frozen=True)
class ServicerParts:
    """Everything the servicer works with (built and owned by the server)."""

    limits: Limits
    admission: AdmissionQueue
    budget: PixelBudget
    board: JobBoard
    metrics: ServerMetrics
    lifecycle: Lifecycle
    throughput: Throughput
    decode_pool: Executor
    slots: CallSlots
    linger: float
    stall_timeout: float = 0.0
    #: Who each call is for (no tokens file: everyone is the default tenant).
    tenants: TenantDirectory = field(default_factory=TenantDirectory)
    #: The job store the replicas share (--store redis://...); None: this replica on its own.
    store: JobStore | None = None


class StyleTransferServicer(pb_grpc.StyleTransferServiceServicer):
    """styletx.v1.StyleTransferService on grpc.aio."""

    def __init__(self, parts: ServicerParts, loop: asyncio.AbstractEventLoop) -> None:
        self.board = parts.board
        self._frame = CallFrame(
            tenants=parts.tenants,
            slots=parts.slots,
            admission=parts.admission,
            metrics=parts.metrics,
        )
        relay = Relay(
            loop,
            metrics=parts.metrics,
            encode_pool=parts.decode_pool,
            board=parts.board,
            linger=parts.linger,
            stall_timeout=parts.stall_timeout,
        )
        self.fleet = (
            None
            if parts.store is None
            else FleetCalls(
                parts.store,
                limits=parts.limits,
                lifecycle=parts.lifecycle,
                relay=relay,
                metrics=parts.metrics,
                capacity=parts.admission.capacity,
                retry_after=parts.admission.retry_after,
            )
        )
        self._stylize = Stylize(
            limits=parts.limits,
            lifecycle=parts.lifecycle,
            budget=parts.budget,
            board=parts.board,
            relay=relay,
            metrics=parts.metrics,
            throughput=parts.throughput,
            decode_pool=parts.decode_pool,
            fleet=self.fleet,
        )
        self.open_job = self._stylize.open_job
        self._jobs = JobRpcs(parts.board, frame=self._frame, relay=relay)

    async def Stylize(  # type: ignore[override]  # noqa: N802 (the gRPC method name)
        self, request: pb.StylizeRequest, context: Context
    ) -> None:
        await self._frame.serve(
            context, METHOD, lambda call: self._stylize(request, context, call), slot=True
        )

    async def GetJob(  # type: ignore[override]  # noqa: N802 (the gRPC method name)
        self, request: pb.GetJobRequest, context: AnyContext
    ) -> pb.GetJobResponse | None:
        if self.fleet is not None:
            fleet = self.fleet
            return await self._frame.serve(
                context, "GetJob", lambda call: fleet.get_job(request, call), slot=False
            )
        return await self._jobs.get_job(request, context)

    async def WatchJob(  # type: ignore[override]  # noqa: N802 (the gRPC method name)
        self, request: pb.WatchJobRequest, context: AnyContext
    ) -> None:
        if self.fleet is not None:
            fleet = self.fleet
            await self._frame.serve(
                context, "WatchJob", lambda call: fleet.watch_job(request, context, call), slot=True
            )
            return
        await self._jobs.watch_job(request, context)

    async def CancelJob(  # type: ignore[override]  # noqa: N802 (the gRPC method name)
        self, request: pb.CancelJobRequest, context: AnyContext
    ) -> pb.CancelJobResponse | None:
        if self.fleet is not None:
            fleet = self.fleet
            return await self._frame.serve(
                context,
                "CancelJob",
                lambda call: fleet.cancel_job(request, context, call),
                slot=False,
            )
        return await self._jobs.cancel_job(request, context)

    def live_jobs(self) -> list[StylizeJob]:
        """Every job of this replica still waiting or running."""
        return self.board.live()


__all__ = ["METHOD", "Lifecycle", "ServicerParts", "StyleTransferServicer"]
