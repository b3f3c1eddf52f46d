"""Preset option sets: what `StyleOptions.from_preset` applies before the caller's own options.

`reference` is the tutorial's method unchanged (the `StyleOptions` defaults). The others were
chosen from measurements (`bench/quality_bench.py`, figures in `bench/RESULTS.md`); every value
stays overridable by an explicit option.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Final

from styletx.errors import InvalidOptions
from styletx.options import PRESETS

#: Option values of each preset beyond the `StyleOptions` defaults.
PRESET_VALUES: Final[MappingProxyType[str, MappingProxyType[str, Any]]] = MappingProxyType(
    {
        "reference": MappingProxyType({}),
        # Provisional until measured: start from the content, coarse-to-fine, a small budget.
        "fast": MappingProxyType({"init": "content", "scales": 2, "max_evaluations": 60}),
        "high": MappingProxyType({"init": "content", "scales": 2, "max_evaluations": 400}),
    }
)


def preset_values(preset: str) -> dict[str, Any]:
    """The option values `preset` sets (InvalidOptions for an unknown name)."""
    if preset not in PRESETS:
        raise InvalidOptions("preset", f"must be one of {', '.join(PRESETS)}, got {preset!r}")
    return dict(PRESET_VALUES[preset])


__all__ = ["PRESET_VALUES", "preset_values"]
