"""The job store's contract, one suite run against both stores (memory and a real Redis).

Each test is a scenario on `Harness`: the memory store on a fake clock, Redis on real time with
half-second leases and one-second TTLs (so the few tests that wait stay short).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from styletx_server.scheduling.fairqueue import FairQueue
from styletx_server.store.protocol import (
    MAX_ATTEMPTS,
    AdmitRequest,
    Claim,
    Created,
    Existing,
    Fenced,
    JobRecord,
    JobState,
    JobStore,
    Outcome,
    Refusal,
    ResultFate,
)
from tests.unit.server.store.conftest import Harness

MIB = 1024 * 1024


def request(
    tenant: str = "a", key: str | None = None, digest: bytes = b"d1", **kw: Any
) -> AdmitRequest:
    return AdmitRequest(tenant, key, digest, **kw)


async def admit(store: JobStore, tenant: str = "a", key: str | None = None, **kw: Any) -> JobRecord:
    admission = await store.admit(request(tenant, key, **kw))
    assert isinstance(admission, Created), admission
    return admission.record


async def claim_one(store: JobStore, owner: str = "r1") -> Claim:
    (claim,) = await store.claim(owner, 1)
    return claim


DONE = Outcome(JobState.DONE)


# -- filing and finding ------------------------------------------------------------------------


def test_a_job_is_found_by_its_tenants_key_and_by_no_other_tenant(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        admission = await store.admit(request("a", "k1", payload=b"the request"))
        assert isinstance(admission, Created) and admission.position == 1
        record = admission.record
        assert (record.tenant, record.key, record.digest) == ("a", "k1", b"d1")
        assert record.state is JobState.QUEUED and (record.attempt, record.token) == (0, 0)
        assert await store.find("a", "k1") == record
        assert await store.get(record.job_id) == record
        assert await store.find("b", "k1") is None
        assert await store.payload(record.job_id) == b"the request"
        # The same key again: the job there, and whether it is the same computation.
        same = await store.admit(request("a", "k1"))
        assert isinstance(same, Existing) and same.same_request and same.record == record
        other = await store.admit(request("a", "k1", digest=b"d2"))
        assert isinstance(other, Existing) and not other.same_request  # KEY_REUSED
        # Another tenant's equal key is another job.
        theirs = await admit(store, "b", "k1")
        assert theirs.job_id != record.job_id
        assert (await store.find("b", "k1")) == theirs
        unkeyed = await admit(store, "a", None)
        assert unkeyed.key is None and (await store.counts()).queued == 3

    harness.run(scenario)


def test_a_key_attaches_to_a_kept_result_and_runs_anew_after_a_failure(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        first = await admit(store, "a", "k")
        claim = await claim_one(store)
        await store.complete(claim.lease, Outcome(JobState.DONE, result=b"image"))
        again = await store.admit(request("a", "k"))
        assert isinstance(again, Existing) and again.record.state is JobState.DONE
        failed = await admit(store, "a", "f")
        claim = await claim_one(store)
        await store.complete(claim.lease, Outcome(JobState.FAILED, reason="engine"))
        retry = await admit(store, "a", "f")
        assert retry.job_id != failed.job_id and retry.state is JobState.QUEUED
        assert await store.find("a", "f") == retry
        assert (await store.get(failed.job_id)).state is JobState.FAILED  # type: ignore[union-attr]
        assert first.job_id != retry.job_id

    harness.run(scenario)


# -- the queue: fair order, bounds, quotas -------------------------------------------------------


def test_tenants_share_the_queue_by_weight_in_todays_fair_order(harness: Harness) -> None:
    arrivals = [("light", 1.0)] * 40 + [("heavy", 3.0)] * 40

    async def scenario(store: JobStore) -> None:
        ids = {}
        for n, (tenant, weight) in enumerate(arrivals):
            record = await admit(store, tenant, capacity=100, weight=weight)
            ids[record.job_id] = (tenant, n)
        positions = {i: await store.position(i) for i in ids}
        by_position = sorted(ids, key=lambda i: positions[i] or 0)
        claimed = []
        while claims := await store.claim("r1", 7):
            claimed += [c.record.job_id for c in claims]
        assert claimed == by_position  # positions tell the claim order
        first = [ids[i][0] for i in claimed[:40]]
        assert abs(first.count("heavy") - 30) <= 1, first  # 1:3 within one job
        # The same order as the in-process fair queue the server runs today.
        queue: FairQueue[int] = FairQueue()
        for n, (tenant, weight) in enumerate(arrivals):
            queue.push(n, tenant, weight)
        today = [queue.take(lambda _: True) for _ in arrivals]
        assert [ids[i][1] for i in claimed] == today

    harness.run(scenario)


def test_the_queue_bound_and_tenant_quotas_refuse_with_their_counts(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        for _ in range(2):
            await admit(store, "a", capacity=4)
        await claim_one(store)
        await admit(store, "b", capacity=4, max_queued=2)
        await admit(store, "b", capacity=4, max_queued=2)
        quota = await store.admit(request("b", capacity=4, max_queued=2))
        assert quota == Refusal("max_queued", 2, queued=3, tenant_queued=2, tenant_running=0)
        await admit(store, "a", capacity=4)
        full = await store.admit(request("a", capacity=4))
        assert full == Refusal("queue", 4, queued=4, tenant_queued=2, tenant_running=1)
        counts = await store.counts()
        assert (counts.queued, counts.running) == (4, 1)
        assert (counts.tenants["a"].queued, counts.tenants["a"].running) == (2, 1)
        assert (counts.tenants["b"].queued, counts.tenants["b"].running) == (2, 0)

    harness.run(scenario)


def test_a_bound_on_places_counts_running_jobs_too(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        places = {"capacity": 3, "count_running": True}
        await admit(store, "a", **places)
        await admit(store, "a", **places)
        await claim_one(store)
        await admit(store, "a", **places)  # 2 queued + 1 running: the third place
        full = await store.admit(request("a", **places))
        assert full == Refusal("queue", 3, queued=2, tenant_queued=2, tenant_running=1)
        # The same counts under a bound on queued jobs alone: room for one more.
        assert isinstance(await store.admit(request("a", capacity=3)), Created)

    harness.run(scenario)


def test_claim_takes_k_in_order_skipping_tenants_at_max_running(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        a = [await admit(store, "a", max_running=1) for _ in range(3)]
        b = await admit(store, "b")
        claims = await store.claim("r1", 3)
        assert [c.record.job_id for c in claims] == [a[0].job_id, b.job_id]
        for claim in claims:
            record, lease = claim.record, claim.lease
            assert record.state is JobState.RUNNING and record.owner == "r1"
            assert (record.attempt, record.token, lease.token) == (1, 1, 1)
            assert record.times.started is not None and lease.deadline == record.deadline
            assert lease.deadline > record.times.admitted
        assert await store.claim("r2", 3) == []  # a is at its max_running
        await store.complete(claims[0].lease, DONE)
        (next_a,) = await store.claim("r2", 3)
        assert next_a.record.job_id == a[1].job_id and next_a.lease.owner == "r2"
        assert await store.position(a[2].job_id) == 1
        counts = await store.counts()
        assert (counts.queued, counts.running) == (1, 2)

    harness.run(scenario)


def test_replicas_claiming_at_once_take_each_job_once(harness: Harness) -> None:
    async def scenario(stores: list[JobStore]) -> None:
        for n in range(24):
            await admit(stores[0], f"t{n % 3}", capacity=100)

        async def work(store: JobStore, name: str) -> list[str]:
            taken: list[str] = []
            while claims := await store.claim(name, 2):
                taken += [c.record.job_id for c in claims]
                await asyncio.sleep(0)
            return taken

        taken = await asyncio.gather(*(work(s, f"r{i}") for i, s in enumerate(stores)))
        every = [job for jobs in taken for job in jobs]
        assert len(every) == len(set(every)) == 24

    harness.run_many(4, scenario)


# -- leases, fencing, attempts -------------------------------------------------------------------


def test_a_renewed_lease_holds_and_a_lapsed_one_is_requeued_with_a_new_token(
    harness: Harness,
) -> None:
    async def scenario(store: JobStore) -> None:
        job = await admit(store)
        first = await claim_one(store, "r1")
        await harness.advance(0.6 * harness.lease)
        beat = await store.heartbeat("r1", [first.lease])
        assert beat.lost == () and beat.renewed[0].deadline > first.lease.deadline
        await harness.advance(0.6 * harness.lease)
        assert (await store.reap()).requeued == ()  # renewed: still held
        await harness.advance(1.3 * harness.lease)  # r1 is gone: no heartbeat
        reaped = await store.reap()
        assert reaped.requeued == (job.job_id,)
        record = await store.get(job.job_id)
        assert record is not None and record.state is JobState.QUEUED
        assert (record.lost, record.owner) == (1, None)
        second = await claim_one(store, "r2")
        assert (second.record.attempt, second.lease.token) == (2, 2)
        # The first attempt is fenced: nothing it writes lands.
        assert (await store.heartbeat("r1", [first.lease])).lost == (job.job_id,)
        with pytest.raises(Fenced):
            await store.append(first.lease, "progress", b"stale")
        with pytest.raises(Fenced):
            await store.complete(first.lease, Outcome(JobState.DONE, result=b"stale"))
        assert await store.events(job.job_id) == []
        done = await store.complete(second.lease, Outcome(JobState.DONE, result=b"fresh"))
        assert done.record.state is JobState.DONE and await store.result(job.job_id) == b"fresh"
        with pytest.raises(Fenced):  # an ended job takes no second outcome
            await store.complete(second.lease, DONE)

    harness.run(scenario)


def test_a_job_that_loses_max_attempts_fails_with_its_own_reason(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        job = await admit(store, "a", "poison")
        for attempt in (1, 2):
            claim = await claim_one(store, f"r{attempt}")
            assert claim.record.attempt == attempt
            await harness.advance(1.3 * harness.lease)
            reaped = await store.reap()
        assert reaped.failed == (job.job_id,) and reaped.requeued == ()
        record = await store.get(job.job_id)
        assert record is not None and record.state is JobState.FAILED
        assert (record.reason, record.lost, record.owner) == (MAX_ATTEMPTS, 2, None)
        assert record.times.ended is not None
        counts = await store.counts()
        assert (counts.queued, counts.running) == (0, 0)

    harness.run(scenario, max_attempts=2)


def test_hand_back_requeues_at_once_ahead_of_later_jobs(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        first = await admit(store)
        second = await admit(store)
        claim = await claim_one(store)
        assert await store.hand_back([claim.lease]) == [first.job_id]
        record = await store.get(first.job_id)
        assert record is not None and record.state is JobState.QUEUED and record.lost == 0
        assert await store.position(first.job_id) == 1
        assert await store.position(second.job_id) == 2
        again = await claim_one(store, "r2")
        assert again.record.job_id == first.job_id and again.lease.token == 2
        assert await store.hand_back([claim.lease]) == []  # stale: not held
        with pytest.raises(Fenced):
            await store.append(claim.lease, "x", b"")
        # A job its caller cancelled is not handed to another replica: it ends.
        await store.cancel(first.job_id, "caller")
        assert await store.hand_back([again.lease]) == []
        record = await store.get(first.job_id)
        assert record is not None and record.state is JobState.CANCELLED
        assert record.reason == "caller" and await store.position(second.job_id) == 1

    harness.run(scenario)


def test_a_cancel_ends_a_queued_job_and_reaches_a_running_ones_owner(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        running = await admit(store, "a", "run")
        queued = await admit(store, "a", "wait")
        claim = await claim_one(store)
        ended = await store.cancel(queued.job_id, "caller")
        assert ended is not None and ended.state is JobState.CANCELLED and ended.reason == "caller"
        assert await store.position(queued.job_id) is None
        asked = await store.cancel(running.job_id, "caller")
        assert asked is not None and asked.state is JobState.RUNNING and asked.cancel == "caller"
        beat = await store.heartbeat("r1", [claim.lease])
        assert beat.cancel == {running.job_id: "caller"}
        done = await store.complete(claim.lease, Outcome(JobState.CANCELLED, reason="caller"))
        assert done.record.state is JobState.CANCELLED
        assert await store.cancel("no-such-job") is None
        counts = await store.counts()
        assert (counts.queued, counts.running) == (0, 0)

    harness.run(scenario)


def test_a_cancelled_job_whose_owner_died_ends_cancelled(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        job = await admit(store)
        await claim_one(store)
        await store.cancel(job.job_id)
        await harness.advance(1.3 * harness.lease)
        assert (await store.reap()).cancelled == (job.job_id,)
        assert (await store.get(job.job_id)).state is JobState.CANCELLED  # type: ignore[union-attr]

    harness.run(scenario)


# -- events and results ----------------------------------------------------------------------


def test_events_have_increasing_ids_resume_from_an_id_and_are_capped(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        job = await admit(store)
        lease = (await claim_one(store)).lease
        ids = [await store.append(lease, "progress", f"{n}".encode()) for n in range(8)]
        assert ids == list(range(1, 9))
        kept = await store.events(job.job_id)
        assert [e.id for e in kept] == [4, 5, 6, 7, 8]  # the newest five
        assert [e.data for e in kept][:2] == [b"3", b"4"] and kept[0].kind == "progress"
        assert [e.id for e in await store.events(job.job_id, after=6)] == [7, 8]
        assert [e.id for e in await store.events(job.job_id, after=4, limit=2)] == [5, 6]
        await store.complete(lease, Outcome(JobState.DONE, event=("result", b"final")))
        (last,) = await store.events(job.job_id, after=8)
        assert (last.id, last.kind, last.data) == (9, "result", b"final")
        assert await store.events(job.job_id, after=9) == []

    harness.run(scenario, max_events=5)


def test_a_large_result_is_stored_in_chunks_and_read_back_byte_identical(
    harness: Harness,
) -> None:
    data = os.urandom(2 * MIB + 12345)

    async def scenario(store: JobStore) -> None:
        job = await admit(store, "a", "big")
        lease = (await claim_one(store)).lease
        done = await store.complete(lease, Outcome(JobState.DONE, result=data, detail=b"view"))
        assert done.record.result is ResultFate.KEPT and done.record.result_size == len(data)
        assert done.record.detail == b"view"
        assert await store.result(job.job_id) == data
        assert await store.payload(job.job_id) is None  # dropped at the end
        if harness.redis is not None:
            chunks = harness.redis.client().llen(f"{{styletx}}:result:{job.job_id}")
            assert chunks == 3
        empty = await admit(store)
        lease = (await claim_one(store)).lease
        await store.complete(lease, Outcome(JobState.DONE, result=b""))
        assert await store.result(empty.job_id) == b""

    harness.run(scenario)


def test_each_tenant_has_its_own_result_budget(harness: Harness) -> None:
    async def finish(
        store: JobStore, tenant: str, key: str, size: int
    ) -> tuple[str, tuple[str, ...]]:
        job = await admit(store, tenant, key)
        lease = (await claim_one(store)).lease
        done = await store.complete(lease, Outcome(JobState.DONE, result=bytes(size)))
        return job.job_id, done.evicted

    async def scenario(store: JobStore) -> None:
        a1, _ = await finish(store, "a", "1", 60)
        b1, _ = await finish(store, "b", "1", 60)
        a2, evicted = await finish(store, "a", "2", 60)
        assert evicted == (a1,)  # a's own oldest, never b's
        assert (await store.get(a1)).result is ResultFate.EVICTED  # type: ignore[union-attr]
        assert await store.result(a1) is None
        assert await store.result(b1) == bytes(60) and await store.result(a2) == bytes(60)
        a3, evicted = await finish(store, "a", "3", 150)
        assert evicted == () and (await store.get(a3)).result is ResultFate.NOT_KEPT  # type: ignore[union-attr]
        assert await store.result(a3) is None
        counts = await store.counts()
        assert counts.tenants["a"].result_bytes == 60 and counts.tenants["b"].result_bytes == 60
        # The evicted result's key runs anew; the kept one attaches.
        assert isinstance(await store.admit(request("a", "1")), Created)
        assert isinstance(await store.admit(request("b", "1")), Existing)

    harness.run(scenario, tenant_result_bytes=100)


# -- expiry --------------------------------------------------------------------------------------


def test_once_jobs_end_everything_expires_and_nothing_is_left(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        assert await store.footprint() == 0
        keyed = await admit(store, "a", "k", payload=b"p")
        await admit(store, "b", "k2")
        await admit(store, "b", None)
        gone = await admit(store, "a", "cancelled")
        await store.cancel(gone.job_id)
        claims = await store.claim("r1", 3)
        await store.append(claims[0].lease, "progress", b"1")
        await store.complete(claims[0].lease, Outcome(JobState.DONE, result=os.urandom(MIB + 1)))
        await store.complete(claims[1].lease, Outcome(JobState.FAILED, reason="engine"))
        await store.complete(claims[2].lease, Outcome(JobState.DONE, result=b"small"))
        assert await store.footprint() > 0 and await store.get(keyed.job_id) is not None
        if harness.redis is not None:
            forever = [k for k, ttl in harness.redis_keys().items() if ttl < 0]
            assert forever == [], forever  # every key expires once no job lives
        await harness.advance(harness.ttl + 0.2)
        for _ in range(40):  # Redis drops expired keys within a few of its 100 ms cycles
            if await store.footprint() == 0 and (
                harness.redis is None or harness.redis.client().dbsize() == 0
            ):
                break
            await harness.advance(0.05)
        assert await store.footprint() == 0
        if harness.redis is not None:
            assert harness.redis.client().dbsize() == 0
        assert await store.get(keyed.job_id) is None and await store.find("a", "k") is None
        assert await store.events(keyed.job_id) == [] and await store.result(keyed.job_id) is None

    harness.run(scenario)


def test_a_waiting_read_of_events_returns_as_soon_as_one_is_added(harness: Harness) -> None:
    async def scenario(store: JobStore) -> None:
        await admit(store, "a")
        (claim,) = await store.claim("r1", 1)
        job_id = claim.record.job_id
        start = time.monotonic()
        assert await store.events(job_id, 0, wait=0.05) == []  # nothing: waited, then empty
        assert time.monotonic() - start >= 0.04

        async def add_soon() -> None:
            await asyncio.sleep(0.1)
            await store.append(claim.lease, "progress", b"1")

        adding = asyncio.ensure_future(add_soon())
        start = time.monotonic()
        found = await store.events(job_id, 0, wait=0.9)
        took = time.monotonic() - start
        await adding
        assert [(e.id, e.data) for e in found] == [(1, b"1")]
        assert 0.05 < took < 0.5  # woke on the event, long before the wait ran out

    harness.run(scenario)
