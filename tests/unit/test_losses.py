"""Each loss term against a direct numpy computation on small random tensors."""

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
