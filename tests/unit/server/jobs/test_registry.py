"""The job registry (keys, stored results bounded by TTL, count and bytes) and key rules."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from styletx.options import StyleOptions
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.jobs.job import JobSnapshot, JobTimes
from styletx_server.jobs.mailbox import Final
from styletx_server.jobs.registry import JobRegistry, StoredResult, request_digest, valid_key
from styletx_server.jobs.views import Gone


class FakeJob:
    """What the registry reads of a job: its key and digest, and what its ended record says."""

    def __init__(self, key: str | None, digest: bytes = b"d") -> None:
        self.key = key
        #: The registry files a job under this (the tenant-scoped key; here the key itself).
        self.registry_key = key
        self.digest = digest
        self.request_id = "r"
        self.inspection = SimpleNamespace(options=StyleOptions())
        self.times = JobTimes()

    def snapshot(self) -> JobSnapshot:
        return JobSnapshot(None, None, None, None, None)


def result(size: int) -> Final:
    return Final(
        response=pb.StylizeResponse(result=pb.ResultEvent(image=pb.EncodedImage(data=b"x" * size)))
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def registry(clock: Clock, **limits: Any) -> JobRegistry:
    values = {"result_ttl": 60.0, "max_results": 10, "max_result_bytes": 10_000, **limits}
    return JobRegistry(clock=clock, **values)


def finish(reg: JobRegistry, key: str, size: int = 100) -> None:
    job: Any = FakeJob(key)
    reg.add(job)
    reg.finish(job, result(size))


def test_running_then_stored_then_expired() -> None:
    clock = Clock()
    reg = registry(clock)
    job: Any = FakeJob("k")
    reg.add(job)
    assert reg.lookup("k") is job
    with pytest.raises(KeyError):
        reg.add(FakeJob("k"))  # type: ignore[arg-type]
    reg.finish(job, result(10))
    stored = reg.lookup("k")
    assert isinstance(stored, StoredResult) and stored.digest == b"d"
    clock.now = 61
    assert reg.lookup("k") is None
    assert reg.stored == (0, 0)


def test_failed_jobs_leave_no_result() -> None:
    reg = registry(Clock())
    job: Any = FakeJob("k")
    reg.add(job)
    reg.finish(job, Final(status=None))
    assert reg.lookup("k") is None and reg.running == 0


def test_results_are_bounded_by_count_oldest_first() -> None:
    reg = registry(Clock(), max_results=2)
    for key in ("a", "b", "c"):
        finish(reg, key)
    assert reg.lookup("a") is None
    assert reg.lookup("b") is not None and reg.lookup("c") is not None


def test_results_are_bounded_by_bytes() -> None:
    reg = registry(Clock(), max_result_bytes=2500)
    for key in ("a", "b", "c"):
        finish(reg, key, size=1000)
    count, size = reg.stored
    assert count == 2 and size <= 2500 and reg.lookup("a") is None
    finish(reg, "huge", size=5000)  # larger than the whole store: not kept, nothing evicted
    assert reg.lookup("huge") is None and reg.stored[0] == 2


def test_unkeyed_jobs_are_never_registered() -> None:
    reg = registry(Clock())
    reg.finish(FakeJob(None), result(10))  # type: ignore[arg-type]
    assert reg.stored == (0, 0)


@pytest.mark.parametrize(
    "key", ["a", "A-z.0_9~:x", "u" * 128, "550e8400-e29b-41d4-a716-446655440000"]
)
def test_valid_keys(key: str) -> None:
    assert valid_key(key)


@pytest.mark.parametrize("key", ["", "u" * 129, "a b", "a/b", "ä", "a\n"])
def test_invalid_keys(key: str) -> None:
    assert not valid_key(key)


def test_digest_follows_the_payload() -> None:
    one = pb.StylizeRequest(content_image=b"abc", request_key="k")
    same = pb.StylizeRequest(content_image=b"abc", request_key="k")
    other = pb.StylizeRequest(content_image=b"abd", request_key="k")
    assert request_digest(one) == request_digest(same) != request_digest(other)


def test_digest_leaves_out_only_how_the_result_is_delivered() -> None:
    base = pb.StylizeRequest(
        content_image=b"abc",
        style_images=[pb.StyleImage(image=b"s", weight=0.5)],
        options=pb.StyleOptions(size=64, seed=3),
        request_key="k",
    )
    delivery = pb.StylizeRequest()
    delivery.CopyFrom(base)
    delivery.output_format = pb.IMAGE_FORMAT_WEBP
    delivery.output_quality = 40
    delivery.preview_every = 5
    assert request_digest(delivery) == request_digest(base)
    for change in (
        lambda r: setattr(r.options, "seed", 4),
        lambda r: setattr(r.style_images[0], "weight", 0.6),
        lambda r: r.style_images.add(image=b"t"),
        lambda r: setattr(r, "content_image", b"abd"),
        lambda r: r.options.ClearField("size"),
    ):
        other = pb.StylizeRequest()
        other.CopyFrom(base)
        change(other)
        assert request_digest(other) != request_digest(base)


def test_a_tenants_results_evict_only_its_own() -> None:
    """The attack: 70 one-evaluation keyed jobs of one tenant evicted another tenant's result
    12 s after it ended (TTL 600 s, 64 results kept)."""
    clock = Clock()
    reg = registry(clock, result_ttl=600.0, max_results=64, max_result_bytes=10**9)
    finish(reg, "victim/order-1")
    for index in range(70):
        clock.now += 0.1
        finish(reg, f"flood/k{index}")
    assert isinstance(reg.lookup("victim/order-1"), StoredResult)
    assert reg.stored[0] == 64
    # The flood's own oldest made room: its record says why its result is gone.
    assert reg.lookup("flood/k0") is None and reg.lookup("flood/k69") is not None
    record = reg.ended.get("flood/k0")
    assert record is not None and record.result is Gone.EVICTED


def test_a_tenant_under_its_share_takes_room_from_the_one_holding_most() -> None:
    reg = registry(Clock(), max_results=4)
    for index in range(4):
        finish(reg, f"big/k{index}")
    finish(reg, "small/k0")
    assert reg.lookup("small/k0") is not None and reg.lookup("big/k0") is None
    assert all(reg.lookup(f"big/k{index}") is not None for index in (1, 2, 3))


def test_bytes_are_shared_the_same_way() -> None:
    reg = registry(Clock(), max_result_bytes=3100)  # three results of 1000 bytes (and framing)
    finish(reg, "victim/a", size=1000)
    for index in range(5):
        finish(reg, f"flood/k{index}", size=1000)
    assert reg.lookup("victim/a") is not None and reg.stored[0] == 3
    assert reg.lookup("flood/k4") is not None and reg.lookup("flood/k3") is not None


def test_a_result_too_large_to_keep_is_marked_not_kept() -> None:
    reg = registry(Clock(), max_result_bytes=500)
    finish(reg, "t/huge", size=1000)
    record = reg.ended.get("t/huge")
    assert reg.lookup("t/huge") is None and record is not None and record.result is Gone.NOT_KEPT
