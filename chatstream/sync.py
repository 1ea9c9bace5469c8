"""The only bridge from sync code to the async API: one event loop on a daemon thread.

Sync methods hand their async twin to `run` or `iterate`, which execute it on that loop through
an anyio blocking portal; a stream's items come back over a thread-safe queue. This works from
plain scripts, from many threads at once, and from a thread whose own event loop is running (a
notebook cell), because the work never runs on the caller's loop.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
import queue
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

import anyio

from .errors import ChatStreamError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
    from contextlib import AbstractAsyncContextManager

    from anyio.from_thread import BlockingPortal

__all__ = ["iterate", "run"]

T = TypeVar("T")

_BUFFER = 256
"""Items a sync ``stream`` may hold before the producer waits for the consumer.

A trade: each wait costs a wake-up across threads (40-80 µs here), but items held in the
queue outlive the collector's young generation, and each one promoted brings a full
collection closer (about 100 ms each in a process with langchain loaded, at 1,024).
"""

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


_END = object()
"""Put last on a channel: the producer finished (its error, if any, is on its future)."""


@final
class _Channel(Generic[T]):
    """Items going from the producer task on the bridge's loop to the consumer's thread.

    The consumer takes each item straight from a thread-safe queue: an item costs a put and a
    get, not a trip to the loop (a task per batch), and the consumer sees it as soon as it
    holds the GIL. Only a full queue costs a trip: the producer waits for room, and the
    consumer wakes it once half the queue is taken.
    """

    __slots__ = ("_lock", "_loop", "_queue", "_room", "_scope", "_stopped")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders `_room` and `_scope` across the threads
        self._room: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped = False

    async def run(
        self,
        context: contextvars.Context,
        open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterator[T]]],
    ) -> None:
        """The producer task: pump the stream in the caller's context, then put the end."""
        # Here, not at the top: asyncio loads logging, which `import chatstream` need not.
        from asyncio import get_running_loop

        try:
            with anyio.CancelScope() as scope:
                loop = get_running_loop()
                with self._lock:
                    self._loop, self._scope = loop, scope
                    if self._stopped:  # the consumer stopped before this task started
                        scope.cancel()

                async def pump() -> None:
                    async with open_stream() as stream:
                        await self._pump(stream, loop)

                await _in_context(context, pump)
        finally:
            self._queue.put(_END)

    def stop(self) -> None:
        """From the consumer: cancel the producer (at once, or as soon as it starts)."""
        with self._lock:
            self._stopped = True
            if self._loop is not None and self._scope is not None:
                self._loop.call_soon_threadsafe(self._scope.cancel)

    async def _pump(self, stream: AsyncIterator[T], loop: asyncio.AbstractEventLoop) -> None:
        put, size = self._queue.put, self._queue.qsize
        async for item in stream:
            put(item)
            if size() >= _BUFFER:
                with self._lock:  # checked again: the consumer may have taken items since
                    room = self._room = loop.create_future() if size() >= _BUFFER else None
                if room is not None:
                    await room

    def __iter__(self) -> Iterator[T]:
        get, size = self._queue.get, self._queue.qsize
        while (item := get()) is not _END:
            # A producer waiting for room set `_room` while the queue held `_BUFFER` items,
            # so this sees it before the queue runs dry.
            if self._room is not None and size() <= _BUFFER // 2:
                with self._lock:
                    room, self._room = self._room, None
                if room is not None:
                    room.get_loop().call_soon_threadsafe(_free, room)
            yield item


def _free(room: asyncio.Future[None]) -> None:
    if not room.done():  # cancelled, if the consumer stopped the producer meanwhile
        room.set_result(None)


def iterate(
    open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterator[T]]],
) -> Generator[T, None, None]:
    """Iterate ``async with open_stream() as s: async for item in s`` on the bridge's loop.

    The whole async iteration runs in one task on the bridge's loop and hands items over a
    bounded buffer. Closing the returned generator (``break``, ``close()``, garbage
    collection) cancels that task, which closes the async stream.
    """
    portal = _get_portal()
    channel: _Channel[T] = _Channel()
    # Not `portal.start_task`: waiting for the task to start would cost a trip across threads.
    future = portal.start_task_soon(channel.run, contextvars.copy_context(), open_stream)
    ended = False
    try:
        yield from channel
        ended = True
        future.result()  # the producer's error, if it failed
    finally:
        if not ended:  # the caller stopped early: cancel the producer and wait for its cleanup
            channel.stop()
            with contextlib.suppress(Exception):
                future.result()
