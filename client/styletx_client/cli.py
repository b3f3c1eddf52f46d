"""`styletx-client`: stylize images, look at, watch and cancel jobs by their request key, and
check health from a shell, with a progress bar. Ctrl-C during `stylize` cancels the job.

Exit codes: 0 ok, 1 other failure, 2 usage or invalid argument, 3 server unavailable or busy,
4 deadline exceeded, 5 authentication, 6 the server ran out of memory for the job (retrying will
not help: ask for less work), 7 no job with that request key, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from ._cli.common import (
    DEFAULT_SERVER,
    EXIT_AUTH,
    EXIT_DEADLINE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    UsageError,
    WriteError,
    connection_parser,
    err,
)
from ._cli.failures import describe
from ._cli.health import add_health
from ._cli.jobs import add_job, describe_job
from ._cli.stylize import CANCEL_TIMEOUT, add_stylize, cancel_after_interrupt
from .errors import ServiceError

__all__ = [
    "CANCEL_TIMEOUT",
    "DEFAULT_SERVER",
    "EXIT_AUTH",
    "EXIT_DEADLINE",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_OUT_OF_MEMORY",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "cancel_after_interrupt",
    "describe",
    "describe_job",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `styletx-client` (also used to render --help)."""
    parser = argparse.ArgumentParser(
        prog="styletx-client",
        description="Client of the styletx neural style transfer service.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection = connection_parser()
    add_stylize(commands, connection)
    add_health(commands, connection)
    add_job(commands, connection)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="styletx-client: %(message)s",
    )
    try:
        return int(args.handler(args))
    except UsageError as error:
        err(f"error: {error}")
        return EXIT_USAGE
    except ServiceError as error:
        code, message = describe(error, args.server)
        err(f"error: {message}")
        return code
    except WriteError as error:
        err(f"error: {error}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        err("interrupted; the call was cancelled")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
