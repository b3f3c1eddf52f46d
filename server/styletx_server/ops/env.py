"""`STYLETX_*` environment variables as defaults of the server's flags (a flag still wins)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

ENV_PREFIX = "STYLETX_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_name(flag: str) -> str:
    """`--queue-size` -> `STYLETX_QUEUE_SIZE`."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def bool_env(value: str) -> bool:
    """A boolean variable's value (1/0, true/false, yes/no, on/off); ArgumentTypeError."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0, true/false), got {value!r}")


def apply_env(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Turn `STYLETX_*` variables into parser defaults, so flags still override them."""
    for action in parser._actions:  # argparse offers no public view of its actions
        longs = [s for s in action.option_strings if s.startswith("--") and s != "--help"]
        if not longs or (value := env.get(env_name(longs[0]))) is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            try:
                action.default = bool_env(value)
            except argparse.ArgumentTypeError as exc:
                parser.error(f"{env_name(longs[0])}: {exc}")
        else:
            # argparse converts string defaults with the action's `type`, like a flag value.
            action.default = value


__all__ = ["ENV_PREFIX", "apply_env", "bool_env", "env_name"]
