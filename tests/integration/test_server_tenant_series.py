"""A tenant the tokens file no longer names leaves the metrics (the label set stays bounded by
the tenants in force), and caller-supplied request keys reach the log capped."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.observe.logs import CALLER_TEXT_LIMIT
from tests.integration.conftest import WAIT, ServerFactory
from tests.integration.test_server_tenants import (
    UNBOUNDED,
    client_for,
    requests_of,
    stylize,
    tokens_file,
)


def tenants_in_series(server: object, name: str) -> set[str]:
    registry = server.metrics.registry  # type: ignore[attr-defined]
    return {
        sample.labels["tenant"]
        for metric in registry.collect()
        if metric.name == name
        for sample in metric.samples
        if "tenant" in sample.labels
    }


def test_a_removed_tenant_loses_its_series(server_factory: ServerFactory, tmp_path: Path) -> None:
    path = tokens_file(tmp_path, UNBOUNDED)
    server = server_factory(auth_tokens_file=path)
    with client_for(server, "shop-token") as shop:
        stylize(shop)
    assert requests_of(server, "shop") == 1
    for family in ("styletx_requests", "styletx_queue_depth", "styletx_lbfgs_evaluations"):
        assert "shop" in tenants_in_series(server, family), family
    path.write_text('[tenants.batch]\ntokens = ["batch-token"]\n')
    assert server.tenants.settle(WAIT)
    for family in ("styletx_requests", "styletx_queue_depth", "styletx_jobs_in_flight"):
        assert "shop" not in tenants_in_series(server, family), family
    assert "batch" in tenants_in_series(server, "styletx_queue_depth")


@pytest.mark.parametrize("method", ["Stylize", "GetJob"])
def test_an_invalid_request_key_reaches_the_log_capped(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    server = server_factory()
    key = "k" * 5000 + "!"
    with (
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        caplog.at_level(logging.INFO),
        pytest.raises(grpc.RpcError) as refused,
    ):
        stub = pb_grpc.StyleTransferServiceStub(channel)
        if method == "GetJob":
            stub.GetJob(pb.GetJobRequest(request_key=key), timeout=WAIT)
        else:
            request = pb.StylizeRequest(request_key=key)
            for _ in stub.Stylize(request, timeout=WAIT):
                pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [line] = [r for r in caplog.records if r.getMessage() == "request"]
    logged = line.styletx_fields["request_key"]  # type: ignore[attr-defined]
    assert logged.startswith("k" * 100) and len(logged) < CALLER_TEXT_LIMIT + 40
