"""Records of ended keyed jobs (what GetJob says after the end): states, TTL, bounds."""

from __future__ import annotations

from typing import Any

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors import statuses
from styletx_server.errors.statuses import StopReason
from styletx_server.intake.convert import duration
from styletx_server.jobs.mailbox import Final
from styletx_server.jobs.registry import JobRegistry
from styletx_server.jobs.views import EndedJobs, Gone, job_error, state_of
from tests.unit.server.jobs.test_registry import Clock, FakeJob, result


def test_states_of_outcomes() -> None:
    assert state_of(result(1)) == pb.JOB_STATE_DONE
    cancelled = Final(status=statuses.for_stop(StopReason.JOB_CANCELLED))
    assert state_of(cancelled) == pb.JOB_STATE_CANCELLED
    assert state_of(Final(status=statuses.for_stop(StopReason.SHUTDOWN))) == pb.JOB_STATE_FAILED
    assert state_of(Final(status=statuses.internal("r"))) == pb.JOB_STATE_FAILED


def test_job_error_names_code_message_and_reason() -> None:
    error = job_error(statuses.out_of_memory("r1"))
    assert error.code == 8  # RESOURCE_EXHAUSTED
    assert error.reason == pb.ERROR_REASON_OUT_OF_MEMORY
    assert "r1" in error.message


def test_records_keep_no_image_and_expire_with_the_ttl() -> None:
    clock = Clock()
    ended = EndedJobs(60.0, clock=clock)
    job: Any = FakeJob("k")
    ended.add(job, result(1000))
    record = ended.get("k")
    assert record is not None and record.state == pb.JOB_STATE_DONE and record.status is None
    assert record.view.result.image.data == b""
    clock.now = 60.0
    assert ended.get("k") is None and len(ended) == 0


def test_failed_records_keep_their_status() -> None:
    ended = EndedJobs(60.0, clock=Clock())
    status = statuses.for_stop(StopReason.JOB_CANCELLED)
    ended.add(FakeJob("k"), Final(status=status))  # type: ignore[arg-type]
    record = ended.get("k")
    assert record is not None and record.status is status
    assert record.view.error.reason == pb.ERROR_REASON_CANCELLED


def test_records_are_bounded_oldest_first_and_off_without_a_ttl() -> None:
    clock = Clock()
    ended = EndedJobs(60.0, max_jobs=2, clock=clock)
    for key in ("a", "b", "c"):
        clock.now += 1
        ended.add(FakeJob(key), result(1))  # type: ignore[arg-type]
    assert ended.get("a") is None and ended.get("c") is not None and len(ended) == 2
    off = EndedJobs(0.0, clock=clock)
    off.add(FakeJob("a"), result(1))  # type: ignore[arg-type]
    assert off.get("a") is None


def test_the_registry_records_every_keyed_end_and_forgets_it_for_a_new_run() -> None:
    reg = JobRegistry(result_ttl=60.0, max_results=10, max_result_bytes=10_000, clock=Clock())
    job: Any = FakeJob("k")
    reg.add(job)
    reg.finish(job, Final(status=statuses.internal("r")))
    record = reg.ended.get("k")
    assert record is not None and record.state == pb.JOB_STATE_FAILED
    reg.add(FakeJob("k"))  # type: ignore[arg-type]
    assert reg.ended.get("k") is None


def test_a_record_keeps_every_result_field_but_the_image_data() -> None:
    full = pb.ResultEvent(
        image=pb.EncodedImage(data=b"png", format=pb.IMAGE_FORMAT_WEBP, width=3, height=2),
        losses=pb.Losses(total=4, content=1, style=2, tv=1),
        iterations=5,
        evaluations=9,
        queue_time=duration(0.5),
        compute_time=duration(2.5),
        request_id="r",
    )
    assert {f.name for f in full.DESCRIPTOR.fields} == {f.name for f, _ in full.ListFields()}
    expected = pb.ResultEvent()
    expected.CopyFrom(full)
    expected.image.ClearField("data")
    ended = EndedJobs(60.0, clock=Clock())
    ended.add(FakeJob("k"), Final(response=pb.StylizeResponse(result=full)))  # type: ignore[arg-type]
    record = ended.get("k")
    assert record is not None and record.view.result == expected


def test_a_tenants_ended_records_evict_only_its_own() -> None:
    """The attack: 10,000 ended-job records for the whole server, whoever's they were."""
    clock = Clock()
    ended = EndedJobs(600.0, max_jobs=100, clock=clock)
    ended.add(FakeJob("victim/order-1"), result(1))  # type: ignore[arg-type]
    for index in range(150):
        clock.now += 0.1
        ended.add(FakeJob(f"flood/k{index}"), result(1))  # type: ignore[arg-type]
    assert ended.get("victim/order-1") is not None
    assert len(ended) == 100
    assert ended.get("flood/k0") is None and ended.gone("flood/k0") is Gone.EVICTED


def test_a_gone_key_says_whether_it_expired_was_evicted_or_never_ran() -> None:
    clock = Clock()
    ended = EndedJobs(60.0, max_jobs=2, clock=clock)
    for key in ("t/a", "t/b", "t/c"):
        ended.add(FakeJob(key), result(1))  # type: ignore[arg-type]
    assert ended.gone("t/a") is Gone.EVICTED
    clock.now = 61.0
    assert ended.get("t/c") is None and ended.gone("t/c") is Gone.EXPIRED
    assert ended.gone("u/never") is None and not ended.forgetting("u/never")
    # Tombstones last one more TTL; then the key is as unknown as one never used.
    clock.now = 122.0
    assert ended.gone("t/c") is None
    # A new job under the key forgets how the old one went.
    ended.add(FakeJob("t/c"), result(1))  # type: ignore[arg-type]
    assert ended.gone("t/c") is None and ended.get("t/c") is not None


def test_a_tenant_that_outruns_its_tombstones_is_told_so() -> None:
    clock = Clock()
    ended = EndedJobs(60.0, max_jobs=2, clock=clock)
    for index in range(6):
        ended.add(FakeJob(f"t/k{index}"), result(1))  # type: ignore[arg-type]
    assert ended.gone("t/k0") is None  # its tombstone made room too
    assert ended.forgetting("t/k0") and not ended.forgetting("u/k0")
