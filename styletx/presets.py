"""Preset option sets: what `StyleOptions.from_preset` applies before the caller's own options.

`reference` is the tutorial's method unchanged (the `StyleOptions` defaults: random init, one
scale, 200 evaluations). `fast` and `high` were chosen with `bench/quality_bench.py`: the
Chelsea photo and Starry Night resized once to 260x260, every method's delivered image (8-bit,
clipped to 0..255) scored with the reference's loss, target = the tutorial's own final loss
after its 10 x 20 restarted L-BFGS runs. Figures are provisional (a shared 2-core CPU; see
bench/RESULTS.md) and count evaluations, which do not depend on the machine's load.

- `fast` = start from the content image, 40 evaluations. With the optimised pixels kept inside
  0..255 (L-BFGS-B bounds), it reaches the tutorial's final loss after 30 evaluations (0.05x the
  tutorial's time: an engine evaluation costs ~0.35 of the tutorial's) and ends at 0.84x its
  loss, the cat's face intact. Measured alternatives: coarse-to-fine scales add nothing from the
  content image (2 scales: 28.5 full-size-equivalent evaluations, 3: 28.4, each scale's targets
  and trace costing extra); random init needs 63 (one scale) or 42 (three scales) and loses more
  of the content. Without those bounds the optimiser leaves pixels far outside 0..255 and the
  clipped image scores 1.3x the target even after 100 evaluations from the content image; the
  best unbounded set (random init, 3 scales, 150 evaluations: 53 equivalents, 0.08x) blurs the
  face away, so it is not worth a preset.
- `high` = start from the content image, 500 evaluations: 0.63x the tutorial's final loss
  (100 evaluations give 0.68x; the last 400 sharpen the strokes), about 2.4x the tutorial's
  time on the engine's faster evaluations.

Every value stays overridable by an explicit option (the server applies them the same way).
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
        "fast": MappingProxyType({"init": "content", "max_evaluations": 40}),
        "high": MappingProxyType({"init": "content", "max_evaluations": 500}),
    }
)


def preset_values(preset: str) -> dict[str, Any]:
    """The option values `preset` sets (InvalidOptions for an unknown name)."""
    if preset not in PRESETS:
        raise InvalidOptions("preset", f"must be one of {', '.join(PRESETS)}, got {preset!r}")
    return dict(PRESET_VALUES[preset])


__all__ = ["PRESET_VALUES", "preset_values"]
