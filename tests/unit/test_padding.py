"""Exact padding (`shape_step`): VGG16 runs an image at a padded shape, and every target, loss
and gradient is still the unpadded image's (TensorFlow backend)."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from styletx import heap, vgg
from styletx.backends.tensorflow import TensorFlowStep
from styletx.engine import Stylizer
from styletx.errors import Cancelled
from styletx.options import StyleOptions
from tests.support.weights import tiny_image

# The default layers: the content layer (block2_conv2) is one of the style layers too.
DEFAULT = StyleOptions()
LAYERS = (DEFAULT.content_layer, *DEFAULT.style_layers)
WEIGHTS = np.array([[0.02, 0.9, 0.995, 1.25]], dtype=np.float32)


@pytest.fixture(scope="module")
def stylizer(seeded_weights: Path) -> Stylizer:
    # float32: the comparisons are to float32 rounding.
    return Stylizer(seeded_weights, shape_step=1, precision="float32")


def _step(stylizer: Stylizer, shape_step: int) -> TensorFlowStep:
    return TensorFlowStep(
        vgg.feature_extractor(stylizer._vgg, LAYERS), LAYERS, stylizer.device, shape_step
    )


class _Oversized(TensorFlowStep):
    """Pads far more, and unevenly, than any step would: the masks must still be exact."""

    def run_shape(self, height: int, width: int) -> tuple[int, int]:
        return height + 13, width + 22


def _pictures(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(sum(shape))
    content, style, image = (
        rng.normal(0.0, 60.0, (1, *size, 3)).astype(np.float32)
        for size in (shape, (shape[1], shape[0] - 3), shape)
    )
    return content, style, image


# Odd sides, so that every 2x2 pooling drops a row or column the padded run must not use.
@pytest.mark.parametrize("shape", [(37, 50), (50, 37), (45, 45)])
def test_padded_targets_losses_and_gradients_are_the_unpadded_ones(
    stylizer: Stylizer, shape: tuple[int, int]
) -> None:
    plain = _step(stylizer, 1)
    padded = [_step(stylizer, 16), _Oversized(plain._extractor, LAYERS, stylizer.device, 1)]
    content, style, image = _pictures(shape)
    want_content, _ = plain.targets(content)
    _, want_grams = plain.targets(style)
    want_targets = plain.put(want_content, want_grams, WEIGHTS)
    want_terms, want_grad = plain.loss_and_grad(image, want_targets)
    for step in padded:
        got_content, _ = step.targets(content)
        _, got_grams = step.targets(style)
        assert got_content.shape == want_content.shape
        np.testing.assert_allclose(got_content, want_content, rtol=1e-5, atol=1e-3)
        for got, want in zip(got_grams, want_grams, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2 * np.abs(want).max())
        terms, grad = step.loss_and_grad(image, step.put(got_content, got_grams, WEIGHTS))
        np.testing.assert_allclose(terms, want_terms, rtol=1e-5)
        assert grad.shape == image.shape
        np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-5 * np.abs(want_grad).max())


def test_the_network_runs_at_the_padded_shape(stylizer: Stylizer) -> None:
    step = _step(stylizer, 16)
    assert step.run_shape(37, 50) == (48, 50)
    images = tf.constant(_pictures((37, 50))[0])
    features = step._features(images, tf.constant([48, 50]), pad=True)
    # The content layer (after one pooling) is cropped to the image's own part, 18 x 25 ...
    assert tuple(features[0].shape[1:3]) == (18, 25)
    # ... block1_conv2 ran on all 48 rows, and its padded rows are zeros.
    block1 = features[1 + DEFAULT.style_layers.index("block1_conv2")].numpy()
    assert block1.shape[1:3] == (48, 50)
    assert np.abs(block1[:, :37]).max() > 0 and not block1[:, 37:].any()


def test_a_padded_job_gives_the_unpadded_picture(seeded_weights: Path, stylizer: Stylizer) -> None:
    options = StyleOptions(size=50, max_evaluations=6, seed=0)
    content, style = tiny_image(37, 50, seed=1), tiny_image(40, 30, seed=2)
    padded = Stylizer(seeded_weights, shape_step=16, precision="float32")
    assert padded.step(options).run_shape(37, 50) == (48, 50)
    want = stylizer.stylize(content, [style], options)
    got = padded.stylize(content, [style], options)
    assert got.evaluations == want.evaluations
    assert got.losses.total == pytest.approx(want.losses.total, rel=1e-3)
    assert np.abs(got.image.astype(int) - want.image.astype(int)).max() <= 2


def test_shape_step_must_be_positive(seeded_weights: Path) -> None:
    with pytest.raises(ValueError, match="shape_step"):
        Stylizer(seeded_weights, shape_step=0)


def test_every_job_hands_its_freed_memory_back(
    stylizer: Stylizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[bool] = []
    monkeypatch.setattr(heap, "trim", lambda: trims.append(True) or True)
    options = StyleOptions(size=32, max_evaluations=1)
    stylizer.stylize(tiny_image(32, 32), [tiny_image(32, 32)], options)
    assert trims == [True]
    with pytest.raises(Cancelled):
        stylizer.stylize(
            tiny_image(32, 32), [tiny_image(32, 32)], options, should_stop=lambda: True
        )
    assert trims == [True, True]


def test_heap_trim_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    assert heap.trim() is True  # glibc Linux, as CI and the container image run
    heap._malloc_trim.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "/nonexistent/libc.so")
    try:
        assert heap.trim() is False
    finally:
        heap._malloc_trim.cache_clear()
