"""Content, styles and result in one strip (`--side-by-side`); needs the optional Pillow."""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from pathlib import Path

PILLOW_HINT = "install Pillow: pip install 'styletx-client[pil]'"


def pillow_available() -> bool:
    """Whether Pillow can be imported, checked without importing it."""
    return importlib.util.find_spec("PIL") is not None


def compose(images: Sequence[bytes], path: Path) -> Path:
    """Scale every encoded image to the height of the last one (the result), paste them left to
    right and save to `path` (format from its extension)."""
    from PIL import Image  # optional dependency: imported only when asked for

    decoded = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
    height = decoded[-1].height
    scaled = [
        img.resize((max(1, round(img.width * height / img.height)), height)) for img in decoded
    ]
    strip = Image.new("RGB", (sum(img.width for img in scaled), height), "white")
    x = 0
    for img in scaled:
        strip.paste(img, (x, 0))
        x += img.width
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path
