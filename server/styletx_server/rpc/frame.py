"""The frame every call of the service runs in: who is calling (tenant), its call slot, its one
status and its one record, whatever its work does.

A refusal raised anywhere in a call's work ends the call here, as its gRPC status
(`statuses.for_refusal`); so does anything unexpected (INTERNAL naming only the request id). A
caller that leaves is CANCELLED (or DEADLINE_EXCEEDED) in the logs and metrics, whatever the write
it left in the middle of. A reader that accepts no bytes for `--stall-timeout` seconds has its
call ended (CANCELLED, STALLED) at once, whether it keeps its connection open or not: its slot and
its caller's share go back, its handler returns (its request and job go with it), and its status
waits in gRPC behind the message it does not take, until it comes back or its stream closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from styletx_server.errors import statuses
from styletx_server.errors.refusals import Refused, Unauthenticated
from styletx_server.errors.statuses import ErrorStatus
from styletx_server.observe.logs import REQUEST_ID_KEY, log_event, request_id_from
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.rpc.calls import (
    AnyContext,
    Call,
    CallerGone,
    ReaderStalled,
    abort,
    end_stalled,
    let_go,
)
from styletx_server.scheduling.admission import AdmissionQueue
from styletx_server.scheduling.slots import CallSlots, Slot, caller_of
from styletx_server.security.tenants import TenantDirectory

log = logging.getLogger(__name__)
T = TypeVar("T")


class CallFrame:
    """Runs calls' work between their arrival and their one status and record."""

    def __init__(
        self,
        *,
        tenants: TenantDirectory,
        slots: CallSlots,
        admission: AdmissionQueue,
        metrics: ServerMetrics,
    ) -> None:
        self._tenants = tenants
        self._slots = slots
        self._admission = admission
        self._metrics = metrics

    async def serve(
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
        held: Slot | None = None
        try:
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
            tenant = self._tenants.identify(context.invocation_metadata(), context.auth_context())
            if tenant is None:
                raise Unauthenticated("no tenant for the caller's credentials")
            call.tenant = tenant
            if slot:
                held = self._slots.acquire(caller_of(call.peer), tenant)
            return await work(call)
        except Refused as refusal:
            # Every refusal, wherever it was found, ends the call here.
            status = statuses.for_refusal(refusal, self._admission.retry_after())
            call.refused(refusal)
            await self.abort(context, call, status)
        except ReaderStalled as stalled:
            assert held is not None
            await self._stalled(context, call, held, stalled)
        except grpc.aio.AbortError:
            raise  # the call ended with its status (`abort`)
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
                    log, "call_failed", level=logging.ERROR, exc_info=exc, request_id=request_id
                )
                await self.abort(context, call, statuses.internal(request_id))
        finally:
            if held is not None and not held.stalled:  # a stalled one closes with its stream
                held.close()
            call.record(self._metrics)
        return None

    async def _stalled(
        self, context: AnyContext, call: Call, slot: Slot, stalled: ReaderStalled
    ) -> None:
        """End a stalled call now: give back its slot and its caller's share, record it, queue
        its status behind the message its reader does not take, and return (the handler ends).
        The slot counts it as stalled until gRPC lets go of its stream."""
        status = statuses.stalled(stalled.seconds)
        slot.stall()
        call.fields["stalled_seconds"] = round(stalled.seconds, 3)
        call.code, call.reason = status.code, status.reason
        call.record(self._metrics)
        await end_stalled(context, status, released=slot.close)

    async def abort(self, context: AnyContext, call: Call, status: ErrorStatus) -> None:
        """End the call with `status` now (raises grpc.aio.AbortError out of the handler),
        recorded first: the caller may act on the status before the handler unwinds."""
        await abort(context, call, status, self._metrics)


__all__ = ["CallFrame"]
