"""The bounded admission queue with simple jobs: positions, refusals, withdrawal, workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from styletx_server.scheduling.admission import (
    AdmissionQueue,
    QueueClosed,
    QueueFull,
    Throughput,
    plan_drain,
)
from styletx_server.security.tenants import DEFAULT, Tenant

WAIT = 10.0


class RecordingJob:
    """A job that records what the queue told it and blocks in run() until released."""

    #: Every job of the current test, released at teardown so no worker is left blocked.
    created: ClassVar[list[RecordingJob]] = []

    def __init__(self, *, fail: bool = False, tenant: Tenant = DEFAULT) -> None:
        RecordingJob.created.append(self)
        self.tenant = tenant
        self.positions: list[int] = []
        self.dropped = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.release = threading.Event()
        self.abandoned = False
        self.ready = True
        self.fail = fail

    def on_position(self, position: int) -> None:
        self.positions.append(position)

    def on_dropped(self) -> None:
        self.dropped.set()

    def run(self) -> None:
        self.started.set()
        assert self.release.wait(WAIT)
        self.finished.set()
        if self.fail:
            raise RuntimeError("job failed")


class Counts:
    def __init__(self) -> None:
        self.history: list[tuple[int, int]] = []

    def __call__(self, waiting: int, running: int) -> None:
        self.history.append((waiting, running))


@pytest.fixture
def counts() -> Counts:
    return Counts()


@pytest.fixture
def queue(counts: Counts) -> Iterator[AdmissionQueue]:
    q = AdmissionQueue(capacity=2, workers=1, on_change=counts)
    q.start()
    yield q
    for job in RecordingJob.created:
        job.release.set()
    RecordingJob.created.clear()
    q.stop(timeout=WAIT)


def busy(queue: AdmissionQueue) -> RecordingJob:
    """Occupy the single worker."""
    job = RecordingJob()
    queue.submit(job)
    assert job.started.wait(WAIT)
    return job


def test_positions_are_one_based_and_renumbered_when_a_job_starts(queue: AdmissionQueue) -> None:
    running = busy(queue)
    first, second = RecordingJob(), RecordingJob()
    assert queue.submit(first) == 1
    assert queue.submit(second) == 2
    running.release.set()
    assert first.started.wait(WAIT)
    assert first.positions == [1]
    assert second.positions == [2, 1]
    first.release.set()
    second.release.set()
    assert queue.wait_idle(WAIT)


def test_full_queue_refuses_with_a_retry_hint(queue: AdmissionQueue) -> None:
    running = busy(queue)
    queue.submit(RecordingJob())
    queue.submit(RecordingJob())
    with pytest.raises(QueueFull) as caught:
        queue.submit(RecordingJob())
    assert caught.value.capacity == 2
    assert caught.value.retry_after >= 1.0
    assert queue.waiting == 2 and queue.running == 1
    running.release.set()


def test_withdrawn_job_frees_its_slot_never_runs_and_others_move_up(
    queue: AdmissionQueue,
) -> None:
    running = busy(queue)
    first, second = RecordingJob(), RecordingJob()
    queue.submit(first)
    queue.submit(second)
    assert queue.withdraw(first)
    assert first.dropped.is_set()
    assert second.positions == [2, 1]
    queue.submit(RecordingJob())  # the freed slot takes a new job
    assert not queue.withdraw(first)  # already gone
    running.release.set()
    assert second.started.wait(WAIT)
    assert not first.started.is_set()
    second.release.set()


def test_abandoned_job_is_skipped_by_the_worker(queue: AdmissionQueue) -> None:
    running = busy(queue)
    gone, next_job = RecordingJob(), RecordingJob()
    queue.submit(gone)
    queue.submit(next_job)
    gone.abandoned = True
    running.release.set()
    assert next_job.started.wait(WAIT)
    assert gone.dropped.is_set() and not gone.started.is_set()
    next_job.release.set()


def test_worker_survives_a_failing_job(queue: AdmissionQueue) -> None:
    failing = RecordingJob(fail=True)
    failing.release.set()
    queue.submit(failing)
    assert failing.finished.wait(WAIT)
    after = RecordingJob()
    after.release.set()
    queue.submit(after)
    assert after.finished.wait(WAIT)
    assert queue.wait_idle(WAIT)


def test_closed_queue_refuses_but_finishes_admitted_work(queue: AdmissionQueue) -> None:
    running = busy(queue)
    waiting = RecordingJob()
    queue.submit(waiting)
    queue.close()
    with pytest.raises(QueueClosed):
        queue.submit(RecordingJob())
    running.release.set()
    waiting.release.set()
    assert queue.wait_idle(WAIT)
    assert waiting.finished.is_set()


def test_drop_waiting_empties_the_queue(queue: AdmissionQueue) -> None:
    running = busy(queue)
    jobs = [RecordingJob(), RecordingJob()]
    for job in jobs:
        queue.submit(job)
    assert queue.drop_waiting() == 2
    assert all(job.dropped.is_set() for job in jobs)
    assert queue.waiting == 0
    running.release.set()
    assert queue.wait_idle(WAIT)


def test_wait_idle_times_out_while_busy(queue: AdmissionQueue) -> None:
    running = busy(queue)
    assert not queue.wait_idle(0.05)
    running.release.set()
    assert queue.wait_idle(WAIT)


def test_observer_sees_waiting_and_running_counts(queue: AdmissionQueue, counts: Counts) -> None:
    running = busy(queue)
    queue.submit(RecordingJob())
    assert counts.history[-1] == (1, 1)
    queue.drop_waiting()
    running.release.set()
    assert queue.wait_idle(WAIT)
    assert counts.history[-1] == (0, 0)
    assert (0, 1) in counts.history


def test_retry_hint_follows_job_durations() -> None:
    q = AdmissionQueue(capacity=1, workers=1, initial_job_seconds=40.0)
    assert q.retry_after() == 40.0
    q.start()
    quick = RecordingJob()
    quick.release.set()
    q.submit(quick)
    assert q.wait_idle(WAIT)
    assert q.retry_after() < 40.0
    q.stop(timeout=WAIT)


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        AdmissionQueue(capacity=0, workers=1)
    with pytest.raises(ValueError):
        AdmissionQueue(capacity=1, workers=0)


def test_a_job_still_decoding_holds_its_slot_and_position_but_does_not_block_others(
    queue: AdmissionQueue,
) -> None:
    running = busy(queue)
    decoding, decoded = RecordingJob(), RecordingJob()
    decoding.ready = False
    queue.submit(decoding)
    queue.submit(decoded)
    with pytest.raises(QueueFull):  # the job being decoded counts against the capacity
        queue.submit(RecordingJob())
    running.release.set()
    assert decoded.started.wait(WAIT)  # the runnable job goes first
    assert not decoding.started.is_set()
    assert decoding.positions == [1]
    decoding.ready = True
    queue.mark_ready()
    decoded.release.set()
    assert decoding.started.wait(WAIT)
    decoding.release.set()
    assert queue.wait_idle(WAIT)


def test_plan_drain_refuses_waiting_jobs_that_would_end_after_the_grace_period() -> None:
    a, b, c, d = (RecordingJob() for _ in range(4))
    for job in (a, b, c, d):
        job.release.set()
    # Two workers, one busy for 5 s more; jobs of 4, 4, 30 and 1 s wait in this order.
    refused = plan_drain(10.0, 2, [5.0], [(a, 4.0), (b, 4.0), (c, 30.0), (d, 1.0)])
    # a runs on the idle worker (0-4), b on it next (4-8); c cannot end in time; d fits (5-6).
    assert refused == [c]
    assert plan_drain(0.0, 1, [], [(a, 1.0)]) == [a]
    assert plan_drain(10.0, 1, [12.0], [(a, 0.5)]) == [a]


def test_throughput_estimates_from_measured_evaluations() -> None:
    rate = Throughput(initial=1e-6, alpha=1.0)
    assert rate.estimate(100, 10_000) == pytest.approx(1.0)
    rate.observe(0.5, 10_000)  # 0.5 s for one evaluation at 10 000 pixels
    assert rate.estimate(10, 10_000) == pytest.approx(5.0)
