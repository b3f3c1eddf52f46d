"""`STYLETX_*` environment variables: their names, booleans, and reading them for the settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

ENV_PREFIX = "STYLETX_"
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})


def env_name(flag: str) -> str:
    """`--queue-size` -> `STYLETX_QUEUE_SIZE`."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def bool_env(value: str) -> bool:
    """A boolean variable's value (1/0, true/false, yes/no, on/off); ValueError otherwise."""
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {value!r}")


class Variable(Protocol):
    """What reading the environment needs of a setting (settings_schema.Setting)."""

    @property
    def name(self) -> str: ...
    @property
    def env(self) -> str: ...
    def read(self, text: str) -> Any: ...


def read_env(settings: Iterable[Variable], env: Mapping[str, str]) -> dict[str, Any]:
    """The values `env` gives settings (by setting name), each read as its flag's text would be;
    ValueError naming the variable when one is not a value of its type."""
    values: dict[str, Any] = {}
    for setting in settings:
        text = env.get(setting.env)
        if text is None:
            continue
        try:
            values[setting.name] = setting.read(text)
        except ValueError as exc:
            raise ValueError(f"{setting.env}: {exc}") from None
    return values


__all__ = ["ENV_PREFIX", "FALSE", "TRUE", "Variable", "bool_env", "env_name", "read_env"]
