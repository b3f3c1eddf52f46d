"""Structured logs: one JSON object per line on stderr, and the per-request id.

A line written inside a traced call (tracing.py) carries the trace and span ids of the span
current where it was logged, so a trace leads to its log lines and back.

Text a caller chose (a user agent, a `tracestate`, a request id) reaches a line at most
`CALLER_TEXT_LIMIT` characters long (`caller_text`; `cap_caller_text_in` for the messages of
other libraries), so no caller can make a refused call cost kilobytes of logs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

from opentelemetry import trace

from styletx_api.wire import REQUEST_ID_KEY

#: Attribute of a LogRecord that carries the structured fields of `log_event`.
_FIELDS_ATTR = "styletx_fields"
#: Most characters of a caller's text a log line keeps (then how many more there were).
CALLER_TEXT_LIMIT = 200
#: Longest request id taken from a caller (a longer one is replaced, never cut).
MAX_REQUEST_ID = 128
# A caller-supplied id is echoed into logs and metadata: keep it short and printable.
_VALID_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:/+=@-]{{1,{MAX_REQUEST_ID}}}")
#: Attributes every LogRecord has; anything else came from a caller's `extra=` and is logged.
_STANDARD_ATTRS = frozenset(
    {*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime", "taskName"}
)


#: Third-party loggers kept at INFO even when the server logs at DEBUG.
_CHATTY_LOGGERS = ("PIL", "grpc._cython")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, event, the current trace and
    span ids (when traced), then its fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = trace.format_trace_id(span.trace_id)
            out["span_id"] = trace.format_span_id(span.span_id)
        fields = getattr(record, _FIELDS_ATTR, None)
        if not isinstance(fields, dict):
            # Other libraries (the engine) pass structure as `extra=`: keep it too.
            fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        for key, value in fields.items():
            # Never let a field overwrite the envelope.
            out[key if key not in out else f"field_{key}"] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: int | str = logging.INFO, stream: IO[str] | None = None) -> None:
    """Send every log record (ours, grpc's, TensorFlow's) as JSON lines to `stream` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # At DEBUG these would log every PNG chunk of every upload and every event-loop lookup:
    # noise that buries the server's own debug lines.
    for chatty in _CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.INFO)


def log_event(
    logger: logging.Logger,
    event: str,
    *,
    level: int = logging.INFO,
    exc_info: BaseException | bool = False,
    **fields: Any,
) -> None:
    """Log `event` with structured `fields` (they become top-level JSON keys)."""
    logger.log(level, event, exc_info=exc_info, extra={_FIELDS_ATTR: fields})


def caller_text(value: object, limit: int = CALLER_TEXT_LIMIT) -> str:
    """A caller's text as a log line may carry it: its first `limit` characters, then how many
    more were cut (bytes are decoded as UTF-8, bad sequences replaced)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...(+{len(text) - limit} chars)"


class CallerTextFilter(logging.Filter):
    """Caps each string argument of a record (`caller_text`): for libraries that log what a
    caller sent inside their message (OpenTelemetry's propagators quote a bad header)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_capped(arg) for arg in args)
        elif isinstance(args, dict):
            record.args = {key: _capped(arg) for key, arg in args.items()}
        return True


def _capped(arg: object) -> object:
    return caller_text(arg) if isinstance(arg, str | bytes) else arg


def cap_caller_text_in(*loggers: str) -> None:
    """Cap the string arguments of every record the named loggers log (once per logger)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, CallerTextFilter) for f in logger.filters):
            logger.addFilter(CallerTextFilter())


def request_id_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The caller's `x-request-id` when it is sane, else a fresh random id."""
    for key, value in metadata or ():
        if key.lower() == REQUEST_ID_KEY and isinstance(value, str):
            if _VALID_REQUEST_ID.fullmatch(value):
                return value
            break
    return uuid.uuid4().hex


__all__ = [
    "CALLER_TEXT_LIMIT",
    "MAX_REQUEST_ID",
    "REQUEST_ID_KEY",
    "CallerTextFilter",
    "JsonFormatter",
    "caller_text",
    "cap_caller_text_in",
    "configure_logging",
    "log_event",
    "request_id_from",
]
