"""TLS and mutual TLS: the SDK and the CLI verify the server's certificate against a given CA
and, for a server that requires it, present a client certificate (certificates made here)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from styletx_client import (
    NO_RETRY,
    AsyncStyleTransferClient,
    Result,
    StyleTransferClient,
    TlsConfig,
    UnavailableError,
)
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


class Pki:
    """A test CA, a server certificate for localhost/127.0.0.1 and styletx.test, and client
    certificates from that CA and from an unrelated one (files in one folder)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = self._ca("ca")
        self.other_ca = self._ca("other-ca")
        self.server = self._leaf("server", self.ca, "localhost", server=True)
        self.client = self._leaf("client", self.ca, "styletx-client")
        self.stranger = self._leaf("stranger", self.other_ca, "stranger")

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.folder)

    def _ca(self, name: str) -> tuple[Path, Path]:
        self._openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return self.folder / f"{name}.pem", self.folder / f"{name}.key"

    def _leaf(self, name: str, ca: tuple[Path, Path], cn: str, *, server: bool = False) -> Pki.Pair:
        extensions = self.folder / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        san = "subjectAltName=DNS:localhost,DNS:styletx.test,IP:127.0.0.1\n" if server else ""
        extensions.write_text(f"extendedKeyUsage={usage}\n{san}")
        self._openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", "-extfile", str(extensions),
        )  # fmt: skip
        return Pki.Pair(self.folder / f"{name}.pem", self.folder / f"{name}.key")

    class Pair:
        def __init__(self, cert: Path, key: Path) -> None:
            self.cert, self.key = cert, key

        def tls(self, ca: Path) -> TlsConfig:
            return TlsConfig(
                root_certificates=ca.read_bytes(),
                certificate_chain=self.cert.read_bytes(),
                private_key=self.key.read_bytes(),
            )

    def mutual_server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.server.key.read_bytes(), self.server.cert.read_bytes())],
            root_certificates=self.ca[0].read_bytes(),
            require_client_auth=True,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def test_mutual_tls_with_a_client_certificate_from_the_servers_ca(pki: Pki) -> None:
    with (
        serve(credentials=pki.mutual_server_credentials()) as fake,
        StyleTransferClient(fake.address, tls=pki.client.tls(pki.ca[0])) as client,
    ):
        assert isinstance(client.stylize(b"c", b"s"), Result)
        assert len(fake.servicer.calls) == 1


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_mutual_tls_refuses_clients_without_a_trusted_certificate(pki: Pki, who: str) -> None:
    ca = pki.ca[0].read_bytes()
    tls = (
        TlsConfig(root_certificates=ca) if who == "no certificate" else pki.stranger.tls(pki.ca[0])
    )
    with (
        serve(credentials=pki.mutual_server_credentials()) as fake,
        StyleTransferClient(fake.address, tls=tls, retry=NO_RETRY, timeout=10) as client,
        pytest.raises(UnavailableError),
    ):
        client.stylize(b"c", b"s")
    assert fake.servicer.calls == []


def test_mutual_tls_works_with_the_async_client(pki: Pki) -> None:
    async def run(address: str) -> Result:
        async with AsyncStyleTransferClient(address, tls=pki.client.tls(pki.ca[0])) as client:
            return await client.stylize(b"c", b"s")

    with serve(credentials=pki.mutual_server_credentials()) as fake:
        assert isinstance(asyncio.run(run(fake.address)), Result)


def test_tls_over_a_resolved_dns_name_verifies_the_name_not_the_pod_ip(
    pki: Pki, tmp_path: Path
) -> None:
    """gRPC resolves a dns: target (round robin over its addresses) and checks the certificate
    against the name, so a certificate without the pod's IP is accepted."""
    name_only = tmp_path / "name-only"
    name_only.mkdir()
    cert, key = name_only / "cert.pem", name_only / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    with serve(credentials=credentials) as fake:
        port = fake.address.rsplit(":", 1)[1]
        tls = TlsConfig(root_certificates=cert.read_bytes())
        with StyleTransferClient(f"dns:///localhost:{port}", tls=tls) as client:
            assert isinstance(client.stylize(b"c", b"s"), Result)
        # The same certificate, reached by the pod's IP: no name to match, refused.
        with (
            StyleTransferClient(f"127.0.0.1:{port}", tls=tls, timeout=5) as client,
            pytest.raises(UnavailableError),
        ):
            client.stylize(b"c", b"s")


def test_tls_config_refuses_half_a_client_identity_and_non_pem_data(pki: Pki) -> None:
    with pytest.raises(ValueError, match="both"):
        TlsConfig(certificate_chain=pki.client.cert.read_bytes())
    with pytest.raises(ValueError, match="PEM"):
        TlsConfig(root_certificates=b"\x30\x82 DER bytes")


def test_cli_mutual_tls(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content, style = tmp_path / "c.png", tmp_path / "s.png"
    content.write_bytes(b"c")
    style.write_bytes(b"s")
    out = tmp_path / "out.png"
    base = ["stylize", str(content), str(style), "-o", str(out), "-q", "--max-attempts", "1"]
    ca = ["--ca-cert", str(pki.ca[0])]
    identity = ["--client-cert", str(pki.client.cert), "--client-key", str(pki.client.key)]
    with serve(credentials=pki.mutual_server_credentials()) as fake:
        assert main([*base, "--server", fake.address, *ca, *identity]) == 0
        assert out.exists()
        capsys.readouterr()
        assert main([*base, "--server", fake.address, *ca]) == 3
        assert "--client-cert" in capsys.readouterr().err
        assert main([*base, "--server", fake.address, *ca, identity[0], identity[1]]) == 2
        assert "go together" in capsys.readouterr().err
    assert len(fake.servicer.calls) == 1
