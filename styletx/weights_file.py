"""A VGG16 conv-base weights file: read and check it with h5py, load and verify it in Keras.

Either Keras layout (Keras 3 `.weights.h5`, legacy `.h5`) is read by layer name; h5py alone
suffices for the checks and the tensor digest, so they run without TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from styletx.errors import WeightsError
from styletx.options import VGG16_LAYERS

EXPECTED_PARAMETERS = 14_714_688
REFETCH_HINT = "re-run `styletx weights fetch --force` (or pass --weights PATH to a good file)"

Array = npt.NDArray[Any]
Layout = Literal["keras3", "legacy"]

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


def build_conv_base() -> Any:
    import keras

    return keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))


def save_verified(model: Any, dest: Path) -> None:
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
    layout, arrays = read_h5_layers(path)
    check_layer_arrays(path, arrays)
    model = build_conv_base()
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


def read_h5_layers(path: Path) -> tuple[Layout, dict[str, list[Array]]]:
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


def check_layer_arrays(path: Path, arrays: dict[str, list[Array]]) -> None:
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


def copy_h5(src: Any, out: Any, dtype: np.dtype[Any]) -> None:
    """Groups, attributes and datasets of `src` into `out`, floating arrays cast to `dtype`."""
    import h5py

    for key, value in src.attrs.items():
        out.attrs[key] = value
    for name, item in src.items():
        if isinstance(item, h5py.Group):
            copy_h5(item, out.create_group(name), dtype)
            continue
        data = item[()]
        if isinstance(data, np.ndarray) and np.issubdtype(data.dtype, np.floating):
            data = data.astype(dtype)
        copied = out.create_dataset(name, data=data)
        for key, value in item.attrs.items():
            copied.attrs[key] = value


def tensors_sha256(path: Path) -> str:
    """Hex SHA-256 of the conv layers' tensors, in VGG16 order, kernel (HWIO) then bias, as
    little-endian float32: independent of the HDF5 layout, so any two files holding the same
    weights agree. Reads with h5py only (no Keras, no TensorFlow)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; {REFETCH_HINT}")
    _, arrays = read_h5_layers(path)
    check_layer_arrays(path, arrays)
    digest = hashlib.sha256()
    for name in VGG16_LAYERS:
        for array in arrays[name]:
            digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (weight files are ~60 MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = [
    "EXPECTED_PARAMETERS",
    "EXPECTED_SHAPES",
    "REFETCH_HINT",
    "build_conv_base",
    "check_layer_arrays",
    "copy_h5",
    "load_conv_base",
    "read_h5_layers",
    "save_verified",
    "sha256_file",
    "tensors_sha256",
    "verify_weights_file",
]
