"""OpenTelemetry traces: the process's tracer provider from the `OTEL_*` environment, one server
span per API call (continuing the caller's W3C `traceparent`), and a job's spans across threads.

Off unless the environment names an exporter (`OTEL_TRACES_EXPORTER`) or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_SDK_DISABLED=true`
turns it off whatever else is set. Off, the SDK is not even imported, no interceptor is
installed and the child spans below are shared no-op contexts (bench/trace_bench.py).

Spans of one Stylize call, all children of its server span:
`intake` (option and header checks), `queue_wait` (admitted until a worker takes the job),
`decode`, `style_targets` and `optimisation` (per scale, made by the engine), `encode`.

OpenTelemetry's propagators log a malformed `tracestate` or `baggage` header word for word; the
interceptor caps what of it reaches a log line (`logs.cap_caller_text_in`).
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
from opentelemetry import propagate, trace

from styletx.tracing import SCOPE
from styletx_server.observe.handlers import behavior_of, same_shape
from styletx_server.observe.logs import cap_caller_text_in, log_event

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


class TracingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """One SERVER span per call of the API, the child of the caller's `traceparent` when it
    sent one (else the root of a new trace), current while the handler runs."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=provider)
        cap_caller_text_in(*PROPAGATION_LOGGERS)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(TRACED_PREFIX):
            return handler
        carrier = {
            key.lower(): value
            for key, value in handler_call_details.invocation_metadata or ()
            if isinstance(value, str)
        }
        parent = propagate.extract(carrier)
        name = method.lstrip("/")
        service, _, rpc = name.partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
        return _wrapped(handler, self._tracer, name, parent, attributes)


def _wrapped(
    handler: Handler,
    tracer: trace.Tracer,
    name: str,
    parent: otel_context.Context,
    attributes: dict[str, str],
) -> Handler:
    """`handler` with its behaviour run inside the call's span (async behaviours only)."""

    @contextlib.contextmanager
    def span(context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[None]:
        with tracer.start_as_current_span(
            name,
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as current:
            try:
                yield
            finally:
                _end_status(current, context)

    behavior = behavior_of(handler)
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with span(context):
                async for response in behavior(request, context):
                    yield response

        run: Callable[..., Any] = stream
    elif inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with span(context):
                return await behavior(request, context)

        run = call
    else:
        return handler  # a synchronous behaviour runs on a thread pool: left untraced
    return same_shape(handler, run)


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
    "JobTrace",
    "TracingConfigError",
    "TracingInterceptor",
    "configure",
    "exporter_names",
]
