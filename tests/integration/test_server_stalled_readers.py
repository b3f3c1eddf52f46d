"""Hostile and unlucky readers: a reader that accepts no bytes does not pin a
call slot, its caller's share or its handler, a caller that leaves is CANCELLED (never INTERNAL,
no traceback), one caller cannot hold more than its share of the slots, and the connection-age
grace closes what is left.

The readers are raw HTTP/2 connections advertising a zero receive window (`h2`): nothing reads
on their behalf, as a gRPC client library would.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.ops.grpc_server import LoopThread
from tests.integration.conftest import (
    WAIT,
    GatedStylizer,
    ServerFactory,
    collect,
    make_request,
    wait_for,
)
from tests.support.zero_window import ZeroWindowClient

STALL = 0.5
#: The readers' address and the stubs' (both connect from 127.0.0.1): one caller.
SHARED = "ipv4:127.0.0.1"
#: How long after its calls stalled one address may wait for its next call.
NEXT_CALL_WITHIN = STALL + 1.0
#: grpc.aio names each call's handler task so (grpc/_cython/_cygrpc/aio/server.pyx.pxi).
HANDLER_TASK = "HandleExceptions["


def _requests(server: Any, code: str, reason: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "styletx_requests_total",
        {"method": "Stylize", "code": code, "reason": reason, "tenant": "default"},
    )
    return float(value or 0.0)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _tasks(prefix: str = "") -> int:
    """Tasks on the servers' event loop now whose name starts with `prefix` (all: "")."""

    async def count() -> int:
        mine = asyncio.current_task()
        return sum(t.get_name().startswith(prefix) for t in asyncio.all_tasks() if t is not mine)

    return asyncio.run_coroutine_threadsafe(count(), LoopThread.get()).result(WAIT)


def _next_call(stub: Any, began: float) -> tuple[float, list[pb.StylizeResponse]]:
    """Open Stylize calls until one is admitted (not RESOURCE_EXHAUSTED): the seconds from
    `began` to its first event, and all its events."""
    while True:
        stream: Iterator[pb.StylizeResponse] = stub.Stylize(make_request(), timeout=WAIT)
        try:
            first = next(stream)
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            assert time.monotonic() - began < WAIT, "the caller never got another call"
            time.sleep(0.02)
            continue
        admitted = time.monotonic() - began
        return admitted, [first, *stream]


def test_zero_window_readers_give_their_slots_back_within_the_stall_timeout(
    server_factory: ServerFactory, stub_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = server_factory(max_calls=4, max_peer_share=1.0, stall_timeout=STALL, queue_size=8)
    reader = ZeroWindowClient(server.port, source="127.0.0.2")
    try:
        reader.open_calls(make_request(), 4)
        wait_for(lambda: server.slots.stalled == 4)
        assert server.slots.open == 0
        # Every other caller is served as if they were not there.
        events = collect(stub_for(server), make_request())
        assert events[-1].HasField("result")
        assert _requests(server, "CANCELLED", "stalled") == 4
    finally:
        reader.close()
    # Once their connection is gone, gRPC lets go of them too.
    wait_for(lambda: server.slots.stalled == 0 and server.slots.held_by("ipv4:127.0.0.2") == 0)
    assert _requests(server, "INTERNAL", "internal") == 0
    assert _errors(caplog) == []


def test_stalled_readers_kept_open_then_closed_free_their_caller_s_share_and_handlers(
    server_factory: ServerFactory, stub_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's attack: two zero-window readers from one address take its whole share (2 of
    8); within the stall timeout they are ended and hold nothing any more, not even while they
    keep their connections open: the same address's next call is served."""
    caplog.set_level(logging.INFO)
    server = server_factory(max_calls=8, max_peer_share=0.25, stall_timeout=STALL, queue_size=8)
    stub = stub_for(server)
    assert server.slots.per_caller == 2
    handlers, tasks = _tasks(HANDLER_TASK), _tasks()
    readers = [ZeroWindowClient(server.port) for _ in range(2)]
    try:
        began = time.monotonic()
        streams = [reader.open_calls(make_request())[0] for reader in readers]
        wait_for(lambda: server.slots.held_by(SHARED) == 2)
        assert _tasks(HANDLER_TASK) == handlers + 2  # the count below counts them
        # Kept open: the address's next call is served once they stalled, not refused for ever.
        waited, events = _next_call(stub, began)
        assert events[-1].HasField("result")
        assert waited < NEXT_CALL_WITHIN, f"the address waited {waited:.2f} s"
        assert _requests(server, "CANCELLED", "stalled") == 2
        # Nothing of theirs is left on this side: no slot, no share, no handler.
        assert server.slots.open == 0 and server.slots.held_by(SHARED) == 0
        wait_for(lambda: _tasks(HANDLER_TASK) == handlers, NEXT_CALL_WITHIN)
        # gRPC still holds their HTTP/2 streams (their status waits behind the unread message).
        assert server.slots.stalled == 2
        assert all(reader.status(s) is None for reader, s in zip(readers, streams, strict=True))
        # Then closed: one reader resets its call (what a proxy sends when its client leaves),
        # the other drops its connection; gRPC lets go of both.
        readers[0].reset(streams[0])
        readers[1].close()
        wait_for(lambda: server.slots.stalled == 0)
        wait_for(lambda: _tasks() == tasks)
    finally:
        for reader in readers:
            reader.close()
    assert _requests(server, "INTERNAL", "internal") == 0
    assert _errors(caplog) == []
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_a_reader_that_comes_back_gets_the_message_and_the_stalled_status(
    server_factory: ServerFactory, stub_for: Any
) -> None:
    """The call ended while its reader was away; the reader that comes back is told so."""
    server = server_factory(stall_timeout=STALL)
    reader = ZeroWindowClient(server.port)
    try:
        stream = reader.open_calls(make_request())[0]
        wait_for(lambda: server.slots.stalled == 1)
        assert server.slots.held_by(SHARED) == 0
        reader.open_window(stream)
        wait_for(lambda: reader.status(stream) is not None)
        assert reader.status(stream) == str(grpc.StatusCode.CANCELLED.value[0])
        assert reader.streams[stream].data_bytes > 0
        wait_for(lambda: server.slots.stalled == 0)
    finally:
        reader.close()


def test_vanished_readers_free_their_caller_s_share_and_handlers(
    server_factory: ServerFactory, stub_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Readers that close their connections before the stall timeout free as much, as soon."""
    caplog.set_level(logging.INFO)
    server = server_factory(max_calls=8, max_peer_share=0.25, stall_timeout=STALL, queue_size=8)
    stub = stub_for(server)
    handlers, tasks = _tasks(HANDLER_TASK), _tasks()
    readers = [ZeroWindowClient(server.port) for _ in range(2)]
    try:
        began = time.monotonic()
        for reader in readers:
            reader.open_calls(make_request())
        wait_for(lambda: server.slots.held_by(SHARED) == 2)
        for reader in readers:
            reader.close()
        waited, events = _next_call(stub, began)
        assert events[-1].HasField("result")
        assert waited < NEXT_CALL_WITHIN, f"the address waited {waited:.2f} s"
        assert server.slots.held_by(SHARED) == 0 and server.slots.stalled == 0
        wait_for(lambda: _tasks(HANDLER_TASK) == handlers, NEXT_CALL_WITHIN)
        wait_for(lambda: _tasks() == tasks)
    finally:
        for reader in readers:
            reader.close()
    assert _requests(server, "INTERNAL", "internal") == 0
    assert _errors(caplog) == []


def test_a_caller_that_leaves_mid_write_is_cancelled_never_internal(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = server_factory(stall_timeout=0)  # the write waits for as long as the reader stays
    reader = ZeroWindowClient(server.port)
    reader.open_calls(make_request(), 2)
    wait_for(lambda: server.slots.open == 2)
    reader.close()
    wait_for(lambda: server.slots.open == 0 and server.slots.stalled == 0)
    wait_for(lambda: _requests(server, "CANCELLED", "cancelled") == 2)
    assert _requests(server, "INTERNAL", "internal") == 0
    assert _errors(caplog) == []
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_one_caller_holds_at_most_its_share_of_the_slots(
    server_factory: ServerFactory, stub_for: Any
) -> None:
    server = server_factory(max_calls=4, max_peer_share=0.5, stall_timeout=0, queue_size=8)
    reader = ZeroWindowClient(server.port, source="127.0.0.3")
    try:
        streams = reader.open_calls(make_request(), 4)
        wait_for(lambda: sum(reader.status(s) is not None for s in streams) == 2)
        refused = [s for s in streams if reader.status(s) is not None]
        assert {reader.status(s) for s in refused} == {
            str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        }
        assert server.slots.held_by("ipv4:127.0.0.3") == 2
        # Another caller still gets the other half.
        assert collect(stub_for(server), make_request())[-1].HasField("result")
        assert _requests(server, "RESOURCE_EXHAUSTED", "too_many_calls") == 2
    finally:
        reader.close()


def test_a_stalled_keyed_job_lingers_and_its_caller_re_attaches(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, stall_timeout=STALL, linger=WAIT)
    keyed = make_request(request_key="stalled-job-1")
    reader = ZeroWindowClient(server.port)
    try:
        reader.open_calls(keyed)
        wait_for(lambda: server.slots.stalled == 1)
        assert server.jobs.running == 1  # the job did not stop with its stalled caller
        gated.release()
        events = collect(stub_for(server), keyed)
        assert events[-1].HasField("result")
        assert gated.calls == 1  # computed once
    finally:
        reader.close()


def test_the_connection_age_grace_closes_connections_whose_reader_never_reads(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(stall_timeout=0, max_connection_age=0.5, max_connection_age_grace=1.0)
    reader = ZeroWindowClient(server.port)
    try:
        reader.open_calls(make_request())
        wait_for(lambda: server.slots.open == 1)
        # Age 0.5 s + grace 1 s: closed under the call, well before the old hard-coded hour.
        assert reader.wait_closed(WAIT)
        wait_for(lambda: server.slots.open == 0)
    finally:
        reader.close()
