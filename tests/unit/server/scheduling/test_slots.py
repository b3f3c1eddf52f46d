"""Call slots: the server's limit, one caller's share, and stalled calls, which hold neither a
slot nor a share of it."""

from __future__ import annotations

import pytest

from styletx_server.errors.refusals import TooManyCalls
from styletx_server.scheduling.slots import CallSlots, caller_of, share_limit


@pytest.mark.parametrize(
    ("peer", "caller"),
    [
        ("ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"),
        ("ipv6:[::1]:51234", "ipv6:[::1]"),
        ("ipv6:[2001:db8::1]:443", "ipv6:[2001:db8::1]"),
        ("unix:/tmp/styletx.sock", "unix:/tmp/styletx.sock"),
        ("ipv4:odd", "ipv4:odd"),
    ],
)
def test_a_caller_is_the_peer_address_without_its_port(peer: str, caller: str) -> None:
    assert caller_of(peer) == caller


@pytest.mark.parametrize(
    ("calls", "share", "limit"), [(64, 0.25, 16), (4, 0.5, 2), (3, 0.25, 1), (5, 1.0, 5)]
)
def test_share_limit(calls: int, share: float, limit: int) -> None:
    assert share_limit(calls, share) == limit


def test_the_server_limit_and_one_caller_s_share() -> None:
    changes: list[tuple[int, int]] = []
    slots = CallSlots(4, 2, on_change=lambda *counts: changes.append(counts))
    a1, a2 = slots.acquire("a"), slots.acquire("a")
    with pytest.raises(TooManyCalls) as caught:
        slots.acquire("a")
    assert caught.value.per_caller and caught.value.limit == 2
    b1, b2 = slots.acquire("b"), slots.acquire("b")
    with pytest.raises(TooManyCalls) as full:
        slots.acquire("c")
    assert not full.value.per_caller and full.value.limit == 4
    for slot in (a1, a2, b1, b2):
        slot.close()
        slot.close()  # idempotent
    assert slots.open == 0 and slots.held_by("a") == 0
    assert changes[-1] == (0, 0)


def test_a_stalled_call_frees_its_slot_and_its_caller_s_share_at_once() -> None:
    """Issue 27: a stalled call is ended; counting it against its caller until gRPC let go of
    its stream (never, while the reader keeps its connection open) locked the caller out."""
    changes: list[tuple[int, int]] = []
    slots = CallSlots(3, 2, on_change=lambda *counts: changes.append(counts))
    first, second = slots.acquire("a"), slots.acquire("a")
    first.stall()
    first.stall()  # idempotent
    assert slots.open == 1 and slots.stalled == 1 and slots.held_by("a") == 1
    assert changes[-1] == (1, 1)
    third = slots.acquire("a")  # its share is its own again
    with pytest.raises(TooManyCalls) as caught:
        slots.acquire("a")  # two live calls: its share
    assert caught.value.per_caller
    other = slots.acquire("b")  # the freed slot serves another caller
    first.close()  # gRPC let go of its stream
    first.close()  # idempotent
    assert slots.stalled == 0 and slots.held_by("a") == 2 and slots.open == 3
    for slot in (second, third, other):
        slot.close()
    assert slots.open == 0 and slots.held_by("a") == slots.held_by("b") == 0
    assert changes[-1] == (0, 0)


def test_a_closed_slot_cannot_stall() -> None:
    slots = CallSlots(1, 1)
    slot = slots.acquire("a")
    slot.close()
    slot.stall()
    assert slots.open == 0 and slots.stalled == 0
