"""Client-side load balancing and health over real loopback sockets with fake replicas."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from grpc_health.v1 import health_pb2

from styletx_client import (
    AuthenticationError,
    ServingStatus,
    StyleTransferClient,
    UnavailableError,
)
from tests.support.fake_server import (
    FakeServer,
    closed_port_address,
    serve,
)

CALLS = 12


def three_replicas(stack: ExitStack) -> list[FakeServer]:
    return [stack.enter_context(serve()) for _ in range(3)]


def test_an_address_list_spreads_calls_over_every_replica_round_robin() -> None:
    with ExitStack() as stack:
        replicas = three_replicas(stack)
        target = ",".join(r.address for r in replicas)
        with StyleTransferClient(target) as client:
            assert client.target.startswith("ipv4:")
            for _ in range(CALLS):
                client.stylize(b"c", b"s")
        counts = [len(r.servicer.calls) for r in replicas]
    assert sum(counts) == CALLS
    assert min(counts) >= 2, counts


def test_pick_first_sends_everything_to_one_replica() -> None:
    """The contrast that shows round robin is the SDK's doing, not gRPC's default."""
    with ExitStack() as stack:
        replicas = three_replicas(stack)
        target = ",".join(r.address for r in replicas)
        with StyleTransferClient(target, lb_policy="pick_first") as client:
            for _ in range(CALLS):
                client.stylize(b"c", b"s")
        counts = sorted(len(r.servicer.calls) for r in replicas)
    assert counts == [0, 0, CALLS]


def test_health_states() -> None:
    with serve() as fake, StyleTransferClient(fake.address) as client:
        assert client.health() is ServingStatus.SERVING
        fake.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert client.health() is ServingStatus.NOT_SERVING
        assert client.health("styletx.v1.StyleTransferService") is ServingStatus.SERVING
        assert client.health("unknown.Service") is ServingStatus.SERVICE_UNKNOWN


def test_health_maps_errors_and_sends_the_token() -> None:
    with StyleTransferClient(closed_port_address()) as client, pytest.raises(UnavailableError):
        client.health(timeout=5)
    with serve(token="s3cret") as fake:
        with StyleTransferClient(fake.address) as anonymous, pytest.raises(AuthenticationError):
            anonymous.health()
        with StyleTransferClient(fake.address, token="s3cret") as client:
            assert client.health() is ServingStatus.SERVING
