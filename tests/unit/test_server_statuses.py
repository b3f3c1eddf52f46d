"""Failures -> gRPC statuses with google.rpc rich details, mapped in one place."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from styletx.errors import ImageTooLarge, InvalidOptions
from styletx_server import statuses
from styletx_server.statuses import FieldViolation, StopReason


def details(status: grpc.Status) -> status_pb2.Status:
    trailer = dict(status.trailing_metadata)["grpc-status-details-bin"]
    return status_pb2.Status.FromString(trailer)


def field_violations(status: grpc.Status) -> dict[str, str]:
    bad = error_details_pb2.BadRequest()
    assert details(status).details[0].Unpack(bad)
    return {v.field: v.description for v in bad.field_violations}


def test_invalid_argument_lists_every_violation() -> None:
    status = statuses.invalid_argument(
        [FieldViolation("content_image", "required"), FieldViolation("options.size", "too big")]
    )
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(status) == {"content_image": "required", "options.size": "too big"}
    assert "options.size: too big" in status.details


def test_resource_exhausted_carries_retry_info() -> None:
    status = statuses.resource_exhausted("busy", 2.5)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = error_details_pb2.RetryInfo()
    assert details(status).details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 2 and retry.retry_delay.nanos == 500_000_000


def test_engine_option_errors_name_the_request_field() -> None:
    status = statuses.for_exception(InvalidOptions("tv_power", "must be >= 1"), "rid")
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(status) == {"options.tv_power": "must be >= 1"}
    blend = statuses.for_exception(InvalidOptions("style_blend_weights", "bad"), "rid")
    assert list(field_violations(blend)) == ["style_images"]


def test_image_errors_keep_their_field() -> None:
    status = statuses.for_exception(ImageTooLarge(10, 5, field="style_images[2].image"), "rid")
    assert list(field_violations(status)) == ["style_images[2].image"]


def test_unexpected_errors_are_internal_and_generic() -> None:
    status = statuses.for_exception(KeyError("/secret/path"), "req-9")
    assert status.code == grpc.StatusCode.INTERNAL
    assert "secret" not in status.details
    assert "req-9" in status.details


def test_out_of_memory_is_resource_exhausted() -> None:
    class ResourceExhaustedError(Exception):  # TensorFlow's name for a device OOM
        pass

    for error in (MemoryError(), ResourceExhaustedError("OOM when allocating")):
        status = statuses.for_exception(error, "rid")
        assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "OOM" not in status.details


def test_stop_reasons_map_to_codes() -> None:
    assert statuses.for_stop(StopReason.CLIENT_CANCELLED).code == grpc.StatusCode.CANCELLED
    assert statuses.for_stop(StopReason.DEADLINE_EXCEEDED).code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert statuses.for_stop(StopReason.SHUTDOWN).code == grpc.StatusCode.UNAVAILABLE


def test_request_field_mapping() -> None:
    assert statuses.request_field("size") == "options.size"
    assert statuses.request_field("preview_every") == "preview_every"
