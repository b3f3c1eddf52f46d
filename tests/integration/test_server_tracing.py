"""Traces through a real in-process server and the SDK, collected by the OpenTelemetry SDK's
in-memory exporter: the caller's span leads to the server's call span and on to the job's spans
(intake, queue wait, decode, style targets, optimisation, encode); a call without a traceparent
starts a trace; the server's log lines carry the ids of the span they were written in."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Sequence

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_client import StyleTransferClient
from styletx_server.observe.logs import JsonFormatter
from styletx_server.ops.app import StyletxServer
from styletx_server.ops.config import ServerConfig
from tests.integration.conftest import EVALUATIONS, SIZE, WAIT, make_request, png
from tests.support.tracing import in_memory_tracing, wait_for_spans

CALL_SPAN = "styletx.v1.StyleTransferService/Stylize"
JOB_SPANS = {"intake", "queue_wait", "decode", "style_targets", "optimisation", "encode"}


@pytest.fixture
def traced(stylizer: Stylizer) -> Iterator[tuple[StyletxServer, InMemorySpanExporter]]:
    """A server that traces into the process's in-memory exporter (emptied first)."""
    provider, exporter = in_memory_tracing()
    config = ServerConfig(
        address="127.0.0.1:0", metrics_port=0, workers=1, queue_size=4, warmup=False
    )
    server = StyletxServer(
        config, stylizer=stylizer, registry=CollectorRegistry(), tracer_provider=provider
    )
    server.start()
    assert server.wait_until_ready(WAIT)
    exporter.clear()
    try:
        yield server, exporter
    finally:
        server.stop()
        exporter.clear()


def _has_call(spans: Sequence[ReadableSpan]) -> bool:
    return any(span.name == CALL_SPAN for span in spans)


def _one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_the_callers_span_leads_to_the_optimisation_span(
    traced: tuple[StyletxServer, InMemorySpanExporter],
) -> None:
    server, exporter = traced
    tracer = trace.get_tracer("test")
    with (
        StyleTransferClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client,
        tracer.start_as_current_span("caller") as caller,
    ):
        client.stylize(
            png(48, 64, 1), png(40, 40, 2), size=SIZE, max_evaluations=EVALUATIONS, seed=7
        )
    spans = wait_for_spans(exporter, _has_call)
    call = _one(spans, CALL_SPAN)
    mine = caller.get_span_context()
    assert call.context is not None and call.parent is not None
    assert call.context.trace_id == mine.trace_id
    assert call.parent.span_id == mine.span_id
    assert call.kind is trace.SpanKind.SERVER
    assert call.attributes is not None
    assert call.attributes["rpc.method"] == "Stylize"
    assert call.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    children = [span for span in spans if span.parent and span.parent.span_id == _id(call)]
    assert {span.name for span in children} == JOB_SPANS
    optimisation = _one(spans, "optimisation")
    assert optimisation.context is not None
    assert optimisation.context.trace_id == mine.trace_id
    assert optimisation.attributes is not None
    assert optimisation.attributes["styletx.evaluations"] == EVALUATIONS
    # The job's spans lie inside the call, in order: queued, decoded, targets, optimised, encoded.
    assert call.start_time is not None and call.end_time is not None
    for span in children:
        assert span.start_time is not None and span.end_time is not None
        assert call.start_time <= span.start_time <= span.end_time <= call.end_time
    targets, encode = _one(spans, "style_targets"), _one(spans, "encode")
    assert targets.end_time is not None and optimisation.start_time is not None
    assert targets.end_time <= optimisation.start_time
    assert optimisation.end_time is not None and encode.start_time is not None
    assert optimisation.end_time <= encode.start_time


def test_a_call_without_traceparent_starts_a_trace(
    traced: tuple[StyletxServer, InMemorySpanExporter],
) -> None:
    server, exporter = traced
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        list(pb_grpc.StyleTransferServiceStub(channel).Stylize(make_request(), timeout=WAIT))
    spans = wait_for_spans(exporter, _has_call)
    call = _one(spans, CALL_SPAN)
    assert call.parent is None
    assert call.context is not None and call.context.trace_id != 0
    assert all(span.context.trace_id == call.context.trace_id for span in spans if span.context)
    assert _one(spans, "optimisation").parent is not None


def test_a_refused_call_is_traced_with_its_status(
    traced: tuple[StyletxServer, InMemorySpanExporter],
) -> None:
    server, exporter = traced
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Stylize(make_request(content_image=b"not an image"), timeout=WAIT))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    call = _one(wait_for_spans(exporter, _has_call), CALL_SPAN)
    assert call.attributes is not None
    assert call.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # A caller's mistake is not the server's error (OpenTelemetry's RPC conventions).
    assert call.status.status_code is trace.StatusCode.UNSET


def test_log_lines_carry_the_trace_and_span_ids(
    traced: tuple[StyletxServer, InMemorySpanExporter],
) -> None:
    server, exporter = traced
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("styletx_server")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with StyleTransferClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
            result = client.stylize(
                png(48, 64, 1), png(40, 40, 2), size=SIZE, max_evaluations=2, seed=7
            )
        call = _one(wait_for_spans(exporter, _has_call), CALL_SPAN)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    (request,) = [
        r for r in records if r["event"] == "request" and r["request_id"] == result.request_id
    ]
    assert call.context is not None
    assert request["trace_id"] == trace.format_trace_id(call.context.trace_id)
    assert request["span_id"] == trace.format_span_id(call.context.span_id)


def test_job_calls_are_traced_in_the_callers_trace(
    traced: tuple[StyletxServer, InMemorySpanExporter],
) -> None:
    server, exporter = traced
    tracer = trace.get_tracer("test")
    with StyleTransferClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
        result = client.stylize(
            png(48, 64, 1), png(40, 40, 2), size=SIZE, max_evaluations=2, request_key="traced-1"
        )
        with tracer.start_as_current_span("look") as look:
            client.get_job("traced-1")
    assert result.request_id
    name = "styletx.v1.StyleTransferService/GetJob"
    spans = wait_for_spans(exporter, lambda spans: any(s.name == name for s in spans))
    get = _one(spans, name)
    assert get.parent is not None and get.parent.span_id == look.get_span_context().span_id
    assert get.attributes is not None and get.attributes["rpc.method"] == "GetJob"
