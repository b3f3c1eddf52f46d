"""Client-side balancing and health over real loopback sockets with fake replicas: each request
key goes to its rendezvous replica, distinct keys spread, DNS names are resolved and followed."""

from __future__ import annotations

import asyncio
import socket
from contextlib import ExitStack
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from styletx_client import (
    AsyncStyleTransferClient,
    AuthenticationError,
    ServingStatus,
    StyleTransferClient,
    UnavailableError,
)
from styletx_client._routing import RESOLVE_INTERVAL, rendezvous_rank
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


def test_a_key_always_reaches_its_rendezvous_replica() -> None:
    with ExitStack() as stack:
        replicas = three_replicas(stack)
        by_address = {r.address: r for r in replicas}
        keys = [f"order-{i}" for i in range(CALLS)]
        with StyleTransferClient(",".join(by_address)) as client:
            for key in keys * 2:
                client.stylize(b"c", b"s", request_key=key)
    for key in keys:
        home = by_address[rendezvous_rank(key, by_address)[0]]
        assert keys_on(home).count(key) == 2, key


def test_a_replica_that_is_gone_hands_its_keys_to_the_next_by_rank() -> None:
    with ExitStack() as stack:
        replicas = three_replicas(stack)
        by_address = {r.address: r for r in replicas}
        key = "order-7"
        home, second, third = (by_address[a] for a in rendezvous_rank(key, by_address))
        home.server.stop(None)
        with StyleTransferClient(",".join(by_address), sleep=no_sleep) as client:
            client.stylize(b"c", b"s", request_key=key)
        assert keys_on(second) == [key]
        assert keys_on(third) == []


class FakeDns:
    """getaddrinfo for one made-up name; every other name resolves as usual."""

    NAME = "styletx.test"

    def __init__(self, monkeypatch: pytest.MonkeyPatch, ips: list[str]) -> None:
        self.ips = ips
        self.lookups = 0
        real = socket.getaddrinfo

        def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host != self.NAME:
                return real(host, port, *args, **kwargs)
            self.lookups += 1
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port))) for ip in self.ips]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_dns_target_is_resolved_by_the_sdk_and_followed_as_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    with ExitStack() as stack:
        first = stack.enter_context(serve(host=ips[0]))
        port = int(first.address.rsplit(":", 1)[1])
        replicas = [first] + [stack.enter_context(serve(host=ip, port=port)) for ip in ips[1:]]
        dns = FakeDns(monkeypatch, ips[:2])
        clock = Clock()
        target = f"dns:///{FakeDns.NAME}:{port}"
        with StyleTransferClient(target, clock=clock) as client:
            for _ in range(SPREAD_CALLS):
                client.stylize(b"c", b"s")
            assert dns.lookups == 1
            counts = [len(r.servicer.calls) for r in replicas]
            assert counts[2] == 0 and min(counts[:2]) >= 10, counts
            # A replica is added and one leaves: seen at the next resolution, on a timer.
            dns.ips = ips[1:]
            clock.now += RESOLVE_INTERVAL
            for _ in range(SPREAD_CALLS):
                client.stylize(b"c", b"s")
            assert dns.lookups == 2
        later = [len(r.servicer.calls) - before for r, before in zip(replicas, counts, strict=True)]
    assert later[0] == 0 and min(later[1:]) >= 10, later


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


def test_the_async_client_resolves_dns_targets_too(monkeypatch: pytest.MonkeyPatch) -> None:
    ips = ["127.0.0.1", "127.0.0.2"]
    with ExitStack() as stack:
        first = stack.enter_context(serve(host=ips[0]))
        port = int(first.address.rsplit(":", 1)[1])
        replicas = [first, stack.enter_context(serve(host=ips[1], port=port))]
        dns = FakeDns(monkeypatch, ips)

        async def run() -> ServingStatus:
            async with AsyncStyleTransferClient(f"dns:///{FakeDns.NAME}:{port}") as client:
                for _ in range(SPREAD_CALLS):
                    await client.stylize(b"c", b"s")
                return await client.health()

        assert asyncio.run(run()) is ServingStatus.SERVING
        counts = [len(r.servicer.calls) for r in replicas]
    assert dns.lookups == 1
    assert min(counts) >= 10, counts
