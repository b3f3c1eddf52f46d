"""gRPC method handlers rebuilt around a new behaviour, for the server's interceptors.

An aio interceptor that changes what a call does (refuse it, run it inside a span) returns a
handler of the same shape as the one it replaces: the same streaming sides and (de)serializers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:  # grpc's classes are generic only in its type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]


def behavior_of(handler: Handler) -> Callable[..., Any] | None:
    """The function that runs a call of `handler`, whichever its shape (None: it has none)."""
    if handler.response_streaming:
        return handler.stream_stream if handler.request_streaming else handler.unary_stream
    return handler.stream_unary if handler.request_streaming else handler.unary_unary


def same_shape(handler: Handler, behavior: Callable[..., Any]) -> Handler:
    """A handler with `handler`'s streaming sides and (de)serializers that runs `behavior`."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(behavior, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(behavior, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(behavior, **kwargs)
    return grpc.unary_unary_rpc_method_handler(behavior, **kwargs)


__all__ = ["behavior_of", "same_shape"]
