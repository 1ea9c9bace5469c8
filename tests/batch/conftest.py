"""Fixtures of the Batch API tests: asyncio (the local servers are aiohttp apps)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return tmp_path / "batch.db"
