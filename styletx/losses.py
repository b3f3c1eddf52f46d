"""The three loss terms of Gatys et al. as the reference tutorial defines them, in `keras.ops`.

Written once for every Keras backend. Each function takes one image or a batch: it reduces the
trailing (image) axes and keeps the leading ones, so `[B, ...]` inputs give `[B]` losses and
every sample of a batch keeps its own loss. Squared differences are summed in float64: the
tutorial's losses reach 1e10, where a float32 sum keeps about three significant digits of a
step's decrease and L-BFGS' line search compares exactly those (tests/unit/test_losses.py).
Features arrive in the model's compute dtype (16 bits under mixed precision) and are widened to
float32 first, so Gram matrices and differences never sum in 16 bits (`styletx.precision`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

#: Per-sample loss weights, in this order: [content, style per layer, tv, tv power].
WEIGHT_FIELDS = ("content", "style_per_layer", "tv", "tv_power")
#: Per-sample loss terms `loss_terms` returns, in this order.
TERM_FIELDS = ("total", "content", "style", "tv")

_IMAGE_AXES = (-3, -2, -1)
_GRAM_AXES = (-2, -1)


def gram_matrix(features: Any) -> Any:
    """Unnormalised Gram matrices `[..., C, C]` of `[..., H, W, C]` features (the tutorial's),
    summed in float32 whatever the features' dtype (a bfloat16 sum of H*W products would keep
    three significant digits)."""
    wide = ops.cast(features, "float32")
    return ops.einsum("...hwc,...hwd->...cd", wide, wide)


def _sum_of_squares(difference: Any, axes: tuple[int, ...]) -> Any:
    wide = ops.cast(difference, "float64")
    return ops.sum(wide * wide, axis=axes)


def content_loss(features: Any, target: Any) -> Any:
    """Sum of squared feature differences at the content layer, per image (float64)."""
    return _sum_of_squares(features - target, _IMAGE_AXES)


def style_layer_loss(gram: Any, target_gram: Any, pixels: Any) -> Any:
    """`sum((G_s - G_x)^2) / (4 * 3^2 * (H*W)^2)` per image (float64).

    The tutorial divides by the *image's* pixel count and 3 channels at every layer (not the
    layer's own size and depth, as the paper does); we keep that so the reference weights
    (4.5, 0.02, 0.995) mean the same thing.
    """
    scale = 4.0 * 9.0 * ops.square(ops.cast(pixels, "float64"))
    return _sum_of_squares(target_gram - gram, _GRAM_AXES) / scale


def total_variation_loss(image: Any, power: Any) -> Any:
    """`sum((dx^2 + dy^2)^power)` per `[..., H, W, 3]` image (float64 sum).

    Both differences are taken on the same (H-1) x (W-1) grid; the tutorial indexed both axes
    with the height, which is wrong for non-square images. `power` broadcasts against the image
    (a scalar, or `[B, 1, 1, 1]` for one power per sample).
    """
    corner = image[..., :-1, :-1, :]
    dy = ops.square(corner - image[..., 1:, :-1, :])
    dx = ops.square(corner - image[..., :-1, 1:, :])
    return ops.sum(ops.cast(ops.power(dx + dy, power), "float64"), axis=_IMAGE_AXES)


def loss_terms(
    features: Sequence[Any],
    image: Any,
    content_target: Any,
    gram_targets: Sequence[Any],
    weights: Any,
) -> Any:
    """Weighted loss terms `[B, 4]` (float64, `TERM_FIELDS` order) of a batch of images.

    `features` are the extractor's outputs for `image` (`[B, H, W, 3]`, preprocessed): the content
    layer first, then the style layers. `content_target` is `[B, h, w, C]`, each of
    `gram_targets` `[B, C, C]`, `weights` `[B, 4]` in `WEIGHT_FIELDS` order: every sample of the
    batch has its own targets and weights (one job each, when jobs share a batch).
    """
    features = [ops.cast(f, "float32") for f in features]
    wide = ops.cast(weights, "float64")
    shape = ops.shape(image)
    pixels = ops.cast(shape[1] * shape[2], "float64")
    content = wide[:, 0] * content_loss(features[0], content_target)
    style = wide[:, 1] * sum(
        (
            style_layer_loss(gram_matrix(f), g, pixels)
            for f, g in zip(features[1:], gram_targets, strict=True)
        ),
        start=ops.zeros_like(content),
    )
    power = ops.reshape(weights[:, 3], (-1, 1, 1, 1))
    tv = wide[:, 2] * total_variation_loss(image, power)
    return ops.stack([content + style + tv, content, style, tv], axis=1)


__all__ = [
    "TERM_FIELDS",
    "WEIGHT_FIELDS",
    "content_loss",
    "gram_matrix",
    "loss_terms",
    "style_layer_loss",
    "total_variation_loss",
]
