"""The fair queue's order: a newcomer's first job goes next, weights share the dispatches,
a tenant at its running cap is skipped, and the admission queue applies max_queued."""

from __future__ import annotations

import pytest

from styletx_server.errors.refusals import TenantQuota
from styletx_server.scheduling.admission import AdmissionQueue
from styletx_server.scheduling.fairqueue import FairQueue
from styletx_server.security.tenants import Tenant
from tests.unit.server.scheduling.test_admission import RecordingJob


def drain(queue: FairQueue[str]) -> list[str]:
    taken = []
    while (job := queue.take(lambda _job: True)) is not None:
        taken.append(job)
    return taken


def test_one_tenant_is_fifo() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(5):
        queue.push(f"a{index}", "a", 1.0)
    assert queue.order() == [f"a{i}" for i in range(5)]
    assert drain(queue) == [f"a{i}" for i in range(5)]


def test_a_newcomers_first_job_goes_before_a_flooding_tenants_backlog() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(50):
        queue.push(f"a{index}", "a", 1.0)
    assert queue.take(lambda _job: True) == "a0"  # running: the worker is busy with it
    queue.push("b0", "b", 1.0)
    assert queue.order()[0] == "b0"
    assert queue.take(lambda _job: True) == "b0"


@pytest.mark.parametrize("weight_a", [1.0, 4.0, 0.25])
def test_a_newcomer_waits_for_no_queued_job_whatever_the_weights(weight_a: float) -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(50):
        queue.push(f"a{index}", "a", weight_a)
    for _ in range(10):
        queue.take(lambda _job: True)
    queue.push("b0", "b", 1.0)
    assert queue.take(lambda _job: True) == "b0"


def test_backlogged_tenants_share_dispatches_by_weight() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(30):
        queue.push(f"a{index}", "a", 2.0)
        queue.push(f"b{index}", "b", 1.0)
    first = drain(queue)[:30]
    assert sum(job.startswith("a") for job in first) == 20
    assert sum(job.startswith("b") for job in first) == 10


def test_jobs_that_may_not_run_are_skipped_and_keep_their_place() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a0", "a", 1.0)
    queue.push("a1", "a", 1.0)
    queue.push("b0", "b", 1.0)
    assert queue.take(lambda job: not job.startswith("a")) == "b0"
    assert queue.take(lambda job: job != "a0") == "a1"
    assert queue.order() == ["a0"] and queue.waiting("a") == 1
    assert queue.remove("a0") and not queue.remove("a0") and len(queue) == 0


def test_a_job_that_overtakes_its_tenants_unready_jobs_leaves_a_newcomer_first() -> None:
    """a2's images decoded before a0's and a1's: it runs first, but on a's turn (tag 0), so the
    virtual time stays where it was and b's first job still goes before a0 and a1."""
    queue: FairQueue[str] = FairQueue()
    for index in range(4):
        queue.push(f"a{index}", "a", 1.0)
    assert queue.take(lambda job: job == "a2") == "a2"
    assert queue.order() == ["a0", "a1", "a3"]  # a's own order is kept
    queue.push("b0", "b", 1.0)
    assert queue.order()[0] == "b0"
    assert drain(queue) == ["b0", "a0", "a1", "a3"]


def test_a_tenant_takes_its_turn_by_its_oldest_job_even_when_a_later_one_runs() -> None:
    """a0 (tag 0) waits on its decode; a1 (tag 1) is ready; b0 (tag 0, later) is ready: a's turn
    comes first by a0's tag, and a1 takes it."""
    queue: FairQueue[str] = FairQueue()
    queue.push("a0", "a", 1.0)
    queue.push("a1", "a", 1.0)
    queue.push("b0", "b", 1.0)
    assert queue.take(lambda job: job != "a0") == "a1"
    assert drain(queue) == ["b0", "a0"]


def test_a_tenant_at_max_running_waits_while_others_run() -> None:
    capped = Tenant("a", max_running=1, named=True)
    queue = AdmissionQueue(capacity=8, workers=2)
    queue.start()
    try:
        first, second = RecordingJob(tenant=capped), RecordingJob(tenant=capped)
        other = RecordingJob(tenant=Tenant("b", named=True))
        for job in (first, second, other):
            queue.submit(job)
        assert first.started.wait(5) and other.started.wait(5)
        assert not second.started.is_set() and queue.waiting == 1
        first.release.set()
        assert second.started.wait(5)
    finally:
        for job in RecordingJob.created:
            job.release.set()
        RecordingJob.created.clear()
        queue.stop(timeout=5)


def test_max_queued_refuses_the_tenant_not_the_others() -> None:
    small = Tenant("a", max_queued=1, named=True)
    queue = AdmissionQueue(capacity=8, workers=1)  # not started: everything waits
    queue.submit(RecordingJob(tenant=small))
    with pytest.raises(TenantQuota) as refused:
        queue.submit(RecordingJob(tenant=small))
    assert refused.value.quota == "max_queued" and refused.value.limit == 1
    assert refused.value.retry_after >= 1.0
    assert queue.submit(RecordingJob(tenant=Tenant("b", named=True))) == 2
    RecordingJob.created.clear()


def _after_a_tiny_weight(queue: FairQueue[str]) -> None:
    """The attack: two jobs of a tenant of weight 1e-300 push the virtual clock to 1e300 (a
    float clock then no longer moves by one job: every later tag ties)."""
    queue.push("x0", "x", 1e-300)
    queue.push("x1", "x", 1e-300)
    assert drain(queue) == ["x0", "x1"]


def test_a_tiny_weight_cannot_turn_the_queue_into_arrival_order_for_the_others() -> None:
    queue: FairQueue[str] = FairQueue()
    _after_a_tiny_weight(queue)
    for index in range(10):
        queue.push(f"a{index}", "a", 1.0)
    assert queue.take(lambda _job: True) == "a0"
    queue.push("b0", "b", 1.0)
    # The newcomer still goes next, not behind a's nine (20.2 s instead of 0.53 s).
    assert queue.take(lambda _job: True) == "b0"


def test_weights_still_share_the_dispatches_after_a_tiny_weight() -> None:
    queue: FairQueue[str] = FairQueue()
    _after_a_tiny_weight(queue)
    for index in range(30):
        queue.push(f"a{index}", "a", 2.0)
        queue.push(f"b{index}", "b", 1.0)
    first = drain(queue)[:30]
    assert sum(job.startswith("a") for job in first) == 20


@pytest.mark.parametrize("weights", [(1e-3, 1e3), (1e-300, 1e300), (3.0, 7.0)])
def test_the_order_is_exact_whatever_the_weights(weights: tuple[float, float]) -> None:
    """Tags are integers: a clock run far ahead loses no job's cost."""
    small, large = weights
    queue: FairQueue[str] = FairQueue()
    for index in range(3):
        queue.push(f"s{index}", "s", small)
    drain(queue)  # the clock is now far ahead (3 jobs at 1/small)
    for index in range(4):
        queue.push(f"l{index}", "l", large)
    queue.push("n0", "n", 1.0)
    assert queue.order()[:2] == ["l0", "n0"]  # same start tag: arrival order
    assert drain(queue)[:2] == ["l0", "n0"]


def test_tenants_that_ran_long_ago_leave_no_state() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(100):
        queue.push(f"t{index}", f"t{index}", 1.0)
    drain(queue)
    queue.push("z0", "z", 1.0)
    queue.push("z1", "z", 1.0)
    drain(queue)
    assert queue.remembered() <= 2


def test_weights_must_be_positive_and_finite() -> None:
    queue: FairQueue[str] = FairQueue()
    for weight in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight"):
            queue.push("a", "a", weight)
