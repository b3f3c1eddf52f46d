"""The `styletx` CLI's GPU-related parts: --precision, and `weights export --float16`."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from styletx import cli
from styletx.weights_file import load_conv_base
from tests.support.weights import tiny_image


def test_precision_flag_reaches_the_engine_and_its_reports(
    tmp_path: Path, seeded_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, style = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(tiny_image(32, 32, seed=1)).save(content)
    Image.fromarray(tiny_image(32, 32, seed=2)).save(style)
    stats = tmp_path / "stats.json"
    args = ["stylize", str(content), str(style), "-o", str(tmp_path / "o.png")]
    common = ["--weights", str(seeded_weights), "--size", "32", "--max-evaluations", "2"]
    flags = ["--precision", "mixed_bfloat16", "--no-progress", "--stats-json", str(stats)]
    assert cli.main([*args, *common, *flags]) == 0
    data = json.loads(stats.read_text())
    assert data["precision"] == "mixed_bfloat16" and np.isfinite(data["losses"]["total"])
    info = ["info", "--weights", str(seeded_weights), "--precision", "mixed_float16"]
    capsys.readouterr()
    assert cli.main(info) == 0
    assert "precision: mixed_float16" in capsys.readouterr().out.splitlines()
    with pytest.raises(SystemExit) as bad:
        cli.main([*info[:-1], "float8"])
    assert bad.value.code == 2


def test_weights_export_float16_is_half_the_size_and_loads_as_float32(
    tmp_path: Path, seeded_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "vgg16.f16.weights.h5"
    export = ["weights", "export", "--float16", "--weights", str(seeded_weights), str(out)]
    assert cli.main(export) == 0
    assert f"wrote {out} (float16" in capsys.readouterr().out
    assert out.stat().st_size < 0.55 * seeded_weights.stat().st_size
    with h5py.File(out) as f:
        dtypes = set()
        f.visititems(lambda _, o: dtypes.add(o.dtype) if isinstance(o, h5py.Dataset) else None)
    assert dtypes == {np.dtype(np.float16)}
    original, half = load_conv_base(seeded_weights), load_conv_base(out)
    layer = "block3_conv2"
    kernel = half.get_layer(layer).kernel
    assert str(kernel.dtype) == "float32"
    np.testing.assert_array_equal(
        np.asarray(kernel),
        np.asarray(original.get_layer(layer).kernel).astype(np.float16).astype(np.float32),
    )


def test_weights_export_refuses_a_name_keras_cannot_read(
    tmp_path: Path, seeded_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["weights", "export", "--weights", str(seeded_weights), str(tmp_path / "w.h5")]
    assert cli.main(args) == 2
    assert "must end in .weights.h5" in capsys.readouterr().err
    assert not (tmp_path / "w.h5").exists()


@pytest.mark.parametrize(("native", "fast"), [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_is_the_default_and_its_resolution_is_in_the_stats(
    tmp_path: Path,
    seeded_weights: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    native: bool,
    fast: str,
) -> None:
    from styletx.backends.tensorflow import TensorFlowBackend

    monkeypatch.setattr(
        TensorFlowBackend, "bfloat16_native", lambda self, device: (native, "test device")
    )
    content, style = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(tiny_image(32, 32, seed=1)).save(content)
    Image.fromarray(tiny_image(32, 32, seed=2)).save(style)
    common = ["--weights", str(seeded_weights), "--size", "32", "--max-evaluations", "8"]
    for preset, expected in (("fast", fast), ("reference", "float32")):
        stats = tmp_path / f"{preset}.json"
        args = ["stylize", str(content), str(style), "-o", str(tmp_path / f"{preset}.png")]
        flags = ["--preset", preset, "--no-progress", "--stats-json", str(stats)]
        assert cli.main([*args, *common, *flags]) == 0  # no --precision: auto
        data = json.loads(stats.read_text())
        assert (data["precision_setting"], data["precision"]) == ("auto", expected)
        assert 0 < data["evaluation_seconds_median"] < data["seconds"]
        assert capsys.readouterr().out.rstrip().endswith(expected)
    assert cli.main(["info", "--weights", str(seeded_weights)]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert lines["precision"] == fast
    assert lines["precision_by_preset"] == f"reference=float32, fast={fast}, high={fast}"
    assert "test device" in lines["precision_policy"]
