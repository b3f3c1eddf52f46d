"""Failures -> gRPC statuses with rich details (ErrorInfo always), mapped in one place."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from styletx.errors import ImageTooLarge, InvalidOptions, OutOfMemory
from styletx_server.errors import statuses
from styletx_server.errors.refusals import FieldViolation
from styletx_server.errors.statuses import Reason, StopReason


def details(status: grpc.Status) -> status_pb2.Status:
    trailer = dict(status.trailing_metadata)["grpc-status-details-bin"]
    return status_pb2.Status.FromString(trailer)


def detail(status: grpc.Status, kind: Any) -> Any:
    """The detail of type `kind`, or None."""
    for packed in details(status).details:
        if packed.Is(kind.DESCRIPTOR):
            message = kind()
            packed.Unpack(message)
            return message
    return None


def error_info(status: grpc.Status) -> error_details_pb2.ErrorInfo:
    info = detail(status, error_details_pb2.ErrorInfo)
    assert info is not None, "every error status carries an ErrorInfo"
    assert info.domain == "styletx.v1"
    return info


def field_violations(status: grpc.Status) -> dict[str, str]:
    bad = detail(status, error_details_pb2.BadRequest)
    assert bad is not None
    return {v.field: v.description for v in bad.field_violations}


def test_invalid_argument_lists_every_violation() -> None:
    status = statuses.invalid_argument(
        [FieldViolation("content_image", "required"), FieldViolation("options.size", "too big")]
    )
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(status) == {"content_image": "required", "options.size": "too big"}
    assert "options.size: too big" in status.details
    assert error_info(status).reason == "INVALID_INPUT"


def test_limit_exceeded_names_the_limits_in_error_info() -> None:
    status = statuses.invalid_argument(
        [FieldViolation("options.size", "over")], Reason.LIMIT_EXCEEDED, {"max_size": "1024"}
    )
    info = error_info(status)
    assert info.reason == "LIMIT_EXCEEDED"
    assert dict(info.metadata) == {"max_size": "1024"}


@pytest.mark.parametrize("reason", [Reason.QUEUE_FULL, Reason.OVER_BUDGET, Reason.TOO_MANY_CALLS])
def test_busy_refusals_carry_retry_info(reason: Reason) -> None:
    status = statuses.resource_exhausted("busy", 2.5, reason)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = detail(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 2 and retry.retry_delay.nanos == 500_000_000
    assert error_info(status).reason == reason.value


def test_engine_option_errors_name_the_request_field() -> None:
    status = statuses.for_exception(InvalidOptions("tv_power", "must be >= 1"), "rid")
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(status) == {"options.tv_power": "must be >= 1"}
    blend = statuses.for_exception(InvalidOptions("style_blend_weights", "bad"), "rid")
    assert list(field_violations(blend)) == ["style_images"]


def test_a_non_finite_loss_is_invalid_argument_naming_the_weight() -> None:
    from styletx.errors import NonFiniteLoss

    error = NonFiniteLoss("tv_weight", "the tv loss became inf at evaluation 3", evaluation=3)
    status = statuses.for_exception(error, "rid")
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(status).reason == "NON_FINITE_LOSS"
    assert field_violations(status) == {
        "options.tv_weight": "the tv loss became inf at evaluation 3"
    }


def test_image_errors_keep_their_field() -> None:
    status = statuses.for_exception(ImageTooLarge(10, 5, field="style_images[2].image"), "rid")
    assert list(field_violations(status)) == ["style_images[2].image"]


def test_unexpected_errors_are_internal_and_generic() -> None:
    status = statuses.for_exception(KeyError("/secret/path"), "req-9")
    assert status.code == grpc.StatusCode.INTERNAL
    assert "secret" not in status.details
    assert "req-9" in status.details
    assert error_info(status).reason == "INTERNAL"


def _out_of_memory_errors() -> list[BaseException]:
    wrapped = RuntimeError("engine step failed")
    wrapped.__cause__ = OutOfMemory("out of memory: OOM when allocating")
    return [MemoryError(), OutOfMemory("out of memory: OOM when allocating"), wrapped]


@pytest.mark.parametrize("error", _out_of_memory_errors(), ids=lambda e: type(e).__name__)
def test_out_of_memory_is_resource_exhausted_without_retry_info(error: BaseException) -> None:
    status = statuses.for_exception(error, "rid")
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(status).reason == "OUT_OF_MEMORY"
    assert detail(status, error_details_pb2.RetryInfo) is None  # retrying will not help
    assert "OOM" not in status.details and "rid" in status.details


def test_out_of_memory_is_told_by_type_not_by_name() -> None:
    class ResourceExhaustedError(Exception):  # a framework's name: the backends convert it
        pass

    assert not statuses.is_out_of_memory(ResourceExhaustedError("OOM when allocating"))
    assert not statuses.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: out of memory"))
    assert statuses.is_out_of_memory(OutOfMemory("out of memory"))


def test_stop_reasons_map_to_codes_and_reasons() -> None:
    expected = {
        StopReason.CLIENT_CANCELLED: (grpc.StatusCode.CANCELLED, "CANCELLED"),
        StopReason.DEADLINE_EXCEEDED: (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
        StopReason.SHUTDOWN: (grpc.StatusCode.UNAVAILABLE, "SHUTDOWN"),
        StopReason.DRAINING: (grpc.StatusCode.UNAVAILABLE, "DRAINING"),
    }
    for stop, (code, reason) in expected.items():
        status = statuses.for_stop(stop)
        assert (status.code, error_info(status).reason) == (code, reason)


def test_every_constructor_carries_error_info() -> None:
    made = {
        statuses.draining(): "DRAINING",
        statuses.loading(): "LOADING",
        statuses.unauthenticated(): "UNAUTHENTICATED",
        statuses.key_reused("k"): "KEY_REUSED",
        statuses.internal("r"): "INTERNAL",
        statuses.out_of_memory("r"): "OUT_OF_MEMORY",
    }
    for status, reason in made.items():
        assert error_info(status).reason == reason
    assert statuses.key_reused("k").code == grpc.StatusCode.ALREADY_EXISTS
    assert statuses.draining().code == statuses.loading().code == grpc.StatusCode.UNAVAILABLE


def test_reason_labels_are_a_bounded_lower_case_set() -> None:
    assert statuses.reason_label(grpc.StatusCode.OK, None) == "ok"
    assert statuses.reason_label(grpc.StatusCode.CANCELLED, None) == "cancelled"
    assert statuses.reason_label(grpc.StatusCode.DEADLINE_EXCEEDED, None) == "deadline_exceeded"
    labels = {statuses.reason_label(grpc.StatusCode.UNAVAILABLE, r) for r in Reason}
    assert labels == {r.value.lower() for r in Reason}


def test_request_field_mapping() -> None:
    assert statuses.request_field("size") == "options.size"
    assert statuses.request_field("preview_every") == "preview_every"
