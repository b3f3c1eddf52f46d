"""Streaming one job to one caller: its events as they come (coalesced when the caller reads
slowly), then its outcome in the caller's own encoding; a caller that leaves lets the job linger
(keyed) or stop.

Stylize relays the job it created or attached to; WatchJob relays a job it found by key, each
event converted to its own message type.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

import grpc
from google.protobuf.message import Message

from styletx.images import decode_image, encode_image
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.statuses import StopReason
from styletx_server.intake.convert import format_to_proto
from styletx_server.jobs.board import JobBoard
from styletx_server.jobs.job import StylizeJob
from styletx_server.jobs.mailbox import Final, Mailbox
from styletx_server.observe.logs import log_event
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.rpc.calls import METHOD, AnyContext, Call, abort, ended_by_caller, write

log = logging.getLogger(__name__)

#: Turns a Stylize event into the message a call sends (WatchJob's own type).
Convert = Callable[[pb.StylizeResponse], Message]


class Relay:
    """Relays jobs' events to the calls that follow them (one per server)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        metrics: ServerMetrics,
        encode_pool: Executor,
        board: JobBoard,
        linger: float,
        stall_timeout: float,
    ) -> None:
        self._loop = loop
        self._metrics = metrics
        self._encode_pool = encode_pool
        self._board = board
        self._linger = linger
        #: Keyed jobs nobody follows, each with the timer that stops it (the relay owns them).
        self._lingering: dict[StylizeJob, asyncio.TimerHandle] = {}
        self._stall_timeout = stall_timeout

    async def deliver(
        self,
        final: Final,
        context: AnyContext,
        call: Call,
        encoding: tuple[str, int] | None,
        convert: Convert | None = None,
    ) -> None:
        """Send a job's outcome: its result (in the caller's `encoding`, None: the job's own),
        or its error status."""
        if final.response is not None:
            response = await self._encoded(final, encoding, call)
            message = response if convert is None else convert(response)
            await write(context, message, self._stall_timeout)
            call.code, call.reason = grpc.StatusCode.OK, None
        else:
            assert final.status is not None
            await abort(context, call, final.status, self._metrics)

    async def send(self, context: AnyContext, message: Message) -> None:
        """Write one message to the call, within the stall timeout (ReaderStalled past it)."""
        await write(context, message, self._stall_timeout)

    async def _encoded(
        self, final: Final, encoding: tuple[str, int] | None, call: Call
    ) -> pb.StylizeResponse:
        """The result event in the caller's `encoding` (re-encoded off the loop when the job's
        was another: a caller that attached with only the format or quality changed)."""
        response = final.response
        assert response is not None
        if (
            encoding is None
            or final.encoding is None
            or not response.result.image.data
            or _same_encoding(final.encoding, encoding)
        ):
            return response
        fmt, quality = encoding
        data = await self._loop.run_in_executor(
            self._encode_pool,
            functools.partial(_reencode, final, response.result.image.data, fmt, quality),
        )
        call.fields["reencoded"] = fmt
        result = pb.ResultEvent()
        result.CopyFrom(response.result)
        result.image.data = data
        result.image.format = format_to_proto(fmt)
        return pb.StylizeResponse(result=result)

    async def follow(
        self,
        job: StylizeJob,
        context: AnyContext,
        call: Call,
        arrived: float,
        encoding: tuple[str, int] | None,
        convert: Convert | None = None,
    ) -> None:
        """Subscribe to `job` and relay its events until its final one (or the caller leaves);
        `convert` turns each event into the call's own message type (WatchJob's)."""
        mailbox = Mailbox(self._loop)
        job.subscribe(mailbox)
        handle = self._lingering.pop(job, None)
        if handle is not None:  # someone came back in time: keep the job
            handle.cancel()
        first_progress = True
        try:
            while True:
                item = await mailbox.get()
                if isinstance(item, Final):
                    call.add_job(job)
                    await self.deliver(item, context, call, encoding, convert)
                    return
                if first_progress and item.HasField("progress") and call.method == METHOD:
                    first_progress = False
                    self._metrics.time_to_first_progress.observe(time.monotonic() - arrived)
                message = item if convert is None else convert(item)
                await write(context, message, self._stall_timeout)
        except asyncio.CancelledError:
            call.code = None
            reason = call.ended_by_caller(context)
            call.add_job(job)
            self._leave(job, mailbox, reason)
            raise
        except BaseException:
            self._leave(job, mailbox, ended_by_caller(context))
            raise
        finally:
            if mailbox.coalesced:
                call.fields["coalesced_events"] = mailbox.coalesced
            job.unsubscribe(mailbox)

    def _leave(self, job: StylizeJob, mailbox: Mailbox, reason: StopReason) -> None:
        """The caller left: a job nobody watches lingers if it has a key, else stops now."""
        if job.unsubscribe(mailbox) > 0 or job.final is not None:
            return
        if job.key is not None and self._linger > 0:
            if job not in self._lingering:
                self._lingering[job] = self._loop.call_later(self._linger, self._linger_over, job)
            return
        self._board.stop(reason, [job])

    def _linger_over(self, job: StylizeJob) -> None:
        self._lingering.pop(job, None)
        if job.subscribers == 0 and job.final is None:
            log_event(log, "job_abandoned", request_id=job.request_id, request_key=job.key)
            self._board.stop(StopReason.CLIENT_CANCELLED, [job])


def _reencode(final: Final, data: bytes, fmt: str, quality: int) -> bytes:
    """`final`'s picture in another encoding: from its pixels where this replica holds them,
    else decoded from the job's encoding (a fleet's stored result; exact from PNG, the job's
    default, and from a lossy format its decoded pixels)."""
    pixels = final.pixels if final.pixels is not None else decode_image(data, field="result")
    return encode_image(pixels, fmt, quality=quality)


def _same_encoding(one: tuple[str, int], other: tuple[str, int]) -> bool:
    """True when both encodings give the same bytes (PNG has no quality)."""
    return one == other or (one[0] == other[0] == "png")


__all__ = ["Convert", "Relay"]
