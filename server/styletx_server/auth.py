"""Bearer-token authentication for the API; health and reflection stay open so probes work.

An asyncio interceptor: a refusal costs no thread and never reaches the servicer. The `Bearer`
scheme is matched case-insensitively (RFC 7235); a call with several `authorization` entries is
refused, so no proxy or client quirk can smuggle a second credential past the check. With a
tokens file the check is the tenant directory's (`tenants.TenantDirectory.admits`); the servicer
then names the call's tenant (mTLS callers by their certificate, which only it can see).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
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
SCHEME = "bearer"

if TYPE_CHECKING:  # grpc's classes are generic only in its type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]


def _deny(handler: Handler) -> Handler:
    """A handler of the same shape as `handler` that fails with UNAUTHENTICATED."""
    status = statuses.unauthenticated()

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(status.code, status.details, status.trailing_metadata)

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


def token_matches(metadata: Any, token: str) -> bool:
    """True when `metadata` holds exactly one `authorization: Bearer <token>` (any case)."""
    values = [value for key, value in metadata or () if key.lower() == AUTHORIZATION_KEY]
    if len(values) != 1:
        return False
    value = values[0]
    given = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    scheme, _, credentials = given.strip().partition(" ")
    # Constant time: the comparison must not reveal how much of a guess was right.
    same = hmac.compare_digest(credentials.strip().encode(), token.encode())
    return scheme.lower() == SCHEME and same


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Requires metadata `authorization: Bearer <token>` on every method but the open ones."""

    def __init__(
        self,
        token: str | Callable[[Any], bool],
        on_reject: Callable[[str, Any], None] | None = None,
    ) -> None:
        """`token`: the one token, or a check of a call's metadata (the tenant directory's)."""
        self._admits = token if callable(token) else lambda metadata: token_matches(metadata, token)
        self._on_reject = on_reject

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES) or self._admits(
            handler_call_details.invocation_metadata
        ):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: UNIMPLEMENTED
        if self._on_reject is not None:
            self._on_reject(method.rsplit("/", 1)[-1], handler_call_details.invocation_metadata)
        return _deny(handler)


__all__ = [
    "AUTHORIZATION_KEY",
    "OPEN_PREFIXES",
    "BearerAuthInterceptor",
    "token_matches",
]
