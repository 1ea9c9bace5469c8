"""Fixtures shared by the tests of the local protocol servers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
def anyio_backend() -> str:
    # The servers are aiohttp apps, which need asyncio.
    return "asyncio"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw aiohttp client: the servers are checked without any chatstream client code."""
    async with aiohttp.ClientSession() as client:
        yield client
