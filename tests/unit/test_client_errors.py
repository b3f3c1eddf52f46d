"""from_rpc_error: every gRPC status becomes the right SDK exception with its rich details."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

# google.rpc ships .pyi files without a py.typed marker (see errors.py).
import google.rpc.error_details_pb2 as error_details_pb2  # type: ignore[import-untyped,unused-ignore]
import google.rpc.status_pb2 as status_pb2  # type: ignore[import-untyped,unused-ignore]
import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from styletx_client import (
    AuthenticationError,
    CancelledError,
    DeadlineExceededError,
    FieldViolation,
    InvalidRequestError,
    OutOfMemoryError,
    RequestKeyReusedError,
    ServerBusyError,
    ServiceError,
    UnavailableError,
    from_rpc_error,
)

Metadata = Sequence[tuple[str, str | bytes]]


class FakeRpcError(grpc.RpcError):
    """What grpcio raises: an RpcError that is also a Call with code, details and metadata."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str | None = "boom",
        trailing: Metadata = (),
        initial: Metadata = (),
    ) -> None:
        self._code = code
        self._details = details
        self._trailing = tuple(trailing)
        self._initial = tuple(initial)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._trailing

    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._initial


def status_trailer(code: grpc.StatusCode, *details: Message) -> tuple[str, bytes]:
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    status = status_pb2.Status(code=code.value[0], message="m", details=packed)
    return ("grpc-status-details-bin", status.SerializeToString())


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError),
        (grpc.StatusCode.OUT_OF_RANGE, InvalidRequestError),
        # The API's contract: RESOURCE_EXHAUSTED without RetryInfo is an out-of-memory job.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, OutOfMemoryError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.CANCELLED, CancelledError),
        (grpc.StatusCode.UNAUTHENTICATED, AuthenticationError),
        (grpc.StatusCode.PERMISSION_DENIED, AuthenticationError),
        (grpc.StatusCode.INTERNAL, ServiceError),
        (grpc.StatusCode.UNIMPLEMENTED, ServiceError),
        (grpc.StatusCode.UNKNOWN, ServiceError),
    ],
)
def test_each_code_maps_to_its_exception(
    code: grpc.StatusCode, expected: type[ServiceError]
) -> None:
    error = from_rpc_error(FakeRpcError(code, "server said no"))
    assert type(error) is expected
    assert error.code == code
    assert error.message == "server said no"
    assert "server said no" in str(error)


def test_bad_request_field_violations_are_exposed() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="options.size", description="must be <= 1024"
            ),
            error_details_pb2.BadRequest.FieldViolation(
                field="style_images", description="at least one style image is required"
            ),
        ]
    )
    trailer = status_trailer(grpc.StatusCode.INVALID_ARGUMENT, bad)
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, trailing=[trailer]))
    assert isinstance(error, InvalidRequestError)
    assert error.field_violations == (
        FieldViolation("options.size", "must be <= 1024"),
        FieldViolation("style_images", "at least one style image is required"),
    )
    assert error.details == (bad,)
    assert "options.size: must be <= 1024" in str(error)


def test_retry_info_becomes_retry_after_seconds() -> None:
    info = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)
    )
    trailer = status_trailer(grpc.StatusCode.RESOURCE_EXHAUSTED, info)
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, trailing=[trailer]))
    assert isinstance(error, ServerBusyError)
    assert error.retry_after == pytest.approx(2.5)


def test_no_retry_info_means_no_retry_after() -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE))
    assert error.retry_after is None
    assert error.details == ()


def test_unknown_detail_types_are_kept_packed() -> None:
    unknown = any_pb2.Any(type_url="type.example.com/acme.Thing", value=b"\x08\x01")
    status = status_pb2.Status(code=13, message="m", details=[unknown])
    trailer = ("grpc-status-details-bin", status.SerializeToString())
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, trailing=[trailer]))
    assert error.details == (unknown,)


def test_undecodable_status_details_are_ignored() -> None:
    trailer = ("grpc-status-details-bin", b"\xff\xff not a proto")
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, trailing=[trailer]))
    assert type(error) is ServiceError
    assert error.details == ()


def test_request_id_prefers_trailing_then_initial_then_the_callers() -> None:
    both = FakeRpcError(
        grpc.StatusCode.INTERNAL,
        trailing=[("x-request-id", "from-trailer")],
        initial=[("x-request-id", "from-header")],
    )
    assert from_rpc_error(both, "mine").request_id == "from-trailer"
    header_only = FakeRpcError(grpc.StatusCode.INTERNAL, initial=[("x-request-id", "from-header")])
    assert from_rpc_error(header_only, "mine").request_id == "from-header"
    neither = FakeRpcError(grpc.StatusCode.INTERNAL)
    assert from_rpc_error(neither, "mine").request_id == "mine"
    assert "mine" in str(from_rpc_error(neither, "mine"))


def test_oversized_message_is_not_reported_as_a_busy_server() -> None:
    error = from_rpc_error(
        FakeRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Received message larger than max (5000000 vs. 4194304)",
        )
    )
    assert type(error) is ServiceError
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_message_bytes" in error.message


def test_a_bare_rpc_error_without_call_methods_is_still_mapped() -> None:
    error = from_rpc_error(grpc.RpcError())
    assert type(error) is ServiceError
    assert error.code == grpc.StatusCode.UNKNOWN


def test_metadata_that_raises_is_treated_as_absent() -> None:
    class Broken(FakeRpcError):
        def trailing_metadata(self) -> tuple[Any, ...]:
            raise RuntimeError("call never started")

    error = from_rpc_error(Broken(grpc.StatusCode.UNAVAILABLE), "mine")
    assert isinstance(error, UnavailableError)
    assert error.request_id == "mine"


def test_constructed_errors_default_to_their_own_code() -> None:
    assert DeadlineExceededError("late").code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert InvalidRequestError("bad").code == grpc.StatusCode.INVALID_ARGUMENT
    assert ServiceError("x").code == grpc.StatusCode.UNKNOWN


def test_retry_info_delay_from_a_timedelta_round_trips() -> None:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromTimedelta(timedelta(milliseconds=1500))
    trailer = status_trailer(grpc.StatusCode.UNAVAILABLE, info)
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, trailing=[trailer]))
    assert isinstance(error, UnavailableError)
    assert error.retry_after == pytest.approx(1.5)


def error_info(reason: str, domain: str = "styletx.v1") -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=domain)


def retry_info(seconds: int = 1) -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        # The styletx reason decides where it names its own class...
        (grpc.StatusCode.RESOURCE_EXHAUSTED, [error_info("OUT_OF_MEMORY")], OutOfMemoryError),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            [error_info("OUT_OF_MEMORY"), retry_info()],
            OutOfMemoryError,
        ),
        (grpc.StatusCode.ALREADY_EXISTS, [error_info("KEY_REUSED")], RequestKeyReusedError),
        (grpc.StatusCode.INVALID_ARGUMENT, [error_info("KEY_REUSED")], RequestKeyReusedError),
        # ...and tells busy from out-of-memory when RetryInfo is missing.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, [error_info("QUEUE_FULL")], ServerBusyError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, [error_info("OVER_BUDGET")], ServerBusyError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, [error_info("TOO_MANY_CALLS")], ServerBusyError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, [retry_info()], ServerBusyError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, [], OutOfMemoryError),
        # Another domain's reasons are exposed but do not change the class.
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            [error_info("OUT_OF_MEMORY", "example.com"), retry_info()],
            ServerBusyError,
        ),
        (grpc.StatusCode.UNAVAILABLE, [error_info("DRAINING")], UnavailableError),
        (grpc.StatusCode.INVALID_ARGUMENT, [error_info("LIMIT_EXCEEDED")], InvalidRequestError),
    ],
)
def test_error_info_reason_picks_the_exception(
    code: grpc.StatusCode, details: list[Message], expected: type[ServiceError]
) -> None:
    trailer = status_trailer(code, *details)
    error = from_rpc_error(FakeRpcError(code, "m", trailing=[trailer]))
    assert type(error) is expected
    info = next((d for d in details if isinstance(d, error_details_pb2.ErrorInfo)), None)
    assert error.reason == (info.reason if info else None)
    assert error.domain == (info.domain if info else None)


def test_grpcs_own_concurrency_limit_is_busy_not_out_of_memory() -> None:
    error = from_rpc_error(
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
    )
    assert type(error) is ServerBusyError


def test_key_reused_keeps_its_field_violations() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="request_key", description="reused")
        ]
    )
    trailer = status_trailer(grpc.StatusCode.ALREADY_EXISTS, error_info("KEY_REUSED"), bad)
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.ALREADY_EXISTS, trailing=[trailer]))
    assert isinstance(error, RequestKeyReusedError)
    assert isinstance(error, InvalidRequestError)
    assert error.field_violations == (FieldViolation("request_key", "reused"),)
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
