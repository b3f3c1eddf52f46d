"""OpenTelemetry traces: the process's tracer provider from the `OTEL_*` environment, one server
span per API call (continuing the caller's W3C `traceparent`; OpenTelemetry's maintained gRPC
instrumentation, with what it lacks added), and a job's spans across threads.

Off unless the environment names an exporter (`OTEL_TRACES_EXPORTER`) or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_SDK_DISABLED=true`
turns it off whatever else is set. Off, neither the SDK nor the instrumentation is imported, no
interceptor is installed and the child spans below are shared no-op contexts
(bench/trace_bench.py).

Spans of one Stylize call, all children of its server span:
`intake` (option and header checks), `queue_wait` (admitted until a worker takes the job),
`decode`, `style_targets` and `optimisation` (per scale, made by the engine), `encode`.

OpenTelemetry's propagators log a malformed `tracestate` or `baggage` header word for word;
`server_interceptors` caps what of it reaches a log line (`logs.cap_caller_text_in`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from styletx.tracing import SCOPE
from styletx_server.observe.handlers import behavior_of, same_shape
from styletx_server.observe.logs import (
    CALLER_TEXT_LIMIT,
    caller_text,
    cap_caller_text_in,
    log_event,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    Handler = grpc.RpcMethodHandler[Any, Any]

log = logging.getLogger(__name__)

#: OpenTelemetry's loggers that quote what a caller sent (a `tracestate`, `baggage` member).
PROPAGATION_LOGGERS = (
    "opentelemetry.trace.span",
    "opentelemetry.trace.propagation.tracecontext",
    "opentelemetry.baggage",
    "opentelemetry.baggage.propagation",
    "opentelemetry.propagate",
    "opentelemetry.propagators.composite",
)
#: Methods that get a server span: the API's (health probes and reflection would be noise).
TRACED_PREFIX = "/styletx.v1."
#: The service name when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES gives one.
DEFAULT_SERVICE_NAME = "styletx-server"
_EXPORTER_GROUP = "opentelemetry_traces_exporter"
#: OTEL_TRACES_EXPORTER=otlp by OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL (gRPC is what ships).
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
#: gRPC codes that make a server span an error (OpenTelemetry's RPC conventions).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TracingConfigError(ValueError):
    """The OTEL_* environment names an exporter that is not installed or not known."""


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for; [] means tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    given = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not given:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        given = "otlp" if endpoint else "none"
    names = [name.strip().lower() for name in given.split(",") if name.strip()]
    return [] if "none" in names else names


def configure(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Set the process's tracer provider from the OTEL_* environment and return it; None, with
    nothing imported or started, when the environment asks for no traces."""
    env = os.environ if environ is None else environ
    names = exporter_names(env)
    if not names:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = [_load_exporter(name, env) for name in names]
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES from os.environ.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # The sampler (OTEL_TRACES_SAMPLER), span limits and batching (OTEL_BSP_*) read the
    # environment themselves.
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log_event(
        log,
        "tracing",
        exporters=names,
        service_name=str(resource.attributes.get(SERVICE_NAME)),
    )
    return provider


def _load_exporter(name: str, env: Mapping[str, str]) -> Any:
    """An exporter instance by its OTEL_TRACES_EXPORTER name (an installed entry point)."""
    if name == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        name = _OTLP_BY_PROTOCOL.get(protocol.strip().lower(), f"otlp ({protocol})")
    found = metadata.entry_points(group=_EXPORTER_GROUP, name=name)
    if not found:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed "
            "(this server ships otlp over gRPC and console)"
        )
    return next(iter(found)).load()()


def server_interceptors(
    provider: trace.TracerProvider | None = None,
) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """The interceptors that trace the API's calls, to go first in the server's chain (so that
    refused calls are traced too).

    The first is OpenTelemetry's maintained gRPC instrumentation
    (`opentelemetry-instrumentation-grpc`, its grpc.aio server interceptor, unary and streaming):
    one SERVER span per call of the API, the child of the caller's `traceparent` when it sent one
    (else the root of a new trace), current while the handler runs, with `rpc.system`,
    `rpc.service`, `rpc.method` and the caller's address and user agent. The second,
    `CallSpan`, runs inside that span and adds what the package lacks (see there).
    """
    # Imported here: with tracing off, nothing of the instrumentation is loaded.
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    cap_caller_text_in(*PROPAGATION_LOGGERS)
    # The package's functions have no annotations.
    maintained: grpc.aio.ServerInterceptor[Any, Any] = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=provider, filter_=traced
    )
    return [maintained, CallSpan(traced)]


def traced(details: grpc.HandlerCallDetails) -> bool:
    """Whether a call gets a span. Not the package's `filters`: they test the call details'
    type against gRPC's abstract classes, some 30 us a call, twice (bench/RESULTS.md)."""
    return details.method.startswith(TRACED_PREFIX)


class CallSpan(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """What the maintained interceptor lacks, applied to its span (the current one here):

    - the span's name as documented and as OpenTelemetry's RPC conventions give it,
      `styletx.v1.StyleTransferService/Stylize`: the package names it after the full method,
      with a leading `/`, and takes no name of ours;
    - the call's gRPC status as it ended (`rpc.grpc.status_code`, an error status for the
      server-side codes): the package sees only `abort()` and `set_code()` called on its wrapper
      of the servicer context, and the server ends refused calls with `abort_with_status`
      (`rpc/calls.py`), so it would say OK for them, and for a call cancelled or ended by the
      caller;
    - the caller's user agent capped like any caller text (`logs.caller_text`);
    - streaming handlers of grpc.aio's read/write API (`Stylize` and `WatchJob` write with
      `context.write` and return None): the package iterates every streaming behaviour with
      `async for` and fails on a coroutine (open-telemetry/opentelemetry-python-contrib#3066),
      so such a behaviour reaches it as an async generator that writes and yields nothing.

    Left as the package makes it: the span's instrumentation scope is the package's, the peer's
    address is on it (`net.peer.*`), and an aborted call's span holds the AbortError as
    `exception` events.
    """

    def __init__(self, traced: Callable[[grpc.HandlerCallDetails], bool]) -> None:
        self._traced = traced

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or not self._traced(handler_call_details):
            return handler
        name = handler_call_details.method.lstrip("/")
        behavior = behavior_of(handler)
        if handler.response_streaming:
            generates = inspect.isasyncgenfunction(behavior)

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                span = _named(name, context)
                try:
                    if generates:
                        async for response in behavior(request, context):  # type: ignore[misc]
                            yield response
                    else:  # the read/write API: the handler writes and returns None
                        await behavior(request, context)  # type: ignore[misc]
                finally:
                    _end_status(span, context)

            return same_shape(handler, stream)

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            span = _named(name, context)
            try:
                return await behavior(request, context)  # type: ignore[misc]
            finally:
                _end_status(span, context)

        # The API's behaviours are all async (a synchronous one would run on a thread pool,
        # and the package's wrapper awaits it: not one of ours).
        return same_shape(handler, call)


def _named(name: str, context: grpc.aio.ServicerContext[Any, Any]) -> trace.Span:
    """The call's span (current: the package's), renamed as documented, its user agent capped."""
    span = trace.get_current_span()
    span.update_name(name)
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent" and len(value) > CALLER_TEXT_LIMIT:
            span.set_attribute("rpc.user_agent", caller_text(value))
    return span


def _end_status(span: trace.Span, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """The call's gRPC status on its span (an error status for the server-side codes)."""
    code = context.code()
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.CANCELLED if context.cancelled() else grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(trace.StatusCode.ERROR, code.name)


class JobTrace:
    """A job's place in its trace: the context of the call that created it (for spans made on
    the worker thread) and its `queue_wait` span, from admission until a worker takes it."""

    def __init__(self) -> None:
        self._context: otel_context.Context | None = None
        self._queue: trace.Span | None = None
        if trace.get_current_span().is_recording():
            self._context = otel_context.get_current()
            self._queue = trace.get_tracer(SCOPE).start_span("queue_wait")

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The worker's side: the queue wait is over; the call's context is current meanwhile
        (so the engine's spans and the log lines of the job belong to the call)."""
        self.dequeued()
        if self._context is None:  # not traced
            yield
            return
        token = otel_context.attach(self._context)
        try:
            yield
        finally:
            otel_context.detach(token)

    def dequeued(self) -> None:
        """End the queue wait (idempotent: a job dropped before it ran ends it too)."""
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.end()


__all__ = [
    "DEFAULT_SERVICE_NAME",
    "TRACED_PREFIX",
    "CallSpan",
    "JobTrace",
    "TracingConfigError",
    "configure",
    "exporter_names",
    "server_interceptors",
    "traced",
]
