"""`styletx-client health`: the server's grpc.health.v1 status, as an exit code."""

from __future__ import annotations

import argparse
import sys

from styletx_client.health import ServingStatus

from .common import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, err, open_client


def add_health(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
) -> None:
    health_command = commands.add_parser(
        "health", parents=[connection], help="check the server's gRPC health"
    )
    health_command.add_argument(
        "--service",
        default="",
        help='service name to check ("" = the whole server, or styletx.v1.StyleTransferService)',
    )
    health_command.set_defaults(handler=health)


def health(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        status = client.health(args.service, timeout=args.timeout or 10.0)
    sys.stdout.write(f"{status}\n")
    if status is ServingStatus.SERVING:
        return EXIT_OK
    if status is ServingStatus.SERVICE_UNKNOWN:
        err(f"the server does not know the service {args.service!r}")
        return EXIT_USAGE
    err(f"{args.server} is not serving yet (loading weights or draining); try again shortly")
    return EXIT_UNAVAILABLE
