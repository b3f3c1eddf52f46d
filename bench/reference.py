"""A faithful re-implementation of the reference tutorial's way of computing loss and gradient.

The tutorial concatenates content, style and the optimised image into one batch and pushes all
three through VGG16 at *every* evaluation, then runs 10 rounds of `fmin_l_bfgs_b(maxfun=20)` with
scipy's default tolerances, with an `Evaluator` that caches the gradient between scipy's separate
loss and gradient calls. We keep its losses (the same as the engine's, so only the way of
computing differs) and compile the function once, which is what its Keras `K.function` did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from scipy.optimize import fmin_l_bfgs_b

from styletx import losses, vgg
from styletx.options import StyleOptions


class ReferenceEvaluator:
    """Loss and gradient the tutorial's way; `loss` and `grads` are scipy's two callbacks."""

    def __init__(self, vgg16: Any, content: np.ndarray, style: np.ndarray, options: StyleOptions):
        layers = (options.content_layer, *options.style_layers)
        self.extractor = vgg.feature_extractor(vgg16, layers)
        self.shape = content.shape
        self.content = tf.constant(vgg.preprocess(content)[np.newaxis])
        self.style = tf.constant(vgg.preprocess(style)[np.newaxis])
        self.options = options
        self.evaluations = 0
        self._grad: np.ndarray | None = None
        self._fn = tf.function(self._loss_and_grad)

    def _loss_and_grad(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        o = self.options
        pixels = float(self.shape[0] * self.shape[1])
        with tf.GradientTape() as tape:
            tape.watch(x)
            feats = self.extractor(tf.concat([self.content, self.style, x], axis=0))
            loss = o.content_weight * losses.content_loss(feats[0][2], feats[0][0])
            per_layer = o.style_weight / len(o.style_layers)
            for f in feats[1:]:
                loss += per_layer * losses.style_layer_loss(
                    losses.gram_matrix(f[2]), losses.gram_matrix(f[1]), pixels
                )
            # Per-image TV ([1] for the one image): summed to the scalar loss scipy wants.
            loss += o.tv_weight * tf.reduce_sum(losses.total_variation_loss(x, o.tv_power))
        return loss, tape.gradient(loss, x)

    def loss(self, x: np.ndarray) -> float:
        value, grad = self._fn(tf.constant(x.reshape(1, *self.shape), dtype=tf.float32))
        self.evaluations += 1
        self._grad = grad.numpy().ravel().astype(np.float64)
        return float(value)

    def grads(self, x: np.ndarray) -> np.ndarray:
        assert self._grad is not None
        grad, self._grad = self._grad, None
        return grad


def reference_schedule(
    loss: Any, grads: Any, x0: np.ndarray, rounds: int = 10, maxfun: int = 20
) -> np.ndarray:
    """The tutorial's optimisation: `rounds` fresh L-BFGS runs of `maxfun`, default tolerances."""
    x = x0.ravel().astype(np.float64)
    for _ in range(rounds):
        x, _, _ = fmin_l_bfgs_b(loss, x, fprime=grads, maxfun=maxfun)
    return x
