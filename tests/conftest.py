"""Fixtures shared by every test: quiet TensorFlow, a seeded weight file, tiny images; and the
hooks that let `make test` spread the suite over pytest-xdist workers (tests/support/parallel.py).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from tests.support.parallel import (
    file_lock,
    group_by_shared_fixtures,
    name_the_groups,
    slow_first,
)
from tests.support.weights import make_seeded_weights, tiny_image


def _distributed(config: pytest.Config) -> bool:
    """True in a worker of `pytest -n N` (pytest-xdist gives its workers `workerinput`)."""
    return hasattr(config, "workerinput")


@pytest.hookimpl(wrapper=True)  # after every other plugin's hook, xdist's and pytest's included
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None]:
    yield
    if _distributed(config):
        group_by_shared_fixtures(items)
        name_the_groups(config, items)
        slow_first(items)


@pytest.fixture(scope="session")
def seeded_weights(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a deterministic random VGG16 conv-base `.weights.h5`, made once per session; the
    workers of one `pytest -n N` run share one (their temporary folders have a common parent)."""
    base = tmp_path_factory.getbasetemp()
    if _distributed(pytestconfig):
        base = base.parent
    path = base / "weights" / "seeded_vgg16.weights.h5"
    with file_lock(base / "weights.lock"):
        if not path.is_file():
            partial = make_seeded_weights(path.with_name(f"partial-{os.getpid()}.weights.h5"))
            partial.replace(path)
    return path


@pytest.fixture
def content_image() -> np.ndarray:
    return tiny_image(48, 64, seed=1)


@pytest.fixture
def style_image() -> np.ndarray:
    return tiny_image(40, 40, seed=2)
