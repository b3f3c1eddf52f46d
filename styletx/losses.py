"""The three loss terms of Gatys et al. as the reference tutorial defines them, in TensorFlow."""

from __future__ import annotations

import tensorflow as tf


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """Unnormalised Gram matrix C x C of one image's H x W x C feature map (the tutorial's)."""
    channels = tf.shape(features)[-1]
    flat = tf.reshape(features, (-1, channels))
    return tf.matmul(flat, flat, transpose_a=True)


def content_loss(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Sum of squared feature differences at the content layer."""
    return tf.reduce_sum(tf.square(features - target))


def style_layer_loss(gram: tf.Tensor, target_gram: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    """`sum((G_s - G_x)^2) / (4 * 3^2 * (H*W)^2)`: the tutorial divides by the *image's* pixel
    count and 3 channels at every layer (not the layer's own size and depth, as the paper does);
    we keep that so the reference weights (4.5, 0.02, 0.995) mean the same thing."""
    return tf.reduce_sum(tf.square(target_gram - gram)) / (4.0 * 9.0 * tf.square(pixels))


def total_variation_loss(image: tf.Tensor, power: tf.Tensor) -> tf.Tensor:
    """`sum((dx^2 + dy^2)^power)` over a 1 x H x W x 3 image.

    Both differences are taken on the same (H-1) x (W-1) grid; the tutorial indexed both axes
    with the height, which is wrong for non-square images.
    """
    corner = image[:, :-1, :-1, :]
    dy = tf.square(corner - image[:, 1:, :-1, :])
    dx = tf.square(corner - image[:, :-1, 1:, :])
    return tf.reduce_sum(tf.pow(dx + dy, power))
