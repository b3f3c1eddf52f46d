"""What every `styletx-client` command shares: exit codes, the connection flags and the client
they make, reading inputs and writing results, the errors that end a command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from styletx_client._channel import ChannelOption, TlsConfig
from styletx_client._retry import RetryPolicy
from styletx_client.client import StyleTransferClient

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_DEADLINE = 4
EXIT_AUTH = 5
EXIT_OUT_OF_MEMORY = 6
EXIT_NOT_FOUND = 7
EXIT_INTERRUPTED = 130

DEFAULT_SERVER = "localhost:50051"


class UsageError(Exception):
    """A problem with the command line or local files the user can fix; exit code 2."""


class WriteError(Exception):
    """The result arrived but could not be written; exit code 1."""


def err(message: str) -> None:
    sys.stderr.write(f"styletx-client: {message}\n")


def comma_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def float_list(value: str) -> list[float]:
    try:
        return [float(item) for item in comma_list(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {value!r}"
        ) from None


def positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return number


def connection_parser() -> argparse.ArgumentParser:
    """The connection flags, a parent parser of every command that calls the server."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--server",
        default=os.environ.get("STYLETX_SERVER", DEFAULT_SERVER),
        help="host:port, dns:///name:port or ip:port,ip:port (round robin); "
        "env STYLETX_SERVER (default %(default)s)",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("STYLETX_TOKEN"),
        help="bearer token for a server started with --auth-token; env STYLETX_TOKEN",
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS (system CAs)")
    group.add_argument(
        "--ca-cert", type=Path, metavar="PEM", help="CA certificate to trust (implies --tls)"
    )
    group.add_argument(
        "--tls-server-name", metavar="NAME", help="name to verify in the server's certificate"
    )
    group.add_argument(
        "--client-cert",
        type=Path,
        metavar="PEM",
        help="this client's certificate chain, for a server that requires mutual TLS "
        "(with --client-key; implies --tls)",
    )
    group.add_argument(
        "--client-key", type=Path, metavar="PEM", help="private key of --client-cert"
    )
    group.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="total deadline of the call, retries included (default: none)",
    )
    group.add_argument(
        "--max-attempts",
        type=int,
        metavar="N",
        default=RetryPolicy().max_attempts,
        help="attempts in a row when the server is unavailable or busy, or a broken stream "
        "re-attaches (default %(default)s)",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log retries and more")
    return parent


def open_client(args: argparse.Namespace) -> StyleTransferClient:
    """The client the connection flags describe."""
    tls = tls_config(args)
    options: list[ChannelOption] = []
    if args.tls_server_name:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    if args.max_attempts < 1:
        raise UsageError("--max-attempts must be >= 1")
    try:
        return StyleTransferClient(
            args.server,
            tls=tls,
            token=args.token,
            timeout=args.timeout,
            retry=RetryPolicy(max_attempts=args.max_attempts),
            options=options,
        )
    except ValueError as error:
        raise UsageError(f"--server {args.server!r}: {error}") from None


def tls_config(args: argparse.Namespace) -> bool | TlsConfig:
    """TLS settings from --tls, --ca-cert, --client-cert and --client-key."""
    if (args.client_cert is None) != (args.client_key is None):
        raise UsageError("--client-cert and --client-key go together (mutual TLS)")
    if args.ca_cert is None and args.client_cert is None:
        return bool(args.tls)
    try:
        return TlsConfig(
            root_certificates=read(args.ca_cert, "CA certificate") if args.ca_cert else None,
            certificate_chain=read(args.client_cert, "client certificate")
            if args.client_cert
            else None,
            private_key=read(args.client_key, "client key") if args.client_key else None,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def read(path: Path, role: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {role} {str(path)!r}: {error.strerror or error}") from None


def write(save: Callable[[Path], Path], path: Path) -> Path:
    try:
        return save(path)
    except OSError as error:
        raise WriteError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
