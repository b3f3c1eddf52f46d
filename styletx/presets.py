"""Preset option sets: what `StyleOptions(preset=...)` applies beneath the caller's own options.

`reference` is the tutorial's method unchanged (the `StyleOptions` defaults: random init, one
scale, 200 evaluations). `fast` and `high` were chosen with `bench/quality_bench.py` at 260 px:
the Chelsea photo and Starry Night resized once to 260x260; every method's delivered image
(8-bit, clipped to 0..255) scored with the reference's loss; target = the tutorial's own final
loss after its 10 x 20 restarted L-BFGS runs. Evaluation counts are robust; seconds are
machine-dependent (bench/RESULTS.md).

Both keep the optimised pixels inside 0..255 (`pixel_bounds`, L-BFGS-B's box constraints):

- `fast` = start from the content image in the style's colours (`init="content_matched"`: each
  RGB channel's mean and spread moved to the styles'), 40 evaluations: the tutorial's final
  loss after 14 evaluations (the tutorial takes 211; from the plain content image 29), 0.037x
  the tutorial's run time on an Intel AVX-512 CPU (0.062x from the plain content image, same
  run); ends at 0.72x its loss with the cat's face and eyes intact. The colour-matched start
  already fits what the shallow style layers' Grams mostly measure, the palette, so the
  evaluations go to the strokes. Coarse-to-fine scales added nothing from the content image
  (2 scales: 28.5 full-size-equivalent evaluations, 3: 28.4, plus each scale's targets), and
  random init needs 59 evaluations (one scale) or 42 (three scales) and blurs the face.
- `high` = the same start, 500 evaluations: 0.63x the tutorial's final loss (from the plain
  content image 100 evaluations gave 0.68x; the rest sharpen the strokes) in about the
  tutorial's run time (500 engine evaluations cost what ~175-200 of the tutorial's do); the
  target after 15 evaluations. From the plain content image it ends at the same loss (0.632x
  against 0.630x, same run) and reaches the target after 29.

Both also run in bfloat16 under `--precision auto` where the device has it (their final loss
stays within 1 % of float32's: `bench/precision_bench.py`), and, being bounded, start L-BFGS-B
with a first trial step of 8 pixel levels RMS (`scales.FIRST_STEP`) instead of its own `x - g`,
which throws every pixel onto a bound: 12-13 evaluations instead of 14 to the same loss on
three content/style pairs, the loss 6-14 % lower at the 14th evaluation and 1-2 % at the 40th
(bench/RESULTS.md). Tried for `fast` and not taken (evaluations to the tutorial's
final loss, Chelsea / Starry Night, colour-matched start): L-BFGS memory 5 / 20: 15 / 14 (10:
14); two scales (a 130 px level first): 33 with the budget split evenly, 20 with 4 coarse
evaluations, 22 with 8 (the new scale restarts L-BFGS and starts from a blurred picture).

Without the bounds the optimiser pushes pixels far outside 0..255 (content init most: a photo
has many near 0 or 255) and the clipped picture loses its style: `fast` from the plain content
image ends at 2.9x the target loss, and nothing measured both reaches it under 0.08x and keeps
the face (random init, 3 scales, 150 evaluations: 53 equivalents, face blurred).

Every value stays overridable by an explicit option (the server applies them the same way).
`StyleOptions(preset=...)` and `StyleOptions.replace(preset=...)` apply a preset; only
`dataclasses.replace` relabels without applying.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Final, Literal, get_args

from styletx.errors import InvalidOptions

Preset = Literal["reference", "fast", "high"]
PRESETS: tuple[str, ...] = get_args(Preset)

#: Option values of each preset beyond the `StyleOptions` defaults.
PRESET_VALUES: Final[MappingProxyType[str, MappingProxyType[str, Any]]] = MappingProxyType(
    {
        "reference": MappingProxyType({}),
        "fast": MappingProxyType(
            {"init": "content_matched", "max_evaluations": 40, "pixel_bounds": True}
        ),
        "high": MappingProxyType(
            {"init": "content_matched", "max_evaluations": 500, "pixel_bounds": True}
        ),
    }
)


#: Every option some preset decides: switching presets (`StyleOptions.replace(preset=...)`) sets
#: each of them, to the new preset's value or, where it sets none, to the `StyleOptions` default.
PRESET_FIELDS: Final[frozenset[str]] = frozenset(
    name for values in PRESET_VALUES.values() for name in values
)


def preset_values(preset: str) -> dict[str, Any]:
    """The option values `preset` sets (InvalidOptions for an unknown name)."""
    if preset not in PRESETS:
        raise InvalidOptions("preset", f"must be one of {', '.join(PRESETS)}, got {preset!r}")
    return dict(PRESET_VALUES[preset])


__all__ = ["PRESETS", "PRESET_FIELDS", "PRESET_VALUES", "Preset", "preset_values"]
