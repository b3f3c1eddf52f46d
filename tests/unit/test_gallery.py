"""tools/gallery.py: which pictures it makes, reuse of unchanged ones, the README table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from styletx.options import StyleOptions
from styletx.result import Losses, Result

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gallery() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gallery", ROOT / "tools" / "gallery.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gallery"] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


class FakeStylizer:
    """Stands in for the engine: records the options it was asked for, returns a flat image."""

    def __init__(self) -> None:
        self.calls: list[StyleOptions] = []

    def stylize(self, content: Any, styles: Any, options: StyleOptions) -> Result:
        self.calls.append(options)
        return Result(
            image=np.full((8, 12, 3), 200, dtype=np.uint8),
            losses=Losses(1.0, 0.5, 0.25, 0.25),
            iterations=3,
            evaluations=options.max_evaluations,
            setup_seconds=0.0,
            optimize_seconds=0.0,
        )


def test_jobs_cover_every_style_and_preset_then_each_colour_mode(gallery: ModuleType) -> None:
    jobs = gallery.jobs(64, 0, ("fast", "high"))
    styles = [path for path, _ in gallery.STYLES]
    assert [(j.style, j.column) for j in jobs[:6]] == [
        (s, p) for s in styles for p in ("fast", "high")
    ]
    modes = jobs[6:]
    assert [j.options.preserve_colors for j in modes] == ["swap", "luminance"]
    assert all(j.options.preset == gallery.COLOR_PRESET and j.style == styles[0] for j in modes)
    assert all(j.options.size == 64 and j.options.seed == 0 for j in jobs)
    assert len({j.file for j in jobs}) == len(jobs)
    # One preset only: no colour modes unless it is the colour preset.
    assert [j.column for j in gallery.jobs(64, 0, ("fast",))] == ["fast"] * 3


def test_missing_only_reuses_pictures_made_with_the_same_options(
    gallery: ModuleType, tmp_path: Path
) -> None:
    todo = gallery.jobs(64, 0, ("fast",))
    first = FakeStylizer()
    entries = gallery.make(first, tmp_path, 80, todo, False)
    assert len(first.calls) == 3 and all((tmp_path / j.file).exists() for j in todo)
    assert [row["file"] for row in json.loads((tmp_path / gallery.MANIFEST).read_text())] == [
        j.file for j in todo
    ]
    again = FakeStylizer()
    assert gallery.make(again, tmp_path, 80, todo, True) == entries
    assert again.calls == []
    # A changed option (or a deleted picture) is made again; without the flag, everything is.
    changed = [
        todo[0],
        *(gallery.Job(j.style, j.column, j.caption, j.options.replace(seed=1)) for j in todo[1:]),
    ]
    (tmp_path / todo[0].file).unlink()
    redo = FakeStylizer()
    gallery.make(redo, tmp_path, 80, changed, True)
    assert [o.seed for o in redo.calls] == [0, 1, 1]
    everything = FakeStylizer()
    gallery.make(everything, tmp_path, 80, changed, False)
    assert len(everything.calls) == 3


def test_table_links_every_picture_and_marks_missing_ones(gallery: ModuleType) -> None:
    out = ROOT / "docs" / "gallery"
    todo = gallery.jobs(64, 0, ("fast", "high"))
    entries = {
        j.file: gallery.Entry(j.file, j.caption, 1.0, 40, j.options.as_dict())
        for j in todo
        if j.column != "high"
    }
    text = gallery.table(out, ["c.jpg", "s1.jpg", "s2.jpg", "s3.jpg"], todo, entries)
    for job in todo:
        assert (f'src="docs/gallery/{job.file}"' in text) == (job.column != "high")
    assert text.count("(not generated)") == 3
    assert 'alt="Van Gogh, The Starry Night"' in text  # no Markdown inside alt text


def test_update_readme_replaces_only_the_text_between_the_markers(
    gallery: ModuleType, tmp_path: Path
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{gallery.START}\nold table\n{gallery.END}\noutro\n")
    gallery.update_readme(readme, "new table")
    assert readme.read_text() == f"intro\n{gallery.START}\nnew table\n{gallery.END}\noutro\n"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="markers"):
        gallery.update_readme(readme, "x")


def test_inputs_are_saved_at_the_gallery_size_keeping_their_aspect_ratio(
    gallery: ModuleType, tmp_path: Path
) -> None:
    from PIL import Image as PILImage

    names = gallery.save_inputs(tmp_path, 48, 80)
    assert len(names) == 1 + len(gallery.STYLES)
    for name in names:
        with PILImage.open(tmp_path / Path(name).name) as picture:
            assert max(picture.size) == 48
