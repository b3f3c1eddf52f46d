"""Bearer-token auth (health and reflection stay open) and TLS with a self-signed certificate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from styletx_client.proto import style_transfer_pb2_grpc as pb_grpc
from styletx_server.health import API_SERVICE
from tests.integration.conftest import WAIT, ServerFactory, channel_to, collect, make_request

TOKEN = "s3cret-token"


def test_calls_without_the_token_are_unauthenticated(
    server_factory: ServerFactory, stub_for: Any
) -> None:
    server = server_factory(auth_token=TOKEN)
    stub = stub_for(server)
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
        with pytest.raises(grpc.RpcError) as caught:
            collect(stub, make_request(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert TOKEN not in (caught.value.details() or "")
    events = collect(stub, make_request(), metadata=(("authorization", f"Bearer {TOKEN}"),))
    assert events[-1].HasField("result")
    registry = server.metrics.registry
    labels = {"method": "Stylize", "code": "UNAUTHENTICATED"}
    assert registry.get_sample_value("styletx_requests_total", labels) == 3
    # Refused calls never reached the servicer or the queue.
    assert registry.get_sample_value("styletx_queue_wait_seconds_count") == 1


def test_health_and_reflection_stay_open_with_auth(server_factory: ServerFactory) -> None:
    server = server_factory(auth_token=TOKEN)
    with channel_to(server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = health.Check(health_pb2.HealthCheckRequest(service=API_SERVICE), timeout=WAIT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        assert API_SERVICE in ProtoReflectionDescriptorDatabase(channel).get_services()


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (openssl: the `cryptography` package is absent)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_serves_over_an_encrypted_channel(
    server_factory: ServerFactory, self_signed: tuple[Path, Path]
) -> None:
    cert, key = self_signed
    server = server_factory(tls_cert=cert, tls_key=key)
    target = f"127.0.0.1:{server.port}"
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(target, credentials) as channel:
        events = collect(pb_grpc.StyleTransferServiceStub(channel), make_request())
        assert events[-1].HasField("result")
    # A plaintext client cannot talk to the TLS port.
    with grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            collect(pb_grpc.StyleTransferServiceStub(channel), make_request())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
