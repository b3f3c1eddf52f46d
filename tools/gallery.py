"""Regenerate the README gallery: one content image in three styles with the `fast` and `high`
presets, and with each colour-preservation mode, using the real VGG16 weights.

Writes small JPEGs into docs/gallery/ and rewrites the README's gallery table between its
`<!-- gallery:start -->` and `<!-- gallery:end -->` markers, so the pictures, the table and the
timings shown never disagree. On two CPU cores it takes about half an hour (the `high` runs).

Usage: .venv/bin/python tools/gallery.py [--size 256] [--only fast] [--weights PATH]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from styletx import images  # noqa: E402
from styletx.options import StyleOptions  # noqa: E402
from styletx.result import Image  # noqa: E402

if TYPE_CHECKING:
    from styletx.engine import Stylizer

log = logging.getLogger("gallery")

CONTENT = ROOT / "examples" / "content_chelsea.png"
#: (file, caption) of each style; all public domain (examples/PROVENANCE.md).
STYLES = (
    (ROOT / "examples" / "style_starry_night.jpg", "Van Gogh, *The Starry Night*"),
    (ROOT / "examples" / "style_the_scream.jpg", "Munch, *The Scream*"),
    (ROOT / "examples" / "style_shipwreck.jpg", "Turner, *The Shipwreck*"),
)
PRESETS = ("fast", "high")
#: Colour modes shown with the first style and the `fast` preset.
COLOR_MODES = ("swap", "luminance")
START, END = "<!-- gallery:start -->", "<!-- gallery:end -->"


@dataclass(frozen=True)
class Entry:
    """One gallery picture and how it was made."""

    file: str
    caption: str
    seconds: float
    evaluations: int


def _stem(path: Path) -> str:
    return path.stem.removeprefix("style_").removeprefix("content_")


def _save(image: Image, out: Path, name: str, quality: int) -> str:
    (out / name).write_bytes(images.encode_image(image, "jpeg", quality=quality))
    return name


def make(
    stylizer: Stylizer, out: Path, size: int, seed: int, quality: int, presets: tuple[str, ...]
) -> tuple[list[str], dict[tuple[str, str], Entry]]:
    """Stylize every (style, preset) and colour mode; returns the inputs' files and the entries."""
    out.mkdir(parents=True, exist_ok=True)
    content = images.decode_image(CONTENT)
    inputs = [_save(images.resize_longest(content, size), out, f"{_stem(CONTENT)}.jpg", quality)]
    entries: dict[tuple[str, str], Entry] = {}
    jobs: list[tuple[Path, str, str, StyleOptions]] = []
    for style_path, _ in STYLES:
        style = images.decode_image(style_path)
        inputs.append(
            _save(images.resize_longest(style, size), out, f"{_stem(style_path)}.jpg", quality)
        )
        for preset in presets:
            options = StyleOptions.from_preset(preset, size=size, seed=seed)
            jobs.append((style_path, preset, preset, options))
    if "fast" in presets:
        for mode in COLOR_MODES:
            options = StyleOptions.from_preset("fast", size=size, seed=seed, preserve_colors=mode)
            jobs.append((STYLES[0][0], mode, f"fast, `preserve_colors={mode}`", options))
    for style_path, column, caption, options in jobs:
        style = images.decode_image(style_path)
        started = time.perf_counter()
        result = stylizer.stylize(content, [style], options)
        seconds = time.perf_counter() - started
        name = f"{_stem(CONTENT)}_{_stem(style_path)}_{column}.jpg"
        _save(result.image, out, name, quality)
        entries[(style_path.name, column)] = Entry(name, caption, seconds, result.evaluations)
        print(f"{name}: {result.evaluations} evaluations, {seconds:.1f} s", flush=True)
    return inputs, entries


def table(out: Path, inputs: list[str], entries: dict[tuple[str, str], Entry]) -> str:
    """The README's gallery table (image paths relative to the repository root)."""
    rel = out.relative_to(ROOT).as_posix()

    def img(name: str, alt: str) -> str:
        return f'<img src="{rel}/{name}" width="200" alt="{alt}">'

    lines = [
        f"Content: {img(inputs[0], 'content: a cat')}",
        "",
        "| style | `fast` | `high` |",
        "|---|---|---|",
    ]
    for (style_path, caption), style_file in zip(STYLES, inputs[1:], strict=True):
        cells = [f"{img(style_file, caption)}<br>{caption}"]
        for preset in PRESETS:
            entry = entries.get((style_path.name, preset))
            cells.append(
                "(not generated)"
                if entry is None
                else f"{img(entry.file, preset)}<br>{entry.evaluations} evaluations"
            )
        lines.append("| " + " | ".join(cells) + " |")
    first = STYLES[0][0].name
    modes = [entries[(first, m)] for m in COLOR_MODES if (first, m) in entries]
    if modes:
        lines += ["", "| " + " | ".join(e.caption for e in modes) + " |"]
        lines.append("|" + "---|" * len(modes))
        lines.append("| " + " | ".join(img(e.file, e.caption) for e in modes) + " |")
    return "\n".join(lines)


def update_readme(readme: Path, body: str) -> None:
    """Replace the text between the gallery markers (which must both be there)."""
    text = readme.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: add the markers {START} and {END} around the gallery")
    readme.write_text(text[: start + len(START)] + "\n" + body + "\n" + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", help="VGG16 weights (default: resolved like the engine)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--size", type=int, default=256, help="longest side of every picture")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality")
    parser.add_argument("--only", choices=PRESETS, help="one preset only (quicker; no README)")
    args = parser.parse_args()

    from styletx.engine import Stylizer

    presets = (args.only,) if args.only else PRESETS
    stylizer = Stylizer(args.weights)
    out = args.out.resolve()
    inputs, entries = make(stylizer, out, args.size, args.seed, args.quality, presets)
    if not args.only:
        update_readme(args.readme, table(out, inputs, entries))
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
