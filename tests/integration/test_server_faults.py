"""Every stream ends: a failure injected at each stage gives the caller INTERNAL (request id, no
internals) and leaks nothing (budget, queue slot, worker, registry); the next call succeeds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from styletx.engine import Stylizer
from styletx_server.jobs import run as job_module
from styletx_server.ops.app import StyletxServer
from styletx_server.rpc import stylize as servicer_module
from tests.integration.conftest import (
    ServerFactory,
    collect,
    has_retry_info,
    make_request,
    reason_of,
    wait_for,
)
from tests.integration.test_server_failures import FailOnce

SECRET = "/secret/internal/detail"


def boom(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError(SECRET)


class Exploding:
    """Stands in for a metric whose observe() raises."""

    def observe(self, *_args: Any) -> None:
        boom()

    def labels(self, **_labels: str) -> Exploding:
        return self


def _patch_metric(name: str) -> Callable[[pytest.MonkeyPatch, StyletxServer], None]:
    def apply(monkeypatch: pytest.MonkeyPatch, server: StyletxServer) -> None:
        monkeypatch.setattr(server.metrics, name, Exploding())

    return apply


def _patch(module: Any, name: str) -> Callable[[pytest.MonkeyPatch, StyletxServer], None]:
    def apply(monkeypatch: pytest.MonkeyPatch, _server: StyletxServer) -> None:
        monkeypatch.setattr(module, name, boom)

    return apply


#: stage -> how to make it raise. Together they cover before, inside and after the engine.
STAGES: dict[str, Callable[[pytest.MonkeyPatch, StyletxServer], None]] = {
    "request digest": _patch(servicer_module, "request_digest"),
    "header inspection": _patch(servicer_module, "inspect"),
    "decode": _patch(servicer_module, "decode"),
    "queue-wait metric": _patch_metric("queue_wait"),
    "progress callback": _patch(job_module, "losses_to_proto"),
    "evaluation metric": _patch_metric("evaluation_duration"),
    "encode": _patch(job_module, "encode_image"),
    "compute metric": _patch_metric("compute_duration"),
    "output metric": _patch_metric("image_pixels"),
}


def assert_nothing_leaked(server: StyletxServer) -> None:
    wait_for(lambda: server.admission.running == 0 and server.admission.waiting == 0)
    assert server.budget.used == 0
    assert server.jobs.running == 0
    assert server.servicer.live_jobs() == []


@pytest.mark.parametrize("stage", list(STAGES), ids=list(STAGES))
def test_a_failure_at_any_stage_ends_the_stream_with_internal(
    stage: str,
    server_factory: ServerFactory,
    stub_for: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = server_factory()
    stub = stub_for(server)
    with monkeypatch.context() as patched:
        STAGES[stage](patched, server)
        with pytest.raises(grpc.RpcError) as caught:
            collect(
                stub,
                make_request(request_key="fault-1"),
                metadata=(("x-request-id", "rid-fault"),),
            )
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL, error
    assert reason_of(error) == "INTERNAL"
    details = error.details() or ""
    assert "rid-fault" in details and SECRET not in details
    assert_nothing_leaked(server)
    # The server is whole: the same key (its job failed, no result kept) now succeeds.
    assert collect(stub, make_request(request_key="fault-1"))[-1].HasField("result")


def test_a_failing_bookkeeping_hook_still_ends_the_job(
    server_factory: ServerFactory, stub_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_factory()
    monkeypatch.setattr(server.jobs, "finish", boom)
    events = collect(stub_for(server), make_request(request_key="hook-1"))
    assert events[-1].HasField("result")
    wait_for(lambda: server.admission.running == 0)
    assert server.budget.used == 0


def test_out_of_memory_is_not_server_busy(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    server = server_factory(engine=FailOnce(stylizer, MemoryError()))
    stub = stub_for(server)
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(caught.value) == "OUT_OF_MEMORY"
    assert not has_retry_info(caught.value)
    assert_nothing_leaked(server)
    labels = {
        "method": "Stylize",
        "code": "RESOURCE_EXHAUSTED",
        "reason": "out_of_memory",
        "tenant": "default",
    }
    assert server.metrics.registry.get_sample_value("styletx_requests_total", labels) == 1
    assert collect(stub, make_request())[-1].HasField("result")
