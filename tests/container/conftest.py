"""Container tests run only when asked for (`make image-test`, `make deploy-test` set
STYLETX_CONTAINER_TESTS=1): they need a built image and a container engine."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("STYLETX_CONTAINER_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs a built image: make image-test / make deploy-test")
    for item in items:
        if "container" in item.keywords:
            item.add_marker(skip)
