"""Running many calls at once, lazily: `map_bounded`, the one fan-out every batch call uses.

At most ``limit`` calls are in flight or finished-but-not-yet-consumed at any time, and the
input is pulled only when a slot frees, so memory stays O(limit) however long the input is.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

import anyio

from ._compat import BaseExceptionGroup
from .errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

    from anyio.streams.memory import MemoryObjectSendStream

__all__ = ["Outcome", "concurrency_limit", "map_bounded"]

T = TypeVar("T")
R = TypeVar("R")


def concurrency_limit(max_concurrency: int | None, config: Any) -> int | None:
    """The bound on calls at once: the argument, else ``config["max_concurrency"]``."""
    limit = (
        max_concurrency if max_concurrency is not None else (config or {}).get("max_concurrency")
    )
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidInputError(
            f"must be a positive int or None, got {limit!r}", where="max_concurrency"
        )
    return limit


@final
class Outcome(Generic[R]):
    """What one call of `map_bounded` gave: its input's index and its result or error."""

    __slots__ = ("error", "index", "value")

    def __init__(self, index: int, value: R | None, error: Exception | None) -> None:
        self.index = index
        self.value = value
        self.error = error


async def _aiterate(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


@asynccontextmanager
async def map_bounded(
    items: Iterable[T] | AsyncIterable[T],
    call: Callable[[int, T], Awaitable[R]],
    limit: int,
    *,
    ordered: bool,
) -> AsyncGenerator[AsyncIterator[Outcome[R]], None]:
    """Run ``call(index, item)`` for every item, yielding each `Outcome` as it is ready.

    ``ordered`` yields in input order (a result waits for those before it, holding its slot);
    otherwise in completion order. A call's exception is its outcome's ``error``. Leaving the
    block, however it is left, cancels the calls still running. Use as::

        async with map_bounded(items, call, 8, ordered=False) as outcomes:
            async for outcome in outcomes:
                ...
    """
    slots = anyio.Semaphore(limit)
    send, receive = anyio.create_memory_object_stream[Outcome[R]](limit)

    async def one(index: int, item: T, sender: MemoryObjectSendStream[Outcome[R]]) -> None:
        async with sender:
            try:
                outcome = Outcome(index, await call(index, item), None)
            except Exception as exc:
                outcome = Outcome[R](index, None, exc)
            await sender.send(outcome)

    async def feed(group: anyio.abc.TaskGroup) -> None:
        async with send:
            index = 0
            async with _closing(_aiterate(items)) as source:
                async for item in source:
                    # Released when the consumer takes an outcome. A free slot is taken
                    # without a loop turn, so that the first `limit` calls start at once.
                    try:
                        slots.acquire_nowait()
                    except anyio.WouldBlock:
                        await slots.acquire()
                    group.start_soon(one, index, item, send.clone())
                    index += 1

    async def outcomes() -> AsyncGenerator[Outcome[R], None]:
        waiting: dict[int, Outcome[R]] = {}
        following = 0
        async for outcome in receive:
            if not ordered:
                slots.release()
                yield outcome
                continue
            waiting[outcome.index] = outcome
            while following in waiting:
                slots.release()
                yield waiting.pop(following)
                following += 1

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(feed, group)
            try:
                with receive:
                    yield outcomes()
            finally:
                group.cancel_scope.cancel()
    except BaseExceptionGroup as group_error:
        # The calls never raise (errors travel as outcomes); the feeder raises only if the
        # input iterator does. Give back the one error unwrapped.
        raise group_error.exceptions[0] from None


@asynccontextmanager
async def _closing(source: AsyncIterator[T]) -> AsyncGenerator[AsyncIterator[T], None]:
    try:
        yield source
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
