"""Bearer-token auth (health and reflection stay open), TLS, and mutual TLS with certificates
generated in the test by the openssl CLI."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.ops.health import API_SERVICE
from tests.integration.conftest import (
    WAIT,
    ServerFactory,
    channel_to,
    collect,
    make_request,
    reason_of,
)

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
    labels = {"method": "Stylize", "code": "UNAUTHENTICATED", "reason": "unauthenticated"}
    labels["tenant"] = "default"
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


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_the_bearer_scheme_is_case_insensitive(
    server_factory: ServerFactory, stub_for: Any, scheme: str
) -> None:
    stub = stub_for(server_factory(auth_token=TOKEN))
    events = collect(stub, make_request(), metadata=(("authorization", f"{scheme} {TOKEN}"),))
    assert events[-1].HasField("result")


def test_several_authorization_headers_are_refused(
    server_factory: ServerFactory, stub_for: Any
) -> None:
    server = server_factory(auth_token=TOKEN)
    stub = stub_for(server)
    good = ("authorization", f"Bearer {TOKEN}")
    for metadata in ((good, good), (good, ("authorization", "Bearer wrong"))):
        with pytest.raises(grpc.RpcError) as caught:
            collect(stub, make_request(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(caught.value) == "UNAUTHENTICATED"
    assert server.metrics.registry.get_sample_value("styletx_queue_wait_seconds_count") == 0


#: P-256 keys: generated in milliseconds, unlike RSA.
EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    """A throwaway CA, a server certificate and client certificates, all generated here."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path


def _ca(tmp: Path, name: str) -> tuple[Path, Path]:
    key, cert = tmp / f"{name}.key", tmp / f"{name}.pem"
    _openssl(
        "req", "-x509", *EC_KEY, "-nodes", "-days", "1", "-keyout", str(key),
        "-out", str(cert), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign",
    )  # fmt: skip
    return cert, key


def _signed(tmp: Path, name: str, ca: tuple[Path, Path], extension: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (tmp / f"{name}{s}" for s in (".key", ".csr", ".pem", ".ext"))
    ext.write_text(extension)
    _openssl(
        "req", *EC_KEY, "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(ext),
    )  # fmt: skip
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    ca = _ca(tmp_path, "ca")
    other = _ca(tmp_path, "other-ca")
    server = _signed(
        tmp_path, "server", ca,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )  # fmt: skip
    client = _signed(tmp_path, "client", ca, "extendedKeyUsage=clientAuth\n")
    stranger = _signed(tmp_path, "stranger", other, "extendedKeyUsage=clientAuth\n")
    return Pki(ca[0], *server, *client, *stranger)


def _mtls_channel(port: int, pki: Pki, cert: Path | None, key: Path | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=None if key is None else key.read_bytes(),
        certificate_chain=None if cert is None else cert.read_bytes(),
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    server_factory: ServerFactory, pki: Pki
) -> None:
    server = server_factory(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca)
    with _mtls_channel(server.port, pki, pki.client_cert, pki.client_key) as channel:
        events = collect(pb_grpc.StyleTransferServiceStub(channel), make_request())
        assert events[-1].HasField("result")
    for cert, key in ((None, None), (pki.stranger_cert, pki.stranger_key)):
        with _mtls_channel(server.port, pki, cert, key) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed


def test_mutual_tls_and_the_bearer_token_together(server_factory: ServerFactory, pki: Pki) -> None:
    server = server_factory(
        tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca, auth_token=TOKEN
    )
    with _mtls_channel(server.port, pki, pki.client_cert, pki.client_key) as channel:
        stub = pb_grpc.StyleTransferServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            collect(stub, make_request())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        events = collect(stub, make_request(), metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert events[-1].HasField("result")
