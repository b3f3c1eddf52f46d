"""The one place that turns failures into gRPC statuses with google.rpc rich details."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from styletx.errors import Cancelled, InvalidImage, InvalidOptions

#: Engine option names whose request field is not `options.<name>`.
_OPTION_FIELDS = {
    "style_blend_weights": "style_images",
    "preview_every": "preview_every",
}


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, named by its path in StylizeRequest (e.g. `style_images[1].image`)."""

    field: str
    description: str


class StopReason(enum.Enum):
    """Why a job stopped before finishing; decides the status the caller sees."""

    CLIENT_CANCELLED = "cancelled"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    SHUTDOWN = "shutdown"


def request_field(option: str) -> str:
    """Request path of a StyleOptions field named by the engine (`size` -> `options.size`)."""
    return _OPTION_FIELDS.get(option, f"options.{option}")


def _status(code: int, message: str, *details: object) -> grpc.Status:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)  # type: ignore[arg-type]
        packed.append(holder)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))


def invalid_argument(violations: Sequence[FieldViolation]) -> grpc.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest listing every violation."""
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return _status(code_pb2.INVALID_ARGUMENT, f"invalid request: {summary}", bad)


def resource_exhausted(message: str, retry_after_seconds: float) -> grpc.Status:
    """RESOURCE_EXHAUSTED with a google.rpc.RetryInfo telling the caller when to try again."""
    seconds = max(0.0, retry_after_seconds)
    whole = math.floor(seconds)
    delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
    return _status(
        code_pb2.RESOURCE_EXHAUSTED, message, error_details_pb2.RetryInfo(retry_delay=delay)
    )


def unavailable(message: str) -> grpc.Status:
    """UNAVAILABLE: the server is starting or draining; another replica (or later) may serve."""
    return _status(code_pb2.UNAVAILABLE, message)


def unauthenticated() -> grpc.Status:
    """UNAUTHENTICATED without saying what was wrong with the credentials."""
    return _status(code_pb2.UNAUTHENTICATED, "missing or invalid bearer token")


def for_stop(reason: StopReason) -> grpc.Status:
    """Status of a job stopped by its caller, its deadline or a server shutdown."""
    if reason is StopReason.DEADLINE_EXCEEDED:
        return _status(code_pb2.DEADLINE_EXCEEDED, "deadline exceeded before the job finished")
    if reason is StopReason.SHUTDOWN:
        return _status(code_pb2.UNAVAILABLE, "server shutting down; job cancelled, retry")
    return _status(code_pb2.CANCELLED, "cancelled by the caller")


def for_exception(exc: BaseException, request_id: str) -> grpc.Status:
    """Status of an exception raised while running a job; internals never reach the caller."""
    if isinstance(exc, InvalidOptions):
        return invalid_argument([FieldViolation(request_field(exc.field), exc.message)])
    if isinstance(exc, InvalidImage):
        return invalid_argument([FieldViolation(exc.field, exc.message)])
    if isinstance(exc, Cancelled):
        # Reaching here means the engine stopped without the server asking: treat as aborted.
        return _status(code_pb2.ABORTED, f"job stopped (request id {request_id})")
    # TensorFlow raises ResourceExhaustedError on device OOM; match by name to avoid importing it.
    if isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":
        return resource_exhausted(
            f"out of memory for this job (request id {request_id}); try a smaller size", 30.0
        )
    return _status(code_pb2.INTERNAL, f"internal error (request id {request_id})")


__all__ = [
    "FieldViolation",
    "StopReason",
    "for_exception",
    "for_stop",
    "invalid_argument",
    "request_field",
    "resource_exhausted",
    "unauthenticated",
    "unavailable",
]
