"""Bearer-token authentication for the API; health and reflection stay open so probes work."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from styletx_server import statuses

#: Methods reachable without a token: Kubernetes probes and grpcurl's discovery.
OPEN_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
AUTHORIZATION_KEY = "authorization"

if TYPE_CHECKING:  # grpc's classes are generic only in its type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]


def _deny(handler: Handler) -> Handler:
    """A handler of the same shape as `handler` that fails with UNAUTHENTICATED."""

    def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort_with_status(statuses.unauthenticated())

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


class BearerAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Requires metadata `authorization: Bearer <token>` on every method but the open ones."""

    def __init__(self, token: str, on_reject: Callable[[str], None] | None = None) -> None:
        self._expected = f"Bearer {token}".encode()
        self._on_reject = on_reject

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key.lower() == AUTHORIZATION_KEY:
                given = value.encode() if isinstance(value, str) else bytes(value)
                # Constant time: the comparison must not reveal how much of a guess was right.
                return hmac.compare_digest(given, self._expected)
        return False

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES) or self._authorized(
            handler_call_details.invocation_metadata
        ):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if self._on_reject is not None:
            self._on_reject(method.rsplit("/", 1)[-1])
        return _deny(handler)


__all__ = ["AUTHORIZATION_KEY", "OPEN_PREFIXES", "BearerAuthInterceptor"]
