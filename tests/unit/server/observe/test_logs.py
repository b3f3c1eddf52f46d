"""JSON log lines and request ids."""

from __future__ import annotations

import io
import json
import logging

import pytest

from styletx_server.observe.logs import (
    CALLER_TEXT_LIMIT,
    MAX_REQUEST_ID,
    JsonFormatter,
    caller_text,
    cap_caller_text_in,
    configure_logging,
    log_event,
    request_id_from,
)


def test_event_fields_become_top_level_json_keys() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("styletx_server.test_logs")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        log_event(logger, "serving", address="[::]:1", port=1, level=logging.WARNING)
        try:
            raise ValueError("kaput")
        except ValueError as exc:
            log_event(logger, "job_failed", level=logging.ERROR, exc_info=exc, request_id="r1")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "serving" and first["port"] == 1 and first["address"] == "[::]:1"
    assert first["level"] == "warning" and first["logger"] == "styletx_server.test_logs"
    assert first["time"].endswith("+00:00")
    assert second["request_id"] == "r1"
    assert "ValueError: kaput" in second["exception"]


def test_a_field_cannot_overwrite_the_envelope() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "ready", None, None)
    record.styletx_fields = {"event": "spoofed", "level": "debug"}
    out = json.loads(JsonFormatter().format(record))
    assert out["event"] == "ready" and out["level"] == "info"
    assert out["field_event"] == "spoofed"


def test_plain_extra_fields_of_other_loggers_are_kept() -> None:
    record = logging.LogRecord(
        "styletx.optimize", logging.DEBUG, __file__, 1, "restart", None, None
    )
    record.evaluations = 40
    out = json.loads(JsonFormatter().format(record))
    assert out["event"] == "restart" and out["evaluations"] == 40
    assert "lineno" not in out and "args" not in out


def test_configure_logging_makes_every_logger_json() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        configure_logging("DEBUG", stream)
        logging.getLogger("grpc._server").debug("from %s", "grpc")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert json.loads(stream.getvalue())["event"] == "from grpc"


def test_request_id_is_taken_from_metadata_when_sane() -> None:
    assert request_id_from([("x-request-id", "abc-1.2")]) == "abc-1.2"
    assert request_id_from([("X-Request-Id", "Up")]) == "Up"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 200, 'quote"inject', "trailing\n"])
def test_insane_request_ids_are_replaced(bad: str) -> None:
    generated = request_id_from([("x-request-id", bad)])
    assert generated != bad and len(generated) == 32


def test_request_id_generated_when_absent() -> None:
    first, second = request_id_from(None), request_id_from([("other", "v")])
    assert first != second and len(first) == 32


def test_debug_level_keeps_image_decoders_and_grpc_internals_quiet() -> None:
    """The CPU overlay logs at DEBUG: one upload must not bring a line per PNG chunk."""
    import io as _io

    from PIL import Image

    stream = _io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(logging.DEBUG, stream)
        buffer = _io.BytesIO()
        Image.new("RGB", (4, 4)).save(buffer, format="PNG")
        Image.open(_io.BytesIO(buffer.getvalue())).load()
        logging.getLogger("styletx_server.test_logs").debug("ours")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["logger"] for e in events] == ["styletx_server.test_logs"]


def test_caller_text_is_capped_saying_how_much_was_cut() -> None:
    assert caller_text("grpc-python/1.68") == "grpc-python/1.68"
    capped = caller_text("u" * 7300)
    assert capped.startswith("u" * CALLER_TEXT_LIMIT)
    assert capped.endswith(f"(+{7300 - CALLER_TEXT_LIMIT} chars)")
    assert len(capped) < CALLER_TEXT_LIMIT + 20
    assert caller_text(b"\xffab") == "\ufffdab"


def test_the_filter_caps_caller_text_in_other_libraries_messages() -> None:
    logger = logging.getLogger("styletx_server.test_logs.library")
    cap_caller_text_in(logger.name)
    cap_caller_text_in(logger.name)  # idempotent
    assert len(logger.filters) == 1
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        logger.warning("Member doesn't match the format %s (%d)", "k=" + "v" * 660, 3)
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
    message = records[0].getMessage()
    assert len(message) < CALLER_TEXT_LIMIT + 80 and message.endswith("(3)")


def test_a_request_id_is_never_longer_than_the_cap() -> None:
    assert request_id_from([("x-request-id", "r" * MAX_REQUEST_ID)]) == "r" * MAX_REQUEST_ID
    assert len(request_id_from([("x-request-id", "r" * (MAX_REQUEST_ID + 1))])) == 32
    assert MAX_REQUEST_ID <= CALLER_TEXT_LIMIT
