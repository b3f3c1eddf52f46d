"""The offline weights source's conversion: an ONNX VGG16's conv layers to Keras `.weights.h5`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from styletx.errors import WeightsError
from styletx.options import VGG16_LAYERS
from styletx.weights_file import EXPECTED_SHAPES, Array, build_conv_base, save_verified

log = logging.getLogger(__name__)

#: Initializer names of each conv layer's kernel and bias in the offline source's ONNX graph.
ONNX_KERNEL = "functional_1/{layer}_1/convolution/ReadVariableOp:0"
ONNX_BIAS = "functional_1/{layer}_1/Squeeze:0"


def convert_onnx(onnx_path: Path, dest: Path) -> Path:
    """Write the ONNX file's 13 VGG16 conv layers to `dest` as Keras `.weights.h5`, atomically."""
    arrays = _read_onnx_conv_weights(Path(onnx_path))
    model = build_conv_base()
    for name in VGG16_LAYERS:
        model.get_layer(name).set_weights(list(arrays[name]))
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create {dest.parent}: {exc}") from exc
    save_verified(model, dest)
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


__all__ = ["ONNX_BIAS", "ONNX_KERNEL", "convert_onnx"]
