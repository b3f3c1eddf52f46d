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

from styletx_api.wire import AUTHORIZATION_KEY, BEARER_SCHEME
from styletx_server.errors import statuses
from styletx_server.observe.handlers import same_shape

#: Methods reachable without a token: Kubernetes probes and grpcurl's discovery.
OPEN_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
SCHEME = BEARER_SCHEME.lower()

if TYPE_CHECKING:  # grpc's classes are generic only in its type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]


def _deny(handler: Handler) -> Handler:
    """A handler of the same shape as `handler` that fails with UNAUTHENTICATED."""
    status = statuses.unauthenticated()

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(status.code, status.details, status.trailing_metadata)

    return same_shape(handler, refuse)


def bearer_token(metadata: Any) -> str | None:
    """The token of exactly one `authorization: Bearer <token>` entry (any case), else None."""
    values = [value for key, value in metadata or () if key.lower() == AUTHORIZATION_KEY]
    if len(values) != 1:
        return None
    value = values[0]
    given = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    scheme, _, credentials = given.strip().partition(" ")
    if scheme.lower() != SCHEME or not credentials.strip():
        return None
    return credentials.strip()


def token_matches(metadata: Any, token: str) -> bool:
    """True when `metadata` holds exactly one `authorization: Bearer <token>` (any case)."""
    given = bearer_token(metadata)
    # Constant time: the comparison must not reveal how much of a guess was right.
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


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
    "bearer_token",
    "token_matches",
]
