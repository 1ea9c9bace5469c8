"""The only bridge from sync code to the async API: one event loop on a daemon thread.

Sync methods hand their async twin to `run` or `iterate`, which execute it on that loop through
an anyio blocking portal. This works from plain scripts, from many threads at once, and from a
thread whose own event loop is running (a notebook cell), because the work never runs on the
caller's loop.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
import threading
from collections import deque
from typing import TYPE_CHECKING, Generic, TypeVar, final

import anyio
import anyio.lowlevel

from .errors import ChatStreamError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Generator
    from contextlib import AbstractAsyncContextManager

    from anyio.abc import TaskStatus
    from anyio.from_thread import BlockingPortal

__all__ = ["iterate", "run"]

T = TypeVar("T")

_BUFFER = 1024
"""Chunks a sync ``stream`` may hold before the producer waits for the consumer."""

_IDLE_TURNS = 3
"""Loop turns a batch waits for the next item before it is handed over."""

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_thread: threading.Thread | None = None
_pid = 0


def _serve(ready: threading.Event, holder: list[BlockingPortal]) -> None:
    # Imported with the first sync call: `import chatstream` need not load anyio's thread tools.
    from anyio.from_thread import BlockingPortal

    async def main() -> None:
        async with BlockingPortal() as portal:
            holder.append(portal)
            ready.set()
            await portal.sleep_until_stopped()

    anyio.run(main, backend="asyncio")


def _get_portal() -> BlockingPortal:
    global _portal, _thread, _pid
    portal = _portal
    if portal is not None and _pid == os.getpid():
        if threading.current_thread() is _thread:
            raise ChatStreamError(
                "a sync chatstream method was called on chatstream's own event loop thread "
                "(from a callback?); await the async method (ainvoke, astream, ...) instead"
            )
        return portal
    with _lock:
        if _portal is None or _pid != os.getpid():  # a forked child does not inherit the thread
            ready = threading.Event()
            holder: list[BlockingPortal] = []
            _thread = threading.Thread(
                target=_serve, args=(ready, holder), name="chatstream-sync", daemon=True
            )
            _thread.start()
            ready.wait()
            _portal, _pid = holder[0], os.getpid()
        return _portal


@atexit.register
def _shutdown() -> None:
    # Let the loop close what it holds (HTTP sessions) instead of dying mid-write with the thread.
    portal, thread = _portal, _thread
    if portal is None or thread is None or _pid != os.getpid() or not thread.is_alive():
        return
    try:
        portal.start_task_soon(portal.stop, True)
    except RuntimeError:  # the portal stopped already
        return
    thread.join(timeout=2)


async def _in_context(context: contextvars.Context, func: Callable[[], Awaitable[T]]) -> T:
    # The portal's task starts from the loop's context; carry the caller's (e.g. a parent run).
    for var, value in context.items():
        var.set(value)
    return await func()


def run(func: Callable[[], Awaitable[T]]) -> T:
    """Run ``func()`` on the bridge's loop and return its result, from any thread.

    If the caller is interrupted (``KeyboardInterrupt``), the async call is cancelled.
    """
    future = _get_portal().start_task_soon(_in_context, contextvars.copy_context(), func)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


@final
class _Handoff(Generic[T]):
    """Items going from the producer task to the consumer, both on the bridge's loop.

    Bounded: the producer waits once ``_BUFFER`` items wait. A deque and two events instead
    of a memory object stream: per item that is an append, where the stream's send and
    receive cost most of what a sync ``stream`` added to ``astream``.
    """

    __slots__ = ("_ready", "_room", "ended", "items")

    def __init__(self) -> None:
        self.items: deque[T] = deque()
        self.ended = False
        self._ready: anyio.Event | None = None  # set while the consumer waits for an item
        self._room: anyio.Event | None = None  # set while the producer waits for room

    async def put(self, item: T) -> None:
        """Hand ``item`` over, waiting while the buffer is full."""
        items = self.items
        items.append(item)
        if self._ready is not None:
            self._ready.set()
        if len(items) >= _BUFFER:
            room = self._room = anyio.Event()
            await room.wait()

    def end(self) -> None:
        """No more items will come."""
        self.ended = True
        if self._ready is not None:
            self._ready.set()

    async def take(self) -> tuple[list[T], bool]:
        """What is ready (waiting for one item), and whether the stream ended with it.

        One trip across threads costs 100-300 µs here, so a fast producer gets a few turns
        of the loop to add more; a slow one (a network) ends the batch at once. The end of
        the stream travels with the last batch, saving a trip.
        """
        items = self.items
        while not items and not self.ended:
            ready = self._ready = anyio.Event()
            await ready.wait()
            self._ready = None
        idle = 0
        while len(items) < _BUFFER and idle < _IDLE_TURNS and not self.ended:
            before = len(items)
            await anyio.lowlevel.checkpoint()
            idle = 0 if len(items) > before else idle + 1
        batch = list(items)
        items.clear()
        if self._room is not None:
            self._room.set()
            self._room = None
        return batch, self.ended


async def _produce(
    context: contextvars.Context,
    open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterator[T]]],
    handoff: _Handoff[T],
    *,
    task_status: TaskStatus[anyio.CancelScope],
) -> None:
    with anyio.CancelScope() as scope:
        task_status.started(scope)

        async def pump() -> None:
            try:
                async with open_stream() as stream:
                    async for item in stream:
                        await handoff.put(item)
            finally:
                handoff.end()

        await _in_context(context, pump)


async def _stop(scope: anyio.CancelScope) -> None:
    scope.cancel()


def iterate(
    open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterator[T]]],
) -> Generator[T, None, None]:
    """Iterate ``async with open_stream() as s: async for item in s`` on the bridge's loop.

    The whole async iteration runs in one task on the bridge's loop and hands items over a
    bounded buffer. Closing the returned generator (``break``, ``close()``, garbage
    collection) cancels that task, which closes the async stream.
    """
    portal = _get_portal()
    handoff: _Handoff[T] = _Handoff()
    future, scope = portal.start_task(_produce, contextvars.copy_context(), open_stream, handoff)
    ended = False
    try:
        while not ended:
            batch, ended = portal.call(handoff.take)
            yield from batch
        future.result()  # the producer's error, if it failed
    finally:
        if not ended:  # the caller stopped early: cancel the producer and wait for its cleanup
            portal.call(_stop, scope)
            with contextlib.suppress(Exception):
                future.result()
