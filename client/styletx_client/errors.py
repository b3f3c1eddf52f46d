"""SDK exceptions, and `from_rpc_error`: the one place a `grpc.RpcError` becomes one of them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

# googleapis-common-protos ships .pyi files but no py.typed marker: typed only where the mypy
# config sets follow_untyped_imports for google.rpc.*, Any elsewhere (hence both ignore codes).
import google.rpc.error_details_pb2 as error_details_pb2  # type: ignore[import-untyped,unused-ignore]
import google.rpc.status_pb2 as status_pb2  # type: ignore[import-untyped,unused-ignore]
import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from styletx_api.v1.style_options import ErrorReason
from styletx_api.wire import ERROR_DOMAIN as ERROR_DOMAIN  # public here: styletx_client exports it
from styletx_api.wire import REQUEST_ID_KEY, STATUS_DETAILS_KEY

logger = logging.getLogger(__name__)


#: `ErrorInfo.reason` values the styletx server sends (domain `styletx.v1`), from the proto's
#: `ErrorReason` enum.
Reason = ErrorReason


BUSY_REASONS = frozenset(
    {Reason.QUEUE_FULL, Reason.OVER_BUDGET, Reason.TOO_MANY_CALLS, Reason.TENANT_QUOTA}
)

# Every google.rpc detail type a server may attach; unknown types stay packed in an Any.
_DETAIL_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        error_details_pb2.BadRequest,
        error_details_pb2.RetryInfo,
        error_details_pb2.ErrorInfo,
        error_details_pb2.DebugInfo,
        error_details_pb2.QuotaFailure,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.RequestInfo,
        error_details_pb2.ResourceInfo,
        error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
    )
}

_Metadata = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field (`google.rpc.BadRequest.FieldViolation`), e.g. `options.size`."""

    field: str
    description: str


class ServiceError(Exception):
    """A call failed. Base of every SDK error: carries the gRPC code, message and rich details."""

    default_code = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Sequence[Message] = (),
        request_id: str | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
        domain: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else type(self).default_code
        self.details: tuple[Message, ...] = tuple(details)
        self.request_id = request_id
        # Seconds the server asked the caller to wait (google.rpc.RetryInfo), when it said.
        self.retry_after = retry_after
        # google.rpc.ErrorInfo: why it failed (`Reason.*` when `domain` is ERROR_DOMAIN).
        self.reason = reason
        self.domain = domain
        # The failed call's idempotency key, set by the client: calling again with it (and the
        # same request) attaches to the job if the server still holds it.
        self.request_key: str | None = None

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        return f"{text} (request id {self.request_id})" if self.request_id else text


def missing_result(request_id: str | None) -> ServiceError:
    """The stream ended with OK but no result event: a server bug, reported as INTERNAL."""
    return ServiceError(
        "the server ended the stream without a result",
        code=grpc.StatusCode.INTERNAL,
        request_id=request_id,
    )


class InvalidRequestError(ServiceError):
    """The server rejected the input (INVALID_ARGUMENT/OUT_OF_RANGE); see `field_violations`."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Sequence[Message] = (),
        request_id: str | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
        domain: str | None = None,
        field_violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(
            message,
            code=code,
            details=details,
            request_id=request_id,
            retry_after=retry_after,
            reason=reason,
            domain=domain,
        )
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)

    def __str__(self) -> str:
        lines = [super().__str__()]
        lines += [f"  {v.field}: {v.description}" for v in self.field_violations]
        return "\n".join(lines)


class RequestKeyReusedError(InvalidRequestError):
    """The request key is already bound to a different request on the server (KEY_REUSED).

    Retrying cannot help: send this request under a new key, or the original one under this key.
    """


class ServerBusyError(ServiceError):
    """The server is busy (RESOURCE_EXHAUSTED with RetryInfo: queue full, pixel budget spent, too
    many calls); `retry_after` says when to come back. Retried by the SDK."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class OutOfMemoryError(ServiceError):
    """The job ran out of device or host memory (RESOURCE_EXHAUSTED without RetryInfo, or reason
    OUT_OF_MEMORY). Never retried: the same request would fail again; ask for less work (a
    smaller size, style_scale or fewer scales or styles)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(ServiceError):
    """The server cannot be reached or is draining (UNAVAILABLE)."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ServiceError):
    """The call did not finish before its deadline (DEADLINE_EXCEEDED)."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(ServiceError):
    """The call was cancelled (CANCELLED), by this client or by the server."""

    default_code = grpc.StatusCode.CANCELLED


class JobNotFoundError(ServiceError):
    """The server holds no job for the request key (NOT_FOUND, reason JOB_NOT_FOUND): it never
    started there, or it ended longer ago than the server keeps outcomes (`--result-ttl`)."""

    default_code = grpc.StatusCode.NOT_FOUND


class AuthenticationError(ServiceError):
    """Missing or rejected credentials (UNAUTHENTICATED or PERMISSION_DENIED)."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequestError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServerBusyError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
}


def from_rpc_error(error: grpc.RpcError, request_id: str | None = None) -> ServiceError:
    """Convert any `grpc.RpcError` (sync or asyncio) into the matching SDK exception.

    `request_id` is what this client sent as x-request-id; the server's own id, from trailing or
    initial metadata, wins when present.
    """
    code = _code_of(error)
    message = _message_of(error)
    trailing = _metadata(error, "trailing_metadata")
    initial = _metadata(error, "initial_metadata")
    details = _decode_details(trailing)
    server_id = _first(trailing, REQUEST_ID_KEY) or _first(initial, REQUEST_ID_KEY)
    request_id = server_id or request_id
    retry_after = _retry_after(details)
    domain, reason = _error_info(details)
    cls = _class_for(code, reason if domain == ERROR_DOMAIN else None, message, retry_after)
    if cls is ServiceError and code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        message += " (raise max_message_bytes on both client and server, or send smaller images)"
    mapped = cls(
        message,
        code=code,
        details=details,
        request_id=request_id,
        retry_after=retry_after,
        reason=reason,
        domain=domain,
    )
    if isinstance(mapped, InvalidRequestError):
        mapped.field_violations = _violations(details)
    return mapped


def from_status(
    code: int, message: str, reason: str | None, request_id: str | None = None
) -> ServiceError:
    """The SDK exception of a status given as numbers and names (how a job ended, as GetJob
    reports it), classified like `from_rpc_error` does."""
    status = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    reason = reason or None
    cls = _class_for(status, reason, message, None)
    return cls(
        message,
        code=status,
        request_id=request_id,
        reason=reason,
        domain=ERROR_DOMAIN if reason else None,
    )


def _class_for(
    code: grpc.StatusCode, reason: str | None, message: str, retry_after: float | None
) -> type[ServiceError]:
    """The exception class: the styletx reason where it names one, else the status code."""
    if reason == Reason.OUT_OF_MEMORY:
        return OutOfMemoryError
    if reason == Reason.KEY_REUSED:
        return RequestKeyReusedError
    if reason == Reason.JOB_NOT_FOUND:
        return JobNotFoundError
    cls = _BY_CODE.get(code, ServiceError)
    if cls is not ServerBusyError or reason in BUSY_REASONS or retry_after is not None:
        return cls
    if _is_message_size_error(message):
        # gRPC reports an oversized message as RESOURCE_EXHAUSTED; waiting will not fix that.
        return ServiceError
    if _is_concurrency_limit(message):
        return ServerBusyError
    # The API's contract: RESOURCE_EXHAUSTED without RetryInfo means the job ran out of memory.
    return OutOfMemoryError


def _code_of(error: grpc.RpcError) -> grpc.StatusCode:
    code = getattr(error, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _message_of(error: grpc.RpcError) -> str:
    details = getattr(error, "details", None)
    value = details() if callable(details) else None
    return value if isinstance(value, str) and value else "no details given by the server"


def _metadata(error: grpc.RpcError, accessor: str) -> _Metadata:
    """Read initial/trailing metadata where the error carries it (sync calls and AioRpcError)."""
    method = getattr(error, accessor, None)
    try:
        value = method() if callable(method) else None
    except Exception:  # a call that never started has no metadata; that is not worth failing for
        logger.debug("no %s on %r", accessor, error, exc_info=True)
        return ()
    return tuple(value) if value else ()


def _first(metadata: _Metadata, key: str) -> str | None:
    for name, value in metadata:
        if name.lower() == key:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


def _decode_details(trailing: _Metadata) -> tuple[Message, ...]:
    """Unpack the google.rpc.Status details that grpcio-status servers put in the trailers."""
    for name, value in trailing:
        if name != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            logger.warning("ignoring undecodable %s trailer", STATUS_DETAILS_KEY)
            return ()
        return tuple(_unpack(item) for item in status.details)
    return ()


def _unpack(item: any_pb2.Any) -> Message:
    cls = _DETAIL_TYPES.get(item.TypeName())
    if cls is None:
        return item
    message = cls()
    item.Unpack(message)
    return message


def _violations(details: Sequence[Message]) -> tuple[FieldViolation, ...]:
    return tuple(
        FieldViolation(field=v.field, description=v.description)
        for detail in details
        if isinstance(detail, error_details_pb2.BadRequest)
        for v in detail.field_violations
    )


def _retry_after(details: Sequence[Message]) -> float | None:
    for detail in details:
        if isinstance(detail, error_details_pb2.RetryInfo) and detail.HasField("retry_delay"):
            return max(0.0, float(detail.retry_delay.ToTimedelta().total_seconds()))
    return None


def _error_info(details: Sequence[Message]) -> tuple[str | None, str | None]:
    """(domain, reason) of the ErrorInfo detail, preferring the styletx domain's."""
    infos = [d for d in details if isinstance(d, error_details_pb2.ErrorInfo)]
    infos.sort(key=lambda info: info.domain != ERROR_DOMAIN)
    if not infos:
        return None, None
    return infos[0].domain or None, infos[0].reason or None


def _is_message_size_error(message: str) -> bool:
    return "larger than max" in message


def _is_concurrency_limit(message: str) -> bool:
    """grpcio's own refusal when a server's maximum_concurrent_rpcs is reached."""
    return "Concurrent RPC limit exceeded" in message
