"""The standard `grpc.health.v1` check, typed: what `client.health()` returns."""

from __future__ import annotations

import enum

import grpc
from grpc_health.v1 import health_pb2

from .errors import from_rpc_error

CHECK_METHOD = "/grpc.health.v1.Health/Check"
SERVICE_NAME = "styletx.v1.StyleTransferService"
"""The name the server registers for the style transfer service ("" is the whole server)."""


class ServingStatus(enum.StrEnum):
    """Health of a server or service, named as in grpc.health.v1."""

    UNKNOWN = "UNKNOWN"
    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    SERVICE_UNKNOWN = "SERVICE_UNKNOWN"


_Response = health_pb2.HealthCheckResponse
_BY_NUMBER = {
    int(_Response.UNKNOWN): ServingStatus.UNKNOWN,
    int(_Response.SERVING): ServingStatus.SERVING,
    int(_Response.NOT_SERVING): ServingStatus.NOT_SERVING,
    int(_Response.SERVICE_UNKNOWN): ServingStatus.SERVICE_UNKNOWN,
}


def encode_request(service: str) -> bytes:
    """A serialized HealthCheckRequest (the channel call is untyped bytes in, bytes out)."""
    return bytes(health_pb2.HealthCheckRequest(service=service).SerializeToString())


def decode_response(data: bytes) -> ServingStatus:
    """The status in a serialized HealthCheckResponse; codes newer than this SDK read UNKNOWN."""
    status = int(_Response.FromString(data).status)
    return _BY_NUMBER.get(status, ServingStatus.UNKNOWN)


def status_for_error(code: grpc.StatusCode) -> ServingStatus | None:
    """NOT_FOUND is how a health server says it does not know the service; other errors raise."""
    return ServingStatus.SERVICE_UNKNOWN if code == grpc.StatusCode.NOT_FOUND else None


def status_from_error(error: grpc.RpcError, request_id: str) -> ServingStatus:
    """SERVICE_UNKNOWN for NOT_FOUND; any other failure raises its SDK exception."""
    mapped = from_rpc_error(error, request_id)
    status = status_for_error(mapped.code)
    if status is None:
        raise mapped from None
    return status
