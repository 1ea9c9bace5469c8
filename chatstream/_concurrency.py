"""Running many calls at once: a concurrency bound, gathering in order, results as they complete."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import anyio

from ._compat import BaseExceptionGroup
from .errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence

    from anyio.streams.memory import MemoryObjectSendStream

__all__ = ["as_completed", "concurrency_limit", "gather"]

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


async def _run_limited(
    call: Callable[[], Awaitable[R]], limiter: anyio.CapacityLimiter | None
) -> R:
    if limiter is None:
        return await call()
    async with limiter:
        return await call()


@overload
async def gather(
    calls: Sequence[Callable[[], Awaitable[R]]],
    limit: int | None,
    *,
    return_exceptions: Literal[False],
) -> list[R]: ...


@overload
async def gather(
    calls: Sequence[Callable[[], Awaitable[R]]],
    limit: int | None,
    *,
    return_exceptions: Literal[True],
) -> list[R | Exception]: ...


async def gather(
    calls: Sequence[Callable[[], Awaitable[R]]], limit: int | None, *, return_exceptions: bool
) -> list[R] | list[R | Exception]:
    """Run every call, at most ``limit`` at once; results in call order.

    The first failure cancels the rest and is raised, unless ``return_exceptions`` puts each
    failure in its place.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[Exception] = []
    limiter = anyio.CapacityLimiter(limit) if limit is not None else None
    async with anyio.create_task_group() as group:

        async def one(index: int) -> None:
            try:
                results[index] = await _run_limited(calls[index], limiter)
            except Exception as exc:
                if return_exceptions:
                    results[index] = exc
                else:
                    errors.append(exc)
                    group.cancel_scope.cancel()

        for index in range(len(calls)):
            group.start_soon(one, index)
    if errors:
        raise errors[0]
    return results


@asynccontextmanager
async def as_completed(
    calls: Sequence[Callable[[], Awaitable[R]]], limit: int | None, return_exceptions: bool
) -> AsyncGenerator[AsyncIterator[tuple[int, R | Exception]], None]:
    """Run every call, at most ``limit`` at once, yielding ``(index, result)`` as each ends."""
    # The buffer holds every result, so no call ever waits for the consumer; the stream ends
    # when the last call's sender closes.
    send, receive = anyio.create_memory_object_stream[tuple[int, R | Exception]](max(len(calls), 1))
    limiter = anyio.CapacityLimiter(limit) if limit is not None else None

    async def one(index: int, sender: MemoryObjectSendStream[tuple[int, R | Exception]]) -> None:
        async with sender:
            try:
                result: R | Exception = await _run_limited(calls[index], limiter)
            except Exception as exc:
                result = exc
            await sender.send((index, result))

    async def results() -> AsyncGenerator[tuple[int, R | Exception], None]:
        async for index, result in receive:
            if isinstance(result, Exception) and not return_exceptions:
                raise result
            yield index, result

    try:
        async with anyio.create_task_group() as group:
            async with send:
                for index in range(len(calls)):
                    group.start_soon(one, index, send.clone())
            try:
                with receive:
                    yield results()
            finally:
                group.cancel_scope.cancel()
    except BaseExceptionGroup as group_error:
        # The calls never raise (their errors travel as results), so the one error in the group
        # is the caller's own, from the body of the ``async with``: give it back unwrapped.
        raise group_error.exceptions[0] from None
