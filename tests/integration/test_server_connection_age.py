"""--max-connection-age: old connections are recycled (GOAWAY) without failing calls in flight."""

from __future__ import annotations

import threading

import grpc

from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from tests.integration.conftest import (
    WAIT,
    GatedStylizer,
    ServerFactory,
    make_request,
    wait_for,
)


def _states(channel: grpc.Channel) -> list[grpc.ChannelConnectivity]:
    seen: list[grpc.ChannelConnectivity] = []
    channel.subscribe(seen.append, try_to_connect=False)
    return seen


def _after_ready(states: list[grpc.ChannelConnectivity]) -> list[grpc.ChannelConnectivity]:
    """States after the first READY (subscribing reports the initial IDLE first)."""
    ready = grpc.ChannelConnectivity.READY
    return states[states.index(ready) :] if ready in states else []


def test_connections_past_their_age_are_recycled_and_calls_in_flight_finish(
    server_factory: ServerFactory, stylizer: Stylizer
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(engine=gated, max_connection_age=0.3)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        states = _states(channel)
        stub = pb_grpc.StyleTransferServiceStub(channel)
        events: list[object] = []
        call = threading.Thread(
            target=lambda: events.extend(stub.Stylize(make_request(), timeout=WAIT))
        )
        call.start()
        assert gated.paused.wait(WAIT)
        # Hold the call well past the connection's age: the server sends GOAWAY but lets it run.
        threading.Event().wait(1.0)
        gated.release()
        call.join(WAIT)
        assert events and events[-1].HasField("result")  # type: ignore[attr-defined]
        # The connection was closed by the server after the call: the channel left READY.
        wait_for(lambda: grpc.ChannelConnectivity.IDLE in _after_ready(states))
        # And the channel reconnects for the next call.
        again = list(stub.Stylize(make_request(), timeout=WAIT))
        assert again[-1].HasField("result")


def test_connections_are_kept_when_the_age_is_zero(
    server_factory: ServerFactory, stylizer: Stylizer
) -> None:
    server = server_factory(max_connection_age=0)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        states = _states(channel)
        stub = pb_grpc.StyleTransferServiceStub(channel)
        assert list(stub.Stylize(make_request(), timeout=WAIT))[-1].HasField("result")
        threading.Event().wait(1.0)
        assert (
            grpc.ChannelConnectivity.IDLE
            not in states[states.index(grpc.ChannelConnectivity.READY) :]
        )
