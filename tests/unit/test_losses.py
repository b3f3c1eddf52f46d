"""Each loss term against a direct numpy computation on small random tensors (TensorFlow
backend; the JAX parity test runs the same `keras.ops` code on JAX)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from styletx import losses


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_gram_matrix_matches_numpy(rng: np.random.Generator) -> None:
    feats = rng.normal(size=(5, 6, 4)).astype(np.float32)
    expected = np.zeros((4, 4))
    for i in range(5):
        for j in range(6):
            expected += np.outer(feats[i, j], feats[i, j])
    got = losses.gram_matrix(tf.constant(feats)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(got, got.T)


def test_content_loss_is_sum_of_squares(rng: np.random.Generator) -> None:
    a, b = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    got = losses.content_loss(tf.constant(a), tf.constant(b)).numpy()
    assert got == pytest.approx(float(np.sum((a - b) ** 2)), rel=1e-5)


def test_style_layer_loss_uses_image_pixels_and_three_channels(rng: np.random.Generator) -> None:
    g1, g2 = rng.normal(size=(2, 8, 8)).astype(np.float32)
    pixels = 12.0 * 10.0
    got = losses.style_layer_loss(tf.constant(g1), tf.constant(g2), tf.constant(pixels)).numpy()
    expected = np.sum((g2 - g1) ** 2) / (4 * 3**2 * pixels**2)
    assert got == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize(("h", "w"), [(5, 9), (9, 5), (6, 6)])
def test_total_variation_on_non_square_images(rng: np.random.Generator, h: int, w: int) -> None:
    image = rng.uniform(-100, 100, size=(1, h, w, 3)).astype(np.float32)
    expected = 0.0
    for y in range(h - 1):
        for x in range(w - 1):
            for c in range(3):
                dy = image[0, y, x, c] - image[0, y + 1, x, c]
                dx = image[0, y, x, c] - image[0, y, x + 1, c]
                expected += (dx * dx + dy * dy) ** 1.25
    got = losses.total_variation_loss(tf.constant(image), tf.constant(1.25)).numpy()
    assert got == pytest.approx(expected, rel=1e-4)


def test_total_variation_of_flat_image_is_zero() -> None:
    image = tf.fill((1, 7, 4, 3), 3.0)
    assert losses.total_variation_loss(image, tf.constant(1.25)).numpy() == 0.0


def test_sums_of_squares_are_float64_and_exact_at_1e10_scale(rng: np.random.Generator) -> None:
    # Two million feature differences of ~70: a loss near 1e10, the tutorial's scale. A float32
    # sum keeps ~7 digits of it; L-BFGS' line search compares steps that change the 8th.
    a = rng.normal(0, 50, size=(1, 100, 160, 128)).astype(np.float32)
    b = rng.normal(0, 50, size=(1, 100, 160, 128)).astype(np.float32)
    expected = np.sum(np.square((a - b).astype(np.float64)), axis=(1, 2, 3))
    got = losses.content_loss(tf.constant(a), tf.constant(b)).numpy()
    assert got.dtype == np.float64 and expected[0] > 1e10
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    float32_sum = float(tf.reduce_sum(tf.square(tf.constant(a) - tf.constant(b))))
    assert abs(float32_sum - expected[0]) > 1e-9 * expected[0]  # what float64 buys

    g1, g2 = rng.normal(0, 3e4, size=(2, 1, 256, 256)).astype(np.float32)
    got = losses.style_layer_loss(tf.constant(g1), tf.constant(g2), 64.0 * 64.0).numpy()
    assert got.dtype == np.float64
    expected = np.sum(np.square((g2 - g1).astype(np.float64))) / (36.0 * (64.0 * 64.0) ** 2)
    np.testing.assert_allclose(got, [expected], rtol=1e-12)


def test_loss_terms_are_per_sample(rng: np.random.Generator) -> None:
    """Each row of a batch has its own targets and weights; the terms add up row by row."""
    images = rng.uniform(-100, 100, size=(2, 6, 8, 3)).astype(np.float32)
    content_feats = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    style_feats = rng.normal(size=(2, 3, 4, 6)).astype(np.float32)
    content_target = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    gram_target = rng.normal(size=(2, 6, 6)).astype(np.float32)
    weights = np.array([[0.5, 2.0, 0.1, 1.25], [3.0, 0.0, 1.0, 2.0]], dtype=np.float32)
    terms = losses.loss_terms(
        [tf.constant(content_feats), tf.constant(style_feats)],
        tf.constant(images),
        tf.constant(content_target),
        [tf.constant(gram_target)],
        tf.constant(weights),
    ).numpy()
    assert terms.shape == (2, 4) and terms.dtype == np.float64
    for i in range(2):
        one = losses.loss_terms(
            [tf.constant(content_feats[i : i + 1]), tf.constant(style_feats[i : i + 1])],
            tf.constant(images[i : i + 1]),
            tf.constant(content_target[i : i + 1]),
            [tf.constant(gram_target[i : i + 1])],
            tf.constant(weights[i : i + 1]),
        ).numpy()[0]
        np.testing.assert_allclose(terms[i], one, rtol=1e-6)
        content = weights[i, 0] * np.sum((content_feats[i] - content_target[i]) ** 2.0)
        assert terms[i, 1] == pytest.approx(content, rel=1e-5)
        assert terms[i, 0] == pytest.approx(terms[i, 1:].sum(), rel=1e-12)
    assert terms[1, 2] == 0.0  # style weight 0 in row 1 only
    assert terms[0, 2] > 0.0
