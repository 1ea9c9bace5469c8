"""`ChatStream`: what ``astream`` returns, an async iterator that is also its own closer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar, final

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator
    from types import TracebackType

    from ._compat import Self
    from .messages import AIMessage
    from .runs import Run

__all__ = ["ChatStream"]

_CLOSE_TIMEOUT = 10.0
"""Seconds a stream's cleanup may take once the caller has stopped it."""

T = TypeVar("T")


@final
class ChatStream(Generic[T]):
    """An async iterator over a call's output that closes the call on ``aclose()``.

    Iterate it directly, or under ``async with`` to close the call deterministically when the
    block ends, even after an early ``break``::

        async with model.astream("Hi") as stream:
            async for chunk in stream:
                ...

    Its `run` records the call as it streams, and `message` is the answer so far::

        stream = model.astream("Hi")
        async for chunk in stream:
            ...
        stream.message  # AIMessage(content='Hello!', id='run-…', usage_metadata={...})
    """

    __slots__ = ("_agen", "run")

    def __init__(self, agen: AsyncGenerator[T, None], run: Run) -> None:
        self._agen = agen
        self.run = run
        """The record of the call: its id, settings, chunks, usage, times and error."""

    @property
    def message(self) -> AIMessage:
        """The answer streamed so far as one `AIMessage` (`Run.final_message`)."""
        return self.run.final_message()

    def __aiter__(self) -> AsyncGenerator[T, None]:
        # Hand out the generator itself: ``async for`` then steps it with no wrapper per item.
        return self._agen

    async def __anext__(self) -> T:
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop the call and release what it holds (idempotent), even when cancelled."""
        # Shielded, so that a cancelled caller still runs the provider's cleanup (closing the
        # HTTP response); bounded, so that a cleanup that hangs cannot hang the caller.
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
            await self._agen.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
