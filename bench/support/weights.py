"""Seeded random VGG16 weights and small pictures: for benchmarks that time the service path
around real engine work without caring what the pictures look like."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_seeded_weights(path: Path, seed: int = 1234) -> Path:
    """Write He-initialised VGG16 (no top) weights to `path` (a Keras `.weights.h5`)."""
    import keras

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        kernel, bias = layer.get_weights()
        fan_in = int(np.prod(kernel.shape[:3]))
        # He init keeps activations at the input's scale through 13 ReLU layers.
        layer.set_weights(
            [
                rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape).astype(np.float32),
                rng.normal(0.0, 0.01, bias.shape).astype(np.float32),
            ]
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(path))
    return path


def tiny_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB uint8 image (low-frequency, so it looks like a picture, not noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (max(2, height // 8), max(2, width // 8), 3))
    img = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)
