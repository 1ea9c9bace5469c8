"""The in-process contenders' common ground: the chunks streamed, chatstream's model, the floor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatstream import AIMessageChunk, BaseChatModel, BaseMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

PIECES = ["The", " purpose", " of", " model", " regularization", " is", " to", " generalize", "."]
"""The content of chunk ``i`` is ``PIECES[i % len(PIECES)]``, for every contender."""


class Streamer(BaseChatModel):
    """A chatstream model yielding ``n`` chunks, built exactly as the floor builds them."""

    n: int = 1000

    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        for i in range(self.n):
            yield AIMessageChunk(PIECES[i % len(PIECES)])


async def floor_stream(n: int) -> AsyncIterator[AIMessageChunk]:
    """The floor: a bare async generator of the same ``n`` pydantic chunks."""
    for i in range(n):
        yield AIMessageChunk(PIECES[i % len(PIECES)])


async def drain_floor(n: int) -> None:
    """Consume `floor_stream`, keeping nothing."""
    async for _ in floor_stream(n):
        pass


async def keep_floor(n: int) -> list[AIMessageChunk]:
    """Consume `floor_stream` keeping every chunk, as a chatstream run does (for its answer)."""
    return [chunk async for chunk in floor_stream(n)]


async def answer_floor(n: int) -> str:
    """Consume `floor_stream` into the answer's text: the least a batch call must return."""
    return "".join([chunk.text async for chunk in floor_stream(n)])
