"""Fixtures shared by every test: quiet TensorFlow, a seeded weight file, tiny images."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from tests.support.weights import make_seeded_weights, tiny_image


@pytest.fixture(scope="session")
def seeded_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a deterministic random VGG16 conv-base `.weights.h5` (made once per session)."""
    return make_seeded_weights(tmp_path_factory.mktemp("weights") / "seeded_vgg16.weights.h5")


@pytest.fixture
def content_image() -> np.ndarray:
    return tiny_image(48, 64, seed=1)


@pytest.fixture
def style_image() -> np.ndarray:
    return tiny_image(40, 40, seed=2)
