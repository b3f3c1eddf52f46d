"""What the SDK sends besides the request: the caller's trace context (W3C traceparent), the
client's extra metadata, and whatever its interceptors add, sync and asyncio, as the server sees
them (a scripted in-process fake that records each call's metadata)."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry import trace

from styletx_client import StyleTransferClient
from styletx_client.aio import AsyncStyleTransferClient
from tests.support.fake_server import serve
from tests.support.tracing import in_memory_tracing

_Fields = namedtuple(
    "_Fields", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
)


class _Details(_Fields, grpc.ClientCallDetails):  # type: ignore[misc]
    """Call details with other metadata (grpc's own class cannot be built by callers)."""


def _with_header(details: Any, key: str, value: str) -> _Details:
    return _Details(
        details.method,
        details.timeout,
        [*(details.metadata or ()), (key, value)],
        details.credentials,
        details.wait_for_ready,
        details.compression,
    )


class AddHeader(grpc.UnaryStreamClientInterceptor, grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """A sync interceptor that adds one header to every call (Stylize and health checks)."""

    def __init__(self, key: str, value: str) -> None:
        self.key, self.value, self.calls = key, value, 0

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        self.calls += 1
        return continuation(_with_header(details, self.key, self.value), request)

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        self.calls += 1
        return continuation(_with_header(details, self.key, self.value), request)


class AsyncAddHeader(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """The grpc.aio counterpart of `AddHeader` (Stylize only)."""

    def __init__(self, key: str, value: str) -> None:
        self.key, self.value = key, value

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        details = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*(details.metadata or ()), (self.key, self.value)),
            details.credentials,
            details.wait_for_ready,
        )
        return await continuation(details, request)


def test_extra_metadata_and_interceptors_reach_the_server() -> None:
    interceptor = AddHeader("x-intercepted", "yes")
    with (
        serve() as fake,
        StyleTransferClient(
            fake.address,
            metadata=[("x-team", "blue"), ("x-blob-bin", b"\x00\x01")],
            interceptors=[interceptor],
        ) as client,
    ):
        client.stylize(b"content", b"style")
        client.health()
    (call,) = fake.servicer.calls
    assert call.metadata["x-team"] == "blue"
    assert call.metadata["x-intercepted"] == "yes"
    assert call.metadata["x-request-id"]  # the SDK's own keys are still there
    assert interceptor.calls == 2  # the health check went through it too


def test_asyncio_client_sends_metadata_and_runs_interceptors() -> None:
    async def main() -> None:
        async with AsyncStyleTransferClient(
            fake.address,
            metadata=[("x-team", "green")],
            interceptors=[AsyncAddHeader("x-intercepted", "aio")],
        ) as client:
            await client.stylize(b"content", b"style")

    with serve() as fake:
        asyncio.run(main())
    (call,) = fake.servicer.calls
    assert call.metadata["x-team"] == "green"
    assert call.metadata["x-intercepted"] == "aio"


def test_the_current_span_goes_out_as_traceparent() -> None:
    in_memory_tracing()
    tracer = trace.get_tracer("test")
    with serve() as fake, StyleTransferClient(fake.address) as client:
        client.stylize(b"content", b"style")  # no span: no traceparent
        with tracer.start_as_current_span("caller") as span:
            client.stylize(b"content", b"style")
    untraced, traced = fake.servicer.calls
    assert "traceparent" not in untraced.metadata
    context = span.get_span_context()
    version, trace_id, span_id, flags = traced.metadata["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    assert trace_id == trace.format_trace_id(context.trace_id)
    assert span_id == trace.format_span_id(context.span_id)


def test_asyncio_client_sends_the_span_current_when_the_call_starts() -> None:
    in_memory_tracing()
    tracer = trace.get_tracer("test")

    async def main() -> trace.SpanContext:
        async with AsyncStyleTransferClient(fake.address) as client:
            with tracer.start_as_current_span("caller") as span:
                await client.stylize(b"content", b"style")
            return span.get_span_context()

    with serve() as fake:
        context = asyncio.run(main())
    (call,) = fake.servicer.calls
    assert trace.format_trace_id(context.trace_id) in call.metadata["traceparent"]


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ([("X-Team", "blue")], ValueError),
        ([("x-request-id", "mine")], ValueError),
        ([("authorization", "Bearer x")], ValueError),
        ([("grpc-timeout", "1S")], ValueError),
        ([("x-blob-bin", "text")], TypeError),
        ([("x-team", b"bytes")], TypeError),
        (["x-team: blue"], TypeError),
    ],
)
def test_metadata_the_server_could_not_take_is_refused_at_once(
    metadata: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        StyleTransferClient("127.0.0.1:1", metadata=metadata)
