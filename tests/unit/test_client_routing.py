"""Key-affine routing: target plans, rendezvous ranking, the router's endpoints, DNS schedule."""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

import pytest

from styletx_client import CancelledError
from styletx_client._routing import (
    DOWN_FOR,
    MIN_RESOLVE_INTERVAL,
    RESOLVE_INTERVAL,
    AddressList,
    ChannelSpec,
    DnsName,
    Router,
    SingleTarget,
    plan_target,
    rendezvous_rank,
    resolve,
)

A, B, C = "10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"
LIST = "ipv4:127.0.0.1:1,127.0.0.2:1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Opened:
    """A fake transport: records every channel spec opened; connections are the specs."""

    def __init__(self) -> None:
        self.specs: list[ChannelSpec] = []

    def __call__(self, spec: ChannelSpec) -> ChannelSpec:
        self.specs.append(spec)
        return spec


@pytest.mark.parametrize(
    ("target", "lb_policy", "plan"),
    [
        ("localhost:50051", None, SingleTarget("localhost:50051")),
        ("ipv4:127.0.0.1:1", None, SingleTarget("ipv4:127.0.0.1:1")),
        (LIST, None, AddressList(("127.0.0.1:1", "127.0.0.2:1"))),
        ("ipv6:[::1]:1,[0::2]:1", None, AddressList(("[::1]:1", "[::2]:1"))),
        ("dns:///styletx-headless:50051", None, DnsName("styletx-headless", 50051)),
        ("dns:styletx:7", None, DnsName("styletx", 7)),
        ("dns:///styletx", None, DnsName("styletx", 443)),
        ("dns:///[::1]:9", None, DnsName("::1", 9)),
        ("dns://8.8.8.8/styletx:1", None, SingleTarget("dns://8.8.8.8/styletx:1")),
        ("dns:///styletx:50051", "round_robin", SingleTarget("dns:///styletx:50051")),
        (
            "ipv4:127.0.0.1:1,127.0.0.2:1",
            "pick_first",
            SingleTarget("ipv4:127.0.0.1:1,127.0.0.2:1"),
        ),
        ("unix:/tmp/s.sock", None, SingleTarget("unix:/tmp/s.sock")),
    ],
)
def test_plan_target(target: str, lb_policy: str | None, plan: object) -> None:
    assert plan_target(target, lb_policy=lb_policy) == plan


def test_dns_authority_brackets_ipv6() -> None:
    assert DnsName("styletx", 50051).authority == "styletx:50051"
    assert DnsName("::1", 9).authority == "[::1]:9"


def test_rendezvous_rank_is_a_deterministic_permutation() -> None:
    ranked = rendezvous_rank("key-1", [A, B, C])
    assert sorted(ranked) == sorted([A, B, C])
    assert rendezvous_rank("key-1", [C, A, B]) == ranked  # the order given does not matter


def test_rendezvous_spreads_keys_evenly() -> None:
    homes = Counter(rendezvous_rank(f"key-{i}", [A, B, C])[0] for i in range(3000))
    assert set(homes) == {A, B, C}
    assert all(800 < count < 1200 for count in homes.values()), homes


def test_removing_an_address_moves_only_its_own_keys() -> None:
    keys = [f"key-{i}" for i in range(1000)]
    before = {k: rendezvous_rank(k, [A, B, C]) for k in keys}
    after = {k: rendezvous_rank(k, [A, C])[0] for k in keys}
    for key in keys:
        if before[key][0] != B:
            assert after[key] == before[key][0]  # unaffected keys stay home
        else:
            assert after[key] == before[key][1]  # B's keys go to their second choice


def static_router(clock: Clock | None = None) -> tuple[Router[ChannelSpec], Opened]:
    opened = Opened()
    router = Router(AddressList((A, B, C)), opened, clock or Clock())
    return router, opened


def test_an_address_list_opens_one_channel_per_address() -> None:
    _, opened = static_router()
    assert [spec.target for spec in opened.specs] == [f"ipv4:{a}" for a in (A, B, C)]
    assert all(spec.authority is None for spec in opened.specs)


def test_a_key_goes_to_its_rendezvous_home_every_time() -> None:
    router, _ = static_router()
    for i in range(20):
        key = f"key-{i}"
        home = rendezvous_rank(key, [A, B, C])[0]
        assert {router.pick(key).address for _ in range(3)} == {home}


def test_without_a_key_calls_go_round_robin() -> None:
    router, _ = static_router()
    assert Counter(router.pick("").address for _ in range(9)) == {A: 3, B: 3, C: 3}


def test_avoided_and_down_addresses_fall_back_by_rank() -> None:
    clock = Clock()
    router, _ = static_router(clock)
    first, second, third = rendezvous_rank("k", [A, B, C])
    assert router.pick("k", avoid={first}).address == second
    router.mark_down(first)
    assert router.pick("k").address == second  # others' calls skip it for a while too
    clock.now += DOWN_FOR + 0.1
    assert router.pick("k").address == first
    # When every address is avoided, a call still gets one: the best by rank.
    assert router.pick("k", avoid={first, second, third}).address == first


def test_the_replica_that_streamed_a_job_is_preferred_until_avoided() -> None:
    router, _ = static_router()
    first, second, _ = rendezvous_rank("k", [A, B, C])
    assert router.pick("k", prefer=second).address == second
    assert router.pick("k", prefer=second, avoid={second}).address == first


def dns_router(clock: Clock) -> tuple[Router[ChannelSpec], Opened]:
    opened = Opened()
    return Router(DnsName("styletx.test", 50051), opened, clock), opened


def test_a_dns_name_is_resolved_first_and_then_on_a_timer() -> None:
    clock = Clock()
    router, opened = dns_router(clock)
    # Before any answer, calls use one gRPC-resolved channel to the name.
    assert router.pick("k").address == "dns:///styletx.test:50051"
    name = router.resolution_due()
    assert name == DnsName("styletx.test", 50051)
    assert router.resolution_due() is None  # one resolution at a time
    router.resolved([A, B])
    assert sorted(router.addresses) == [A, B]
    assert [s.authority for s in opened.specs] == ["styletx.test:50051"] * 3
    clock.now += RESOLVE_INTERVAL - 1
    assert router.resolution_due() is None
    clock.now += 1
    assert router.resolution_due() is not None


def test_departed_addresses_close_once_their_last_call_ends() -> None:
    clock = Clock()
    router, _ = dns_router(clock)
    router.resolution_due()
    fallback_closed = router.resolved([A, B])
    assert [c.target for c in fallback_closed] == ["dns:///styletx.test:50051"]
    busy = router.pick("", avoid={B})
    assert busy.address == A
    clock.now += RESOLVE_INTERVAL
    router.resolution_due()
    assert router.resolved([B, C]) == []  # A still has a call in flight
    assert sorted(router.addresses) == [B, C]
    assert [c.target for c in router.release(busy)] == [f"ipv4:{A}"]


def test_a_failed_resolution_keeps_the_known_addresses_and_retries_soon() -> None:
    clock = Clock()
    router, _ = dns_router(clock)
    router.resolution_due()
    router.resolved([A])
    clock.now += RESOLVE_INTERVAL
    router.resolution_due()
    router.resolved(None)
    assert router.addresses == [A]
    clock.now += MIN_RESOLVE_INTERVAL
    assert router.resolution_due() is not None


def test_a_connection_failure_brings_the_next_resolution_forward() -> None:
    clock = Clock()
    router, _ = dns_router(clock)
    router.resolution_due()
    router.resolved([A, B])
    clock.now += MIN_RESOLVE_INTERVAL
    assert router.resolution_due() is None
    router.mark_down(A)
    assert router.resolution_due() is not None


def test_a_closed_router_returns_every_connection_and_refuses_calls() -> None:
    router, _ = static_router()
    assert len(router.close()) == 3
    with pytest.raises(CancelledError):
        router.pick("k")


def test_resolve_returns_canonical_unique_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "styletx.test"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00:0::1", port, 0, 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert resolve(DnsName("styletx.test", 50051)) == ["10.0.0.1:50051", "[fd00::1]:50051"]
