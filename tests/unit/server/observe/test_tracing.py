"""The server's tracing set-up from the OTEL_* environment: which settings turn it on, and that
off means nothing imported, started or exported (checked in a fresh interpreter, since the
process's tracer provider can be set only once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import namedtuple
from typing import Any

import pytest

from styletx_server.observe.tracing import TracingConfigError, configure, exporter_names

ENDPOINT = "http://127.0.0.1:4317"


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "styletx"}, []),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, OTLP"}, ["console", "otlp"]),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ],
)
def test_exporters_come_from_the_environment(environ: dict[str, str], names: list[str]) -> None:
    assert exporter_names(environ) == names


def test_an_exporter_that_is_not_installed_is_a_configuration_error() -> None:
    with pytest.raises(TracingConfigError, match="zipkin"):
        configure({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(TracingConfigError, match="otlp_proto_http"):
        configure({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})


PROBE = """
import json, sys, threading
from opentelemetry import trace
from styletx_server.observe.tracing import configure
provider = configure()
with trace.get_tracer("probe").start_as_current_span("probe") as span:
    recording = span.is_recording()
sys.stderr.write("PROBE " + json.dumps({
    "provider": type(provider).__name__,
    "global": type(trace.get_tracer_provider()).__name__,
    "sdk_imported": "opentelemetry.sdk" in sys.modules,
    "exporter_imported": "opentelemetry.exporter.otlp.proto.grpc" in sys.modules,
    "threads": sorted(t.name for t in threading.enumerate()),
    "recording": recording,
}) + "\\n")
"""


def probe(**environ: str) -> dict[str, object]:
    """What `configure()` did in a fresh interpreter with only `environ` of the OTEL_* kind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("PROBE ")]
    return dict(json.loads(line.removeprefix("PROBE ")))


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {
            "OTEL_SDK_DISABLED": "true",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
        },
    ],
    ids=["unset", "disabled"],
)
def test_without_tracing_nothing_is_imported_started_or_recorded(environ: dict[str, str]) -> None:
    found = probe(**environ)
    assert found == {
        "provider": "NoneType",
        "global": "ProxyTracerProvider",
        "sdk_imported": False,
        "exporter_imported": False,
        "threads": ["MainThread"],
        "recording": False,
    }


def test_an_endpoint_starts_the_otlp_exporter_and_its_batch_thread() -> None:
    found = probe(OTEL_EXPORTER_OTLP_ENDPOINT=ENDPOINT, OTEL_EXPORTER_OTLP_TIMEOUT="1")
    assert found["provider"] == found["global"] == "TracerProvider"
    assert found["exporter_imported"] is True and found["recording"] is True
    assert "OtelBatchSpanRecordProcessor" in str(found["threads"])


def test_console_spans_name_the_service() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = PROBE + "provider.shutdown()\n"
    for environ, service in [
        ({}, "styletx-server"),
        ({"OTEL_SERVICE_NAME": "render"}, "render"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=paint,team=a"}, "paint"),
    ]:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "OTEL_TRACES_EXPORTER": "console", **environ},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        exported = json.loads(done.stdout)
        assert exported["name"] == "probe"
        assert exported["resource"]["attributes"]["service.name"] == service


class _Context:
    """What the interceptors read of a grpc.aio servicer context (its metadata as gRPC gives it:
    pairs with `key` and `value`)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = tuple(_Metadatum(key, value) for key, value in metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def code(self) -> None:
        return None

    def cancelled(self) -> bool:
        return False


_Metadatum = namedtuple("_Metadatum", ("key", "value"))


def test_an_invalid_tracestate_reaches_the_log_capped(caplog: pytest.LogCaptureFixture) -> None:
    """The attack: an invalid `tracestate` put 660 bytes of caller text into a log line."""
    import asyncio
    import logging
    from types import SimpleNamespace

    import grpc

    from styletx_server.observe.logs import CALLER_TEXT_LIMIT
    from styletx_server.observe.tracing import server_interceptors

    async def behaviour(request: object, context: object) -> None:
        return None

    handler = grpc.unary_unary_rpc_method_handler(behaviour)

    async def servicer(details: object) -> object:
        return handler

    caller_text = 'a"' * 250  # 500 characters, within the header's limit; 750 bytes as JSON
    metadata = (
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", caller_text),
        ("baggage", "=" + caller_text),
    )
    details = SimpleNamespace(
        method="/styletx.v1.StyleTransferService/GetJob", invocation_metadata=metadata
    )

    async def call() -> None:
        maintained, ours = server_interceptors()

        async def next_one(details: object) -> object:
            return await ours.intercept_service(servicer, details)  # type: ignore[arg-type]

        traced = await maintained.intercept_service(next_one, details)  # type: ignore[arg-type]
        run: Any = traced.unary_unary
        await run(object(), _Context(metadata))  # the call reads its headers

    with caplog.at_level(logging.DEBUG):
        asyncio.run(call())
    messages = [record.getMessage() for record in caplog.records]
    assert any("match" in message for message in messages), messages  # it was logged ...
    for message in messages:  # ... but capped
        assert message.count('a"') <= CALLER_TEXT_LIMIT // 2, message
