"""The one place that turns failures into gRPC statuses with google.rpc rich details.

Every error status carries a `google.rpc.ErrorInfo` (domain `styletx.v1`) whose `reason` names the
cause in a fixed vocabulary, so callers (the SDK) and dashboards branch on the reason rather than
on message text. Retryable refusals (busy server) add a `RetryInfo`; bad input adds a `BadRequest`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from styletx.errors import InvalidImage, InvalidOptions, NonFiniteLoss, OutOfMemory
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1.style_options import ErrorReason
from styletx_api.wire import ERROR_DOMAIN as DOMAIN
from styletx_server.errors import refusals
from styletx_server.errors.refusals import FieldViolation

#: Engine names the API carries per style image rather than as a field of its own.
_PER_STYLE_IMAGE = {"style_blend_weights": "style_images", "styles": "style_images"}


#: ErrorInfo.reason values, declared in the proto (`styletx.v1.ErrorReason`); lower-cased, they
#: are the `reason` label of the request metric.
Reason = ErrorReason


@dataclass(frozen=True)
class ErrorStatus(grpc.Status):
    """A grpc.Status (code, details, trailing metadata with the rich details) and its reason."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]
    reason: Reason = field(default=Reason.INTERNAL)


class StopReason(enum.Enum):
    """Why a job stopped before finishing; decides the status its subscribers see."""

    CLIENT_CANCELLED = "cancelled"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    SHUTDOWN = "shutdown"
    DRAINING = "draining"
    #: CancelJob: someone with the job's key asked for it to stop.
    JOB_CANCELLED = "job_cancelled"


def request_field(option: str) -> str:
    """Request path of an option named by the engine: a StyleOptions field (`size` ->
    `options.size`), a StylizeRequest field (`preview_every`), or a per-style-image value."""
    if option in pb.StylizeRequest.DESCRIPTOR.fields_by_name:
        return option
    return _PER_STYLE_IMAGE.get(option, f"options.{option}")


def _error_info(reason: Reason, metadata: Mapping[str, str] | None) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason.value, domain=DOMAIN, metadata=metadata or {})


def _status(
    code: int,
    message: str,
    reason: Reason,
    *details: object,
    metadata: Mapping[str, str] | None = None,
) -> ErrorStatus:
    packed = []
    for detail in (_error_info(reason, metadata), *details):
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    plain = rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))
    return ErrorStatus(plain.code, plain.details, tuple(plain.trailing_metadata), reason)


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    seconds = max(0.0, seconds)
    whole = math.floor(seconds)
    delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def invalid_argument(
    violations: Sequence[FieldViolation],
    reason: Reason = Reason.INVALID_INPUT,
    metadata: Mapping[str, str] | None = None,
) -> ErrorStatus:
    """INVALID_ARGUMENT with a google.rpc.BadRequest listing every violation.

    `reason` is LIMIT_EXCEEDED when the request is well-formed but beyond this server's limits
    (`metadata` then names the limits and their values), INVALID_INPUT otherwise.
    """
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return _status(
        code_pb2.INVALID_ARGUMENT, f"invalid request: {summary}", reason, bad, metadata=metadata
    )


def resource_exhausted(
    message: str,
    retry_after_seconds: float,
    reason: Reason = Reason.QUEUE_FULL,
    metadata: Mapping[str, str] | None = None,
) -> ErrorStatus:
    """RESOURCE_EXHAUSTED with a google.rpc.RetryInfo: the server is busy, try again later."""
    return _status(
        code_pb2.RESOURCE_EXHAUSTED,
        message,
        reason,
        _retry_info(retry_after_seconds),
        metadata=metadata,
    )


def out_of_memory(request_id: str) -> ErrorStatus:
    """RESOURCE_EXHAUSTED *without* RetryInfo: this job does not fit; retrying it will not help."""
    return _status(
        code_pb2.RESOURCE_EXHAUSTED,
        f"the job ran out of memory (request id {request_id}); try a smaller size, a smaller "
        "style_scale or fewer style images",
        Reason.OUT_OF_MEMORY,
    )


def unavailable(message: str, reason: Reason) -> ErrorStatus:
    """UNAVAILABLE: the server is loading, draining or shutting down; another replica may serve."""
    return _status(code_pb2.UNAVAILABLE, message, reason)


def draining() -> ErrorStatus:
    """The server is draining (SIGTERM): retry elsewhere or re-attach with the request key."""
    return unavailable("server is draining; retry on another replica", Reason.DRAINING)


def loading() -> ErrorStatus:
    """The model is still loading: retry shortly (health says NOT_SERVING meanwhile)."""
    return unavailable("model is loading; retry shortly", Reason.LOADING)


def unauthenticated() -> ErrorStatus:
    """UNAUTHENTICATED without saying what was wrong with the credentials."""
    return _status(
        code_pb2.UNAUTHENTICATED, "missing or invalid bearer token", Reason.UNAUTHENTICATED
    )


def key_reused(key: str) -> ErrorStatus:
    """ALREADY_EXISTS: a job with this request key exists for a different request."""
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="request_key",
                description="already used for a different request; use a new key per request",
            )
        ]
    )
    return _status(
        code_pb2.ALREADY_EXISTS,
        f"request_key {key!r} was already used for a different request",
        Reason.KEY_REUSED,
        bad,
    )


def job_not_found(key: str, why: str) -> ErrorStatus:
    """NOT_FOUND: this replica holds no job (or no outcome) for the request key."""
    return _status(
        code_pb2.NOT_FOUND,
        f"no job with request_key {key!r} on this server: {why}",
        Reason.JOB_NOT_FOUND,
    )


def stalled(seconds: float) -> ErrorStatus:
    """CANCELLED by the server: the caller read nothing for `seconds` (it rarely sees this)."""
    return _status(
        code_pb2.CANCELLED,
        f"the call was ended: its reader accepted no data for {seconds:.0f} s; a job with a "
        "request key keeps running for a while, re-attach with the same key",
        Reason.STALLED,
    )


def for_refusal(exc: refusals.Refused, retry_after: float) -> ErrorStatus:
    """The status of a refusal: the one mapping from `refusals` to gRPC. `retry_after` is the
    server's hint for refusals that a later retry may get past (busy, not yet loaded)."""
    match exc:
        case refusals.TooManyCalls(per_caller=True):
            return resource_exhausted(
                f"this caller already holds {exc.limit} calls, its share of the server's "
                f"{exc.server_limit}; retry when one of them ends",
                retry_after,
                Reason.TOO_MANY_CALLS,
                metadata={"scope": "caller", "max_calls_per_caller": str(exc.limit)},
            )
        case refusals.TooManyCalls():
            return resource_exhausted(
                f"server busy: {exc.limit} calls open; retry later",
                retry_after,
                Reason.TOO_MANY_CALLS,
                metadata={"scope": "server", "max_calls": str(exc.limit)},
            )
        case refusals.NotReady():
            return loading()
        case refusals.Draining() | refusals.QueueClosed():
            return draining()
        case refusals.InvalidKey():
            return invalid_argument([FieldViolation("request_key", exc.rule)])
        case refusals.KeyReused():
            return key_reused(exc.key)
        case refusals.JobNotFound():
            return job_not_found(exc.key, exc.why)
        case refusals.InvalidRequest():
            return invalid_argument(exc.violations, exc.reason, exc.metadata)
        case refusals.OverBudget():
            return resource_exhausted(
                f"server busy: {exc.wanted} pixels do not fit in the in-flight pixel budget "
                f"({exc.available} of {exc.limit} free); retry later",
                retry_after,
                Reason.OVER_BUDGET,
            )
        case refusals.TenantQuota():
            return resource_exhausted(
                f"tenant {exc.tenant!r} is at its {exc.quota} of {exc.limit}, its share of this "
                "server; retry when one of its jobs or calls ends",
                exc.retry_after or retry_after,
                Reason.TENANT_QUOTA,
                metadata={"tenant": exc.tenant, "quota": exc.quota, exc.quota: str(exc.limit)},
            )
        case refusals.Unauthenticated():
            return unauthenticated()
        case refusals.StoreDown():
            return store_unavailable(exc.retry_after)
        case refusals.QueueFull():
            return resource_exhausted(
                f"server busy: all {exc.capacity} queue slots taken; retry later",
                exc.retry_after,
                Reason.QUEUE_FULL,
            )
    raise TypeError(f"no status for refusal {type(exc).__name__}")  # a new refusal type


def store_unavailable(retry_after: float) -> ErrorStatus:
    """UNAVAILABLE with RetryInfo: the job store the replicas share did not answer in time (the
    server log names the store and the operation; the caller learns only that it may retry)."""
    return _status(
        code_pb2.UNAVAILABLE,
        "the job store is unavailable; nothing was admitted, retry shortly",
        Reason.STORE_UNAVAILABLE,
        _retry_info(retry_after),
    )


def max_attempts(lost: int) -> ErrorStatus:
    """ABORTED: the job lost its worker `lost` times (--max-attempts) and is not run again."""
    return _status(
        code_pb2.ABORTED,
        f"the job lost its worker {lost} times (the replica running it died or stopped "
        "renewing its lease) and is not run again (--max-attempts)",
        Reason.MAX_ATTEMPTS,
    )


def internal(request_id: str) -> ErrorStatus:
    """INTERNAL naming only the request id (the details are in the server log)."""
    return _status(code_pb2.INTERNAL, f"internal error (request id {request_id})", Reason.INTERNAL)


def for_stop(reason: StopReason) -> ErrorStatus:
    """Status of a job stopped by its caller, its deadline, a drain or a server shutdown."""
    if reason is StopReason.DEADLINE_EXCEEDED:
        return _status(
            code_pb2.DEADLINE_EXCEEDED,
            "deadline exceeded before the job finished",
            Reason.DEADLINE_EXCEEDED,
        )
    if reason is StopReason.SHUTDOWN:
        return unavailable("server shutting down; job cancelled, retry", Reason.SHUTDOWN)
    if reason is StopReason.DRAINING:
        return unavailable(
            "server is draining and this job cannot finish in time; retry on another replica",
            Reason.DRAINING,
        )
    if reason is StopReason.JOB_CANCELLED:
        return _status(code_pb2.CANCELLED, "the job was cancelled (CancelJob)", Reason.CANCELLED)
    return _status(code_pb2.CANCELLED, "cancelled by the caller", Reason.CANCELLED)


def is_out_of_memory(exc: BaseException) -> bool:
    """The engine's OutOfMemory (what its backends raise for the framework's own error) or a
    MemoryError, raised or anywhere in what caused it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OutOfMemory, MemoryError)):
            return True
        current = current.__cause__ or current.__context__
    return False


def for_exception(exc: BaseException, request_id: str) -> ErrorStatus:
    """Status of an exception raised while running a job; internals never reach the caller."""
    if isinstance(exc, NonFiniteLoss):
        # Found mid-run: the weights were in range but overflowed on this image.
        return invalid_argument(
            [FieldViolation(request_field(exc.field), exc.message)], Reason.NON_FINITE_LOSS
        )
    if isinstance(exc, InvalidOptions):
        return invalid_argument([FieldViolation(request_field(exc.field), exc.message)])
    if isinstance(exc, InvalidImage):
        return invalid_argument([FieldViolation(exc.field, exc.message)])
    if is_out_of_memory(exc):
        return out_of_memory(request_id)
    # Anything else, Cancelled included (the engine stopped without the server asking), is a bug.
    return internal(request_id)


def reason_label(code: grpc.StatusCode, reason: Reason | None) -> str:
    """The `reason` label of `styletx_requests_total`: `ok`, or the ErrorInfo reason lower-cased."""
    if code is grpc.StatusCode.OK:
        return "ok"
    if reason is not None:
        return reason.value.lower()
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return "deadline_exceeded"
    if code is grpc.StatusCode.CANCELLED:
        return "cancelled"
    return "internal"


__all__ = [
    "DOMAIN",
    "ErrorStatus",
    "FieldViolation",
    "Reason",
    "StopReason",
    "draining",
    "for_exception",
    "for_refusal",
    "for_stop",
    "internal",
    "invalid_argument",
    "is_out_of_memory",
    "job_not_found",
    "key_reused",
    "loading",
    "out_of_memory",
    "reason_label",
    "request_field",
    "resource_exhausted",
    "stalled",
    "unauthenticated",
    "unavailable",
]
