"""Child spans of a traced job (OpenTelemetry API only: no SDK, no exporter, no gRPC).

The engine never starts a trace: a span is made only under a span that is recording (a server's
call span, attached to the job's worker thread). Untraced work, the engine's own CLI included,
pays one context lookup per phase and gets a shared no-op context manager.
"""

from __future__ import annotations

import contextlib
from typing import Any

from opentelemetry import trace

#: The instrumentation scope of every span the engine and the server make below a call span.
SCOPE = "styletx"

_tracer = trace.get_tracer(SCOPE)
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


def child(name: str, **attributes: Any) -> contextlib.AbstractContextManager[trace.Span | None]:
    """A child span of the current recording span, current while the block runs; a no-op
    context (yielding None) when nothing is being traced."""
    if not trace.get_current_span().is_recording():
        return _NOTHING
    return _tracer.start_as_current_span(name, attributes=attributes)


__all__ = ["SCOPE", "child"]
