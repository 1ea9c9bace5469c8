from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from pydantic import Field

from chatstream import AIMessageChunk, BaseChatModel, BaseMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# The fault suite has a session of its own (`nox -s faults`, or `pytest tests/faults`: a path
# given explicitly is still collected), so the main run does not repeat its 2,000-stream and
# kill -9 scenarios. The fast-decoder suite needs the `fast` extra, which only `nox -s fast`
# installs.
collect_ignore = ["faults", "fast"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_blocking: the test blocks its event loop on purpose")


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail any test whose event loop makes a blocking call (file, socket, sleep, lock)."""
    if request.node.get_closest_marker("allow_blocking"):
        yield None
        return
    with blockbuster_ctx("chatstream") as bb:
        yield bb


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Tracked(BaseChatModel):
    """A model that records how its streams start, end and close, for lifecycle tests."""

    pieces: list[str] = Field(default_factory=lambda: ["Hello", " world", "!"])
    started: int = 0
    finished: int = 0
    closed: int = 0
    active: int = 0
    peak: int = 0
    pause: float = 0.0
    fail_on: str | None = None

    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        import anyio

        self.started += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if messages[-1].text == self.fail_on:
                await anyio.sleep(0.01)
                raise ValueError(f"failing on {self.fail_on!r} as asked")
            for piece in self.pieces:
                await anyio.sleep(self.pause)
                yield AIMessageChunk(piece)
            self.finished += 1
        finally:
            self.active -= 1
            self.closed += 1


@pytest.fixture
def tracked() -> Tracked:
    return Tracked()
