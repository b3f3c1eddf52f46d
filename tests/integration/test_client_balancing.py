"""Client-side balancing and health over real loopback sockets with fake replicas: gRPC's own
round_robin spreads calls (keyed ones too: a fleet's replicas all serve every key) and passes over
a replica that is gone; a `dns:` name is resolved by gRPC, not the SDK."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import ExitStack

import pytest
from grpc_health.v1 import health_pb2

from styletx_client import (
    AsyncStyleTransferClient,
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
SPREAD_CALLS = 60  # P(a replica gets fewer than 5 of 60 random keys) is about 1e-6


def three_replicas(stack: ExitStack) -> list[FakeServer]:
    return [stack.enter_context(serve()) for _ in range(3)]


def no_sleep(seconds: float) -> None:
    return None


def keys_on(replica: FakeServer) -> list[str]:
    return [c.request.request_key for c in replica.servicer.calls]


def test_distinct_keys_spread_over_every_replica() -> None:
    with ExitStack() as stack:
        replicas = three_replicas(stack)
        target = ",".join(r.address for r in replicas)
        with StyleTransferClient(target) as client:
            assert client.target.startswith("ipv4:")
            for _ in range(SPREAD_CALLS):
                client.stylize(b"c", b"s")  # a fresh random key each
        counts = [len(r.servicer.calls) for r in replicas]
    assert sum(counts) == SPREAD_CALLS
    assert min(counts) >= 5, counts


def test_one_key_is_not_steered_to_one_replica() -> None:
    """The SDK no longer hashes keys to replicas: the same key's calls go round robin (each
    replica of a fleet finds the job in the shared store)."""
    with ExitStack() as stack:
        replicas = three_replicas(stack)
        with StyleTransferClient(",".join(r.address for r in replicas)) as client:
            for _ in range(SPREAD_CALLS):
                client.stylize(b"c", b"s", request_key="order-7")
        counts = [keys_on(r).count("order-7") for r in replicas]
    assert sum(counts) == SPREAD_CALLS
    assert min(counts) >= 5, counts


def test_a_replica_that_is_gone_is_passed_over() -> None:
    with ExitStack() as stack:
        replicas = three_replicas(stack)
        replicas[0].server.stop(None)
        with StyleTransferClient(",".join(r.address for r in replicas), sleep=no_sleep) as client:
            for i in range(CALLS):
                client.stylize(b"c", b"s", request_key=f"order-{i}")
        counts = [len(r.servicer.calls) for r in replicas]
    assert counts[0] == 0 and sum(counts) == CALLS and min(counts[1:]) >= 2, counts


def test_a_dns_target_is_resolved_and_balanced_by_grpc() -> None:
    """`dns:///name:port` is one gRPC channel with round_robin: gRPC's resolver finds the
    replica (here `localhost`; the SDK calls no getaddrinfo of its own)."""
    with serve() as fake:
        port = int(fake.address.rsplit(":", 1)[1])
        with StyleTransferClient(f"dns:///localhost:{port}") as client:
            for i in range(CALLS):
                client.stylize(b"c", b"s", request_key=f"order-{i}")
            assert client.health() is ServingStatus.SERVING
        assert Counter(keys_on(fake)) == Counter(f"order-{i}" for i in range(CALLS))


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


def test_the_async_client_balances_round_robin_too() -> None:
    with ExitStack() as stack:
        replicas = three_replicas(stack)
        target = ",".join(r.address for r in replicas)

        async def run() -> ServingStatus:
            async with AsyncStyleTransferClient(target) as client:
                for _ in range(SPREAD_CALLS):
                    await client.stylize(b"c", b"s", request_key="order-7")
                return await client.health()

        assert asyncio.run(run()) is ServingStatus.SERVING
        counts = [len(r.servicer.calls) for r in replicas]
    assert sum(counts) == SPREAD_CALLS and min(counts) >= 5, counts
