"""Hostile and unlucky readers: a reader that accepts no bytes does not pin a
call slot, a caller that leaves is CANCELLED (never INTERNAL, no traceback), one caller cannot
hold more than its share of the slots, and the connection-age grace closes what is left.

The readers are raw HTTP/2 connections advertising a zero receive window (`h2`): nothing reads
on their behalf, as a gRPC client library would.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest

from styletx.engine import Stylizer
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


def _requests(server: Any, code: str, reason: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "styletx_requests_total",
        {"method": "Stylize", "code": code, "reason": reason, "tenant": "default"},
    )
    return float(value or 0.0)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


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
