"""An engine failure becomes INTERNAL without leaking internals; the worker survives."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from styletx import Progress
from styletx.engine import Stylizer
from tests.integration.conftest import ServerFactory, collect, make_request, wait_for
from tests.support.engines import WrappedEngine

SECRET = "/very/secret/path/in/the/traceback"


class FailOnce(WrappedEngine):
    """The real engine, except that its first job raises from inside the optimisation."""

    def __init__(self, engine: Stylizer, error: Exception) -> None:
        super().__init__(engine)
        self.error: Exception | None = error

    def job_progress(
        self, event: Progress, first: bool, should_stop: Callable[[], bool] | None
    ) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def test_engine_failure_is_internal_then_the_next_job_succeeds(
    stylizer: Stylizer,
    server_factory: ServerFactory,
    stub_for: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = server_factory(engine=FailOnce(stylizer, RuntimeError(f"boom at {SECRET}")))
    stub = stub_for(server)
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request())
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    details = error.details() or ""
    assert SECRET not in details and "boom" not in details
    assert "internal error" in details
    # The traceback is in the server log, with the request id the caller was given.
    failed = [r for r in caplog.records if r.getMessage() == "job_failed"]
    assert failed and failed[0].exc_info is not None
    assert SECRET in str(failed[0].exc_info[1])
    assert collect(stub, make_request())[-1].HasField("result")
    # The worker counts the job out just after its caller has the result.
    wait_for(lambda: server.admission.running == 0)


def test_device_out_of_memory_is_resource_exhausted(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    stub = stub_for(server_factory(engine=FailOnce(stylizer, MemoryError())))
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, make_request())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert collect(stub, make_request())[-1].HasField("result")
