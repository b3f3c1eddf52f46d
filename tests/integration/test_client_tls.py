"""TLS: the SDK and the CLI verify a server certificate against a given CA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from styletx_client import NO_RETRY, Result, StyleTransferClient, TlsConfig, UnavailableError
from styletx_client.cli import main
from tests.support.fake_server import serve

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
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


def server_credentials(certificate: tuple[Path, Path]) -> grpc.ServerCredentials:
    cert, key = certificate
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])


def test_tls_with_the_servers_ca(certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    with (
        serve(credentials=server_credentials(certificate)) as fake,
        StyleTransferClient(
            fake.address, tls=TlsConfig(root_certificates=cert.read_bytes())
        ) as client,
    ):
        assert isinstance(client.stylize(b"c", b"s"), Result)


def test_tls_rejects_an_untrusted_server(certificate: tuple[Path, Path]) -> None:
    with (
        serve(credentials=server_credentials(certificate)) as fake,
        StyleTransferClient(fake.address, tls=True, retry=NO_RETRY, timeout=10) as client,
        pytest.raises(UnavailableError),
    ):
        client.stylize(b"c", b"s")


def test_cli_ca_cert(certificate: tuple[Path, Path], tmp_path: Path) -> None:
    cert, _ = certificate
    content, style = tmp_path / "c.png", tmp_path / "s.png"
    content.write_bytes(b"c")
    style.write_bytes(b"s")
    out = tmp_path / "out.png"
    base = ["stylize", str(content), str(style), "-o", str(out), "-q"]
    with serve(credentials=server_credentials(certificate)) as fake:
        code = main([*base, "--server", fake.address, "--ca-cert", str(cert)])
        assert code == 0
        assert out.exists()
        plaintext = main([*base, "--server", fake.address, "--max-attempts", "1"])
        assert plaintext == 3
