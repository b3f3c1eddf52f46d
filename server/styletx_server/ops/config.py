"""The server's configuration from flags and `STYLETX_*` environment variables (a flag wins).

The settings themselves are declared once, in ops/settings.py; the parser and the reading of the
environment here derive from those declarations.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields

from styletx_server.intake.inspection import Limits
from styletx_server.ops import settings_schema
from styletx_server.ops.env import ENV_PREFIX, env_name, read_env
from styletx_server.ops.settings import SETTINGS, ServerConfig


def _version_string() -> str:
    """The installed version and the API it serves (the engine ships in the same wheel)."""
    from styletx import __version__

    return f"{__version__} (API styletx.v1)"


def build_parser() -> argparse.ArgumentParser:
    """The `styletx-server` argument parser: one flag per setting, each naming its variable."""
    parser = argparse.ArgumentParser(
        prog="styletx-server",
        description="Neural style transfer gRPC server (styletx.v1.StyleTransferService). "
        f"Every flag --foo-bar can also be set with the environment variable {ENV_PREFIX}FOO_BAR; "
        "a flag on the command line wins.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version_string()}")
    settings_schema.add_arguments(parser, SETTINGS)
    return parser


def limits_of(config: ServerConfig) -> Limits:
    """The intake limits named like ServerConfig fields, taken from `config`."""
    return Limits(**{f.name: getattr(config, f.name) for f in fields(Limits)})


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> ServerConfig:
    """Parse `argv` (default sys.argv[1:]) over `env` (default os.environ); exits 2 on bad input."""
    parser = build_parser()
    try:
        # The environment's values become the flags' defaults, so a flag still wins.
        parser.set_defaults(**read_env(SETTINGS, os.environ if env is None else env))
    except ValueError as exc:
        parser.error(str(exc))
    args = parser.parse_args(argv)
    try:
        return ServerConfig(**{s.name: getattr(args, s.name) for s in SETTINGS})
    except ValueError as exc:
        parser.error(str(exc))


__all__ = [
    "ENV_PREFIX",
    "SETTINGS",
    "ServerConfig",
    "build_parser",
    "env_name",
    "limits_of",
    "load_config",
]
