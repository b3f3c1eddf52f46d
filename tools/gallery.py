"""Regenerate the README gallery: one content image in three styles with the `fast` and `high`
presets, and with each colour-preservation mode, using the real VGG16 weights.

Writes small JPEGs and a manifest (gallery.json: options, evaluations, seconds of each picture)
into docs/gallery/ and rewrites the README's gallery table between its
`<!-- gallery:start -->` and `<!-- gallery:end -->` markers, so the pictures and the table never
disagree. On two CPU cores it takes about half an hour (the `high` runs).

Usage: .venv/bin/python tools/gallery.py [--size 256] [--only fast] [--missing-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from styletx import images  # noqa: E402
from styletx.geometry import fit_longest  # noqa: E402
from styletx.options import StyleOptions  # noqa: E402
from styletx.result import Image  # noqa: E402

if TYPE_CHECKING:
    from styletx.engine import Stylizer

CONTENT = ROOT / "examples" / "content_chelsea.png"
#: (file, caption) of each style; all public domain (examples/PROVENANCE.md).
STYLES = (
    (ROOT / "examples" / "style_starry_night.jpg", "Van Gogh, *The Starry Night*"),
    (ROOT / "examples" / "style_the_scream.jpg", "Munch, *The Scream*"),
    (ROOT / "examples" / "style_shipwreck.jpg", "Turner, *The Shipwreck*"),
)
PRESETS = ("fast", "high")
#: Colour modes, shown with the first style and `COLOR_PRESET` (`fast` from the content image
#: barely moves a luminance-only picture away from the photo; `high` shows what the mode does).
COLOR_MODES = ("swap", "luminance")
COLOR_PRESET = "high"
MANIFEST = "gallery.json"
START, END = "<!-- gallery:start -->", "<!-- gallery:end -->"


@dataclass(frozen=True)
class Entry:
    """One gallery picture and how it was made (a row of docs/gallery/gallery.json)."""

    file: str
    caption: str
    seconds: float
    evaluations: int
    options: dict[str, Any]


@dataclass(frozen=True)
class Job:
    """One picture to make: a style, the table column it goes in, and its options."""

    style: Path
    column: str
    caption: str
    options: StyleOptions

    @property
    def file(self) -> str:
        return f"{_stem(CONTENT)}_{_stem(self.style)}_{self.column}.jpg"


def _stem(path: Path) -> str:
    return path.stem.removeprefix("style_").removeprefix("content_")


def _save(image: Image, out: Path, name: str, quality: int) -> str:
    (out / name).write_bytes(images.encode_image(image, "jpeg", quality=quality))
    return name


def jobs(size: int, seed: int, presets: tuple[str, ...]) -> list[Job]:
    """Every style with every preset, then the colour modes with the first style."""
    found = [
        Job(path, preset, preset, StyleOptions.from_preset(preset, size=size, seed=seed))
        for path, _ in STYLES
        for preset in presets
    ]
    if COLOR_PRESET in presets:
        for mode in COLOR_MODES:
            options = StyleOptions.from_preset(
                COLOR_PRESET, size=size, seed=seed, preserve_colors=mode
            )
            caption = f"{COLOR_PRESET}, `preserve_colors={mode}`"
            found.append(Job(STYLES[0][0], mode, caption, options))
    return found


def make(
    stylizer: Stylizer, out: Path, quality: int, todo: list[Job], missing_only: bool
) -> dict[str, Entry]:
    """Make every job's picture (or reuse it, with `missing_only`, when the manifest says it was
    made with the same options); returns the entries by file name and keeps the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    known: dict[str, Entry] = {}
    if manifest.exists():
        known = {row["file"]: Entry(**row) for row in json.loads(manifest.read_text())}
    content = images.decode_image(CONTENT)
    entries: dict[str, Entry] = {}
    for job in todo:
        previous = known.get(job.file)
        if (
            missing_only
            and previous is not None
            and previous.options == job.options.as_dict()
            and (out / job.file).exists()
        ):
            entries[job.file] = previous
            continue
        started = time.perf_counter()
        result = stylizer.stylize(content, [images.decode_image(job.style)], job.options)
        seconds = time.perf_counter() - started
        _save(result.image, out, job.file, quality)
        entries[job.file] = Entry(
            job.file, job.caption, round(seconds, 1), result.evaluations, job.options.as_dict()
        )
        known[job.file] = entries[job.file]
        # Written after every picture, so an interrupted run keeps what it made.
        manifest.write_text(json.dumps([asdict(e) for e in known.values()], indent=1) + "\n")
        print(f"{job.file}: {result.evaluations} evaluations, {seconds:.1f} s", flush=True)
    return entries


def save_inputs(out: Path, size: int, quality: int) -> list[str]:
    """The content and style images at the gallery's size (the table shows them too)."""
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for path in (CONTENT, *(style for style, _ in STYLES)):
        picture = images.decode_image(path)
        small = images.resize_to(picture, *fit_longest(*picture.shape[:2], size))
        names.append(_save(small, out, f"{_stem(path)}.jpg", quality))
    return names


def table(out: Path, inputs: list[str], todo: list[Job], entries: dict[str, Entry]) -> str:
    """The README's gallery table (image paths relative to the repository root)."""
    rel = out.relative_to(ROOT).as_posix()

    def img(name: str, alt: str) -> str:
        plain = alt.replace("*", "").replace("`", "")  # alt text is not Markdown
        return f'<img src="{rel}/{name}" width="200" alt="{plain}">'

    by_cell = {(job.style, job.column): entries.get(job.file) for job in todo}
    lines = [
        f"Content: {img(inputs[0], 'content: a cat')}",
        "",
        "| style | " + " | ".join(f"`{preset}`" for preset in PRESETS) + " |",
        "|---|" + "---|" * len(PRESETS),
    ]
    for (style_path, caption), style_file in zip(STYLES, inputs[1:], strict=True):
        cells = [f"{img(style_file, caption)}<br>{caption}"]
        for preset in PRESETS:
            entry = by_cell.get((style_path, preset))
            cells.append(
                "(not generated)"
                if entry is None
                else f"{img(entry.file, preset)}<br>{entry.evaluations} evaluations"
            )
        lines.append("| " + " | ".join(cells) + " |")
    modes = [e for m in COLOR_MODES if (e := by_cell.get((STYLES[0][0], m))) is not None]
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
    parser.add_argument(
        "--missing-only",
        action="store_true",
        help="keep pictures the manifest says were made with the same options",
    )
    args = parser.parse_args()

    from styletx.engine import Stylizer

    presets = (args.only,) if args.only else PRESETS
    stylizer = Stylizer(args.weights)
    out = args.out.resolve()
    inputs = save_inputs(out, args.size, args.quality)
    todo = jobs(args.size, args.seed, presets)
    entries = make(stylizer, out, args.quality, todo, args.missing_only)
    if not args.only:
        update_readme(args.readme, table(out, inputs, todo, entries))
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
