"""The server process configured by the OTEL_* environment alone: its spans reach an OTLP
collector (an in-process fake) joined to the caller's traceparent; OTEL_SDK_DISABLED=true with
the same endpoint sends nothing."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from styletx.images import encode_image
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from tests.support.server_process import ServerProcess, launch
from tests.support.weights import tiny_image

pytestmark = pytest.mark.slow  # each test starts a server process (TensorFlow import included)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def make_request() -> pb.StylizeRequest:
    return pb.StylizeRequest(
        content_image=encode_image(tiny_image(48, 64, 1), "png"),
        style_images=[pb.StyleImage(image=encode_image(tiny_image(40, 40, 2), "png"))],
        options=pb.StyleOptions(size=48, max_evaluations=4, seed=1),
    )


class Collector(otlp_grpc.TraceServiceServicer):
    """Keeps every span it is sent: (trace id, parent span id, name, service name)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, str]] = []
        self.lock = threading.Lock()

    def Export(  # noqa: N802 (the gRPC method name)
        self, request: otlp.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            (span.trace_id.hex(), span.parent_span_id.hex(), span.name, service)
                        )
        return otlp.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = Collector()
    otlp_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(grace=None)


def _serve_one(seeded_weights: Path, env: dict[str, str]) -> ServerProcess:
    """A server process with `env` added, after one Stylize call with a traceparent."""
    server = launch(seeded_weights, env={**_base_env(), **env})
    try:
        server.wait_serving()
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.StyleTransferServiceStub(channel)
            list(stub.Stylize(make_request(), timeout=60, metadata=[("traceparent", TRACEPARENT)]))
    except BaseException:
        server.kill()
        raise
    return server


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def test_spans_reach_an_otlp_collector_in_the_callers_trace(
    seeded_weights: Path, collector: tuple[Collector, int]
) -> None:
    spans, port = collector
    server = _serve_one(
        seeded_weights,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_SERVICE_NAME": "styletx-e2e",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            name == "styletx.v1.StyleTransferService/Stylize" for _, _, name, _ in spans.spans
        ):
            time.sleep(0.05)
        request = server.event("request", timeout=30)
    finally:
        assert server.stop() == 0
    with spans.lock:
        found = list(spans.spans)
    call = [s for s in found if s[2] == "styletx.v1.StyleTransferService/Stylize"]
    assert call == [(TRACE_ID, PARENT_ID, call[0][2], "styletx-e2e")], found
    names = {name for trace_id, _, name, _ in found if trace_id == TRACE_ID}
    assert {"intake", "queue_wait", "decode", "style_targets", "optimisation", "encode"} <= names
    assert request["trace_id"] == TRACE_ID and request["span_id"]
    assert server.event("tracing")["exporters"] == ["otlp"]


def test_otel_sdk_disabled_sends_nothing(
    seeded_weights: Path, collector: tuple[Collector, int]
) -> None:
    spans, port = collector
    server = _serve_one(
        seeded_weights,
        {
            "OTEL_SDK_DISABLED": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    request = server.event("request", timeout=30)
    assert server.stop() == 0  # a provider would flush its spans on the way out
    assert spans.spans == []
    assert "trace_id" not in request
    assert not [e for e in server.events if e.get("event") == "tracing"]
