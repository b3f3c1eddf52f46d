"""One in-memory OpenTelemetry SDK for the test process (the global tracer provider is set once
per process): spans of the server, the engine and the test's own spans, collected in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_lock = threading.Lock()
_installed: tuple[TracerProvider, InMemorySpanExporter] | None = None


def in_memory_tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    """The process's SDK tracer provider exporting to memory (installed on the first call)."""
    global _installed
    with _lock:
        if _installed is None:
            exporter = InMemorySpanExporter()
            provider = TracerProvider(shutdown_on_exit=False)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            assert trace.get_tracer_provider() is provider, "another tracer provider is set"
            _installed = provider, exporter
        return _installed


def wait_for_spans(
    exporter: InMemorySpanExporter,
    done: Callable[[Sequence[ReadableSpan]], bool],
    timeout: float = 30.0,
) -> tuple[ReadableSpan, ...]:
    """The finished spans once `done` says they are all there (a server span ends just after its
    caller has the status)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = exporter.get_finished_spans()
        if done(spans):
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"spans not finished in time: {[s.name for s in spans]}")
        time.sleep(0.01)
