"""The `styletx` command line: a real local stylization with the seeded weights."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styletx import cli
from tests.support.precision import auto_on_this_cpu
from tests.support.weights import tiny_image


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    content, style = tmp_path / "content.png", tmp_path / "style.jpg"
    Image.fromarray(tiny_image(48, 64, seed=1)).save(content)
    Image.fromarray(tiny_image(40, 40, seed=2)).save(style)
    return content, style


def test_stylize_writes_result_stats_and_side_by_side(
    tmp_path: Path, inputs: tuple[Path, Path], seeded_weights: Path
) -> None:
    out, stats, panel = tmp_path / "out.png", tmp_path / "stats.json", tmp_path / "sbs.png"
    code = cli.main(
        [
            "stylize",
            str(inputs[0]),
            str(inputs[1]),
            "-o",
            str(out),
            "--weights",
            str(seeded_weights),
            "--size",
            "32",
            "--max-evaluations",
            "6",
            "--content-weight",
            "0.5",
            "--style-weight",
            "2",
            "--tv-weight",
            "1",
            "--init",
            "content",
            "--seed",
            "3",
            "--stats-json",
            str(stats),
            "--side-by-side",
            str(panel),
            "--no-progress",
        ]
    )
    assert code == 0
    assert Image.open(out).size == (32, 24)
    data = json.loads(stats.read_text())
    assert data["evaluations"] == 6
    assert data["seconds_per_evaluation"] == pytest.approx(data["optimize_seconds"] / 6)
    assert set(data["losses"]) == {"total", "content", "style", "tv"}
    assert data["options"]["content_weight"] == 0.5
    assert data["options"]["init"] == "content"
    width, height = Image.open(panel).size
    assert width > 3 * 32 and height == 24  # panels at the result's height


def test_every_option_has_a_flag() -> None:
    import dataclasses

    from styletx.options import StyleOptions

    parser = cli.build_parser()
    text = parser._subparsers._group_actions[0].choices["stylize"].format_help()  # type: ignore[union-attr]
    for field in dataclasses.fields(StyleOptions):
        assert "--" + field.name.replace("_", "-") in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--size", "5"], "size"),
        (["--content-layer", "nope"], "content_layer"),
        (["--style-weight", "nan"], "style_weight"),
    ],
)
def test_bad_options_exit_2_with_the_field(
    inputs: tuple[Path, Path],
    tmp_path: Path,
    seeded_weights: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = ["stylize", str(inputs[0]), str(inputs[1]), "-o", str(tmp_path / "o.png")]
    code = cli.main([*args, "--weights", str(seeded_weights), *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_image_and_missing_weights_are_clear(
    tmp_path: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    assert cli.main(["stylize", str(garbage), str(inputs[1]), "-o", str(tmp_path / "o.png")]) == 2
    assert "content" in capsys.readouterr().err
    missing = tmp_path / "missing.weights.h5"
    code = cli.main(
        ["stylize", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--weights", str(missing)]
    )
    assert code == 3
    assert str(missing) in capsys.readouterr().err


def test_same_seed_same_bytes_through_the_cli(
    tmp_path: Path, inputs: tuple[Path, Path], seeded_weights: Path
) -> None:
    outs = []
    for name in ("a.png", "b.png"):
        out = tmp_path / name
        common = ["--weights", str(seeded_weights), "--size", "32", "--max-evaluations", "4"]
        args = ["stylize", *map(str, inputs), "-o", str(out), *common, "--seed", "9"]
        assert cli.main([*args, "--no-progress"]) == 0
        outs.append(np.asarray(Image.open(out)))
    assert outs[0].tobytes() == outs[1].tobytes()


def test_info_reports_backend_device_and_weights(
    seeded_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["info", "--weights", str(seeded_weights), "--backend", "tensorflow"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert lines["backend"] == "tensorflow"
    assert lines["device"] == "CPU:0" and lines["accelerators"] == "none"
    assert lines["precision"] == auto_on_this_cpu()  # the default, auto, resolved here
    assert lines["precision_policy"].startswith(f"auto: {auto_on_this_cpu()}")
    # The reference preset stays float32 whatever the CPU; fast and high follow auto.
    assert lines["precision_by_preset"] == (
        f"reference=float32, fast={auto_on_this_cpu()}, high={auto_on_this_cpu()}"
    )
    assert lines["shape_step"] == "16"
    assert "tensorflow" in lines["backends_available"]
    assert lines["weights_path"] == str(seeded_weights)
    assert lines["weights_source"] == "explicit"
    assert lines["weights_parameters"] == "14714688"


def test_stats_name_the_backend_and_a_conflicting_backend_is_a_usage_error(
    tmp_path: Path,
    inputs: tuple[Path, Path],
    seeded_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["stylize", *map(str, inputs), "-o", str(tmp_path / "o.png")]
    common = ["--weights", str(seeded_weights), "--size", "32", "--max-evaluations", "2"]
    stats = tmp_path / "stats.json"
    padding = ["--shape-step", "1"]
    assert cli.main([*args, *common, *padding, "--no-progress", "--stats-json", str(stats)]) == 0
    data = json.loads(stats.read_text())
    assert (data["backend"], data["device"], data["precision"], data["shape_step"]) == (
        "tensorflow",
        "CPU:0",
        "float32",
        1,
    )
    capsys.readouterr()
    # Keras already runs TensorFlow in this process: JAX cannot be switched to, and says why.
    assert cli.main([*args, *common, "--backend", "jax"]) == 2
    assert "already running the tensorflow backend" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="jax is not installed (pip install 'styletx-server[jax]')",
)
def test_backend_flag_selects_jax_in_a_fresh_process(seeded_weights: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "styletx",
            "info",
            "--backend",
            "jax",
            "--weights",
            str(seeded_weights),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "backend: jax" in out.stdout.splitlines()


def test_weights_verify_accepts_only_the_pinned_tensors(
    seeded_weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from styletx import weights
    from styletx.weights_file import tensors_sha256

    assert cli.main(["weights", "verify", "--weights", str(seeded_weights)]) == cli.EXIT_WEIGHTS
    assert "are not the ImageNet VGG16 weights" in capsys.readouterr().err
    monkeypatch.setattr(weights, "IMAGENET_TENSORS_SHA256", tensors_sha256(seeded_weights))
    assert cli.main(["weights", "verify", "--weights", str(seeded_weights)]) == cli.EXIT_OK
    assert f"verified: {seeded_weights}" in capsys.readouterr().out


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    import styletx

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"styletx {styletx.__version__}"
