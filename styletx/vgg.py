"""VGG16 conv base: Caffe-style pre/post-processing and the Keras model with loaded weights."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from styletx.result import Image

log = logging.getLogger(__name__)

#: ImageNet channel means in BGR order, as Caffe (and Keras' VGG16 "caffe" mode) subtract them.
BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)

FloatImage = npt.NDArray[np.float32]


def preprocess(image: Image) -> FloatImage:
    """RGB uint8 -> BGR float32 with the ImageNet mean subtracted (what VGG16 was trained on)."""
    return image[..., ::-1].astype(np.float32) - BGR_MEAN


def deprocess(x: npt.NDArray[Any]) -> Image:
    """Inverse of `preprocess`: add the BGR means back (the tutorial swapped them), BGR -> RGB."""
    bgr = np.asarray(x, dtype=np.float32).reshape(*x.shape[-3:-1], 3) + BGR_MEAN
    rgb: Image = np.clip(np.rint(bgr[..., ::-1]), 0, 255).astype(np.uint8)
    return rgb


def build_vgg16(weights_path: Path) -> Any:
    """The Keras VGG16 conv base (no classifier head) with verified weights from `weights_path`."""
    from styletx.weights_file import load_conv_base

    model = load_conv_base(weights_path)
    model.trainable = False
    log.info("vgg16 loaded from %s", weights_path)
    return model


def feature_extractor(vgg: Any, layers: Sequence[str]) -> Any:
    """A model mapping a batch of preprocessed images to the outputs of `layers` (in order).

    Keras runs only the part of the graph the outputs need, so a shallow layer set is cheaper.
    """
    import keras

    return keras.Model(
        inputs=vgg.inputs, outputs=[vgg.get_layer(name).output for name in layers], name="features"
    )
