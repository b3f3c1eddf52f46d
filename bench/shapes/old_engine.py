"""The old way: the engine's former per-shape step (commit 3eb1b92), kept verbatim, for
`bench/shape_bench.py` to run beside the engine's shape-polymorphic one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from styletx import images, vgg
from styletx.engine import Stylizer
from styletx.optimize import Vector, minimize
from styletx.options import StyleOptions

Objective = Callable[[Vector], tuple[tuple[float, ...], Vector]]


def _old_gram_matrix(features: tf.Tensor) -> tf.Tensor:
    channels = tf.shape(features)[-1]
    flat = tf.reshape(features, (-1, channels))
    return tf.matmul(flat, flat, transpose_a=True)


def _old_content_loss(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.square(features - target))


def _old_style_layer_loss(gram: tf.Tensor, target_gram: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.square(target_gram - gram)) / (4.0 * 9.0 * tf.square(pixels))


def _old_total_variation_loss(image: tf.Tensor, power: tf.Tensor) -> tf.Tensor:
    corner = image[:, :-1, :-1, :]
    dy = tf.square(corner - image[:, 1:, :-1, :])
    dx = tf.square(corner - image[:, :-1, 1:, :])
    return tf.reduce_sum(tf.pow(dx + dy, power))


class _OldLayerSet:
    """Feature extractor and compiled loss/gradient, traced once per image shape."""

    def __init__(self, vgg16: Any, content_layer: str, style_layers: tuple[str, ...]) -> None:
        self.layers = (content_layer, *style_layers)
        self.extractor = vgg.feature_extractor(vgg16, self.layers)
        self.features = tf.function(self._features, reduce_retracing=False)
        self.loss_and_grad = tf.function(self._loss_and_grad, reduce_retracing=False)

    def _features(self, image: tf.Tensor) -> list[tf.Tensor]:
        return [f[0] for f in self.extractor(image[tf.newaxis], training=False)]

    def _loss_and_grad(
        self,
        x: tf.Tensor,
        content_target: tf.Tensor,
        target_grams: tuple[tf.Tensor, ...],
        weights: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        pixels = tf.cast(tf.shape(x)[0] * tf.shape(x)[1], tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x)
            feats = self._features(x)
            content = weights[0] * _old_content_loss(feats[0], content_target)
            style = tf.add_n(
                [
                    _old_style_layer_loss(_old_gram_matrix(f), g, pixels)
                    for f, g in zip(feats[1:], target_grams, strict=True)
                ]
            )
            style = weights[1] * style
            tv = weights[2] * _old_total_variation_loss(x[tf.newaxis], weights[3])
            total = content + style + tv
        grad = tape.gradient(total, x)
        return total, content, style, tv, grad


@dataclass(frozen=True)
class _OldTargets:
    content: tf.Tensor
    grams: tuple[tf.Tensor, ...]


class OldEngine:
    """The old engine's compute path for one job: targets (style at the content's shape, as it
    was), then one L-BFGS run over the per-shape objective."""

    def __init__(self, vgg16: Any, options: StyleOptions) -> None:
        self.options = options
        self.layer_set = _OldLayerSet(vgg16, options.content_layer, options.style_layers)
        self.weights = tf.constant(
            [
                options.content_weight,
                options.style_weight / len(options.style_layers),
                options.tv_weight,
                options.tv_power,
            ],
            dtype=tf.float32,
        )

    def targets(self, base: np.ndarray, style: np.ndarray) -> _OldTargets:
        h, w = base.shape[:2]
        content = self.layer_set.features(tf.constant(vgg.preprocess(base)))[0]
        feats = self.layer_set.features(tf.constant(vgg.preprocess(images.resize_to(style, h, w))))
        return _OldTargets(content, tuple(_old_gram_matrix(f) for f in feats[1:]))

    def objective(self, targets: _OldTargets, h: int, w: int) -> Objective:
        def objective(x: Vector) -> tuple[tuple[float, ...], Vector]:
            image = tf.constant(x.reshape(h, w, 3), dtype=tf.float32)
            total, content, style, tv, grad = self.layer_set.loss_and_grad(
                image, targets.content, targets.grams, self.weights
            )
            terms = (float(total), float(content), float(style), float(tv))
            return terms, grad.numpy().astype(np.float64).ravel()

        return objective

    def job(self, content: np.ndarray, style: np.ndarray, evaluations: int) -> None:
        h, w = Stylizer.output_size(content.shape[0], content.shape[1], self.options.size)
        base = images.resize_to(content, h, w)
        objective = self.objective(self.targets(base, style), h, w)
        x0 = np.random.default_rng(0).uniform(0, 255, (h, w, 3)) - 128.0
        minimize(objective, x0.ravel(), max_evaluations=evaluations)
