"""The cases of `bench/precision_bench.py`: content/style pairs, option variants, what
`auto` picks, and loading pictures and engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from styletx.options import StyleOptions
from styletx.precision import PrecisionPolicy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: name -> (content, style): three pairs, each photo with another painting.
PAIRS: dict[str, tuple[Path, Path]] = {
    "chelsea_starry_night": (
        EXAMPLES / "content_chelsea.png",
        EXAMPLES / "style_starry_night.jpg",
    ),
    "coffee_the_scream": (EXAMPLES / "content_coffee.png", EXAMPLES / "style_the_scream.jpg"),
    "rocket_shipwreck": (EXAMPLES / "content_rocket.jpg", EXAMPLES / "style_shipwreck.jpg"),
}
#: name -> option overrides of each case beyond its preset.
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "swap": {"preserve_colors": "swap"},
    "luminance": {"preserve_colors": "luminance"},
    "style_scale_1.5": {"style_scale": 1.5},
}
BFLOAT16 = "mixed_bfloat16"
FLOAT32 = "float32"


def load(path: Path) -> np.ndarray:
    from styletx import images

    return images.decode_image(path)


def stylizer_for(weights: str | None, precision: str) -> Any:
    from styletx.engine import Stylizer

    return Stylizer(weights, precision=precision)


def case_options(preset: str, variant: str, size: int, evaluations: int | None) -> StyleOptions:
    """The options of one guard case (seed 0; `evaluations` caps the preset's budget)."""
    options = StyleOptions.from_preset(preset, seed=0, size=size, **VARIANTS[variant])
    if evaluations is not None:
        options = options.replace(max_evaluations=min(evaluations, options.max_evaluations))
    return options


def auto_choice(options: StyleOptions) -> str:
    """What `auto` runs this case at on a device with native bfloat16."""
    return PrecisionPolicy("auto", True, "bench").for_job(options)
