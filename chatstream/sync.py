"""The only bridge from sync code to the async API: one event loop on a daemon thread.

Sync methods hand their async twin to `run` or `iterate`, which execute it as a task on that
loop; a stream's items come back over a thread-safe queue. This works from plain scripts, from
many threads at once, and from a thread whose own event loop is running (a notebook cell),
because the work never runs on the caller's loop.

Tasks are started with one ``call_soon_threadsafe``, not an anyio portal: the portal's
``start_task_soon`` waits for the loop to have started the task, a round trip across threads
(40-80 µs) on every sync call.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import os
import queue
import threading
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar, final

import anyio

from .errors import ChatStreamError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
    from concurrent.futures import Future
    from contextlib import AbstractAsyncContextManager

__all__ = ["iterate", "run"]

T = TypeVar("T")

_BUFFER = 112
"""Items a sync ``stream`` may hold before the producer waits for the consumer.

A trade between two costs. Each wait is a round trip across threads: 40-150 µs on two cores
(wake-ups, and caches moving between cores), paid once per ``_BUFFER`` items. But the items
held count towards the collector's young generation (700 allocations; a chunk is about six):
past it, a young collection finds them held, promotes them, and so brings on full
collections (one of 80-90 ms with langchain loaded every ~100k chunks at 128 held, +0.9 µs a
chunk). At 112, a collection rarely finds them.
"""


class _Loop(NamedTuple):
    """The bridge's running loop, its thread, and how to end it."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    stop: Callable[[], None]  # called on the loop
    pid: int


_lock = threading.Lock()
_bridge: _Loop | None = None


def _serve(ready: threading.Event, holder: list[_Loop]) -> None:
    # Imported here: asyncio loads logging, which `import chatstream` need not.
    from asyncio import get_running_loop

    async def main() -> None:
        stopped = anyio.Event()
        holder.append(
            _Loop(get_running_loop(), threading.current_thread(), stopped.set, os.getpid())
        )
        ready.set()
        await stopped.wait()

    # Once `main` returns, the runner cancels the tasks still running and lets them close
    # what they hold (HTTP sessions) before the loop closes.
    anyio.run(main, backend="asyncio")


def _get_loop() -> asyncio.AbstractEventLoop:
    global _bridge
    bridge = _bridge
    if bridge is not None and bridge.pid == os.getpid():
        if threading.current_thread() is bridge.thread:
            raise ChatStreamError(
                "a sync chatstream method was called on chatstream's own event loop thread "
                "(from a callback?); await the async method (ainvoke, astream, ...) instead"
            )
        return bridge.loop
    with _lock:
        if _bridge is None or _bridge.pid != os.getpid():  # a forked child has no such thread
            ready = threading.Event()
            holder: list[_Loop] = []
            thread = threading.Thread(
                target=_serve, args=(ready, holder), name="chatstream-sync", daemon=True
            )
            thread.start()
            ready.wait()
            _bridge = holder[0]
        return _bridge.loop


@atexit.register
def _shutdown() -> None:
    # Let the loop close what it holds (HTTP sessions) instead of dying mid-write with the thread.
    bridge = _bridge
    if bridge is None or bridge.pid != os.getpid() or not bridge.thread.is_alive():
        return
    try:
        bridge.loop.call_soon_threadsafe(bridge.stop)
    except RuntimeError:  # the loop closed already
        return
    bridge.thread.join(timeout=2)


def _submit(func: Callable[[], Awaitable[T]]) -> Future[T]:
    """Start ``func()`` as a task on the bridge's loop, in the caller's context, at once.

    Cancelling the returned future cancels the task.
    """
    # Here, not at the top: concurrent.futures loads logging, which `import chatstream` need not.
    from concurrent.futures import Future

    loop = _get_loop()
    future: Future[T] = Future()
    loop.call_soon_threadsafe(_start, loop, func, future, contextvars.copy_context())
    return future


def _start(
    loop: asyncio.AbstractEventLoop,
    func: Callable[[], Awaitable[T]],
    future: Future[T],
    context: contextvars.Context,
) -> None:
    if future.cancelled():
        return
    task = context.run(loop.create_task, _awaited(func))  # the task runs in a copy of it
    task.add_done_callback(partial(_settle, future))
    future.add_done_callback(partial(_cancel, loop, task))


def _cancel(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], future: Future[Any]) -> None:
    # Runs in the thread that cancels the future (or in `_start`, if that happened meanwhile).
    if future.cancelled():
        with contextlib.suppress(RuntimeError):  # the loop closed: the task ended with it
            loop.call_soon_threadsafe(task.cancel)


async def _awaited(func: Callable[[], Awaitable[T]]) -> T:
    return await func()


def _settle(future: Future[T], task: asyncio.Task[T]) -> None:
    if task.cancelled():
        future.cancel()
    elif future.set_running_or_notify_cancel():  # False: the caller cancelled it meanwhile
        if (error := task.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(task.result())


def run(func: Callable[[], Awaitable[T]]) -> T:
    """Run ``func()`` on the bridge's loop and return its result, from any thread.

    If the caller is interrupted (``KeyboardInterrupt``), the async call is cancelled.
    """
    future = _submit(func)
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

    Items cross in batches over a thread-safe queue: the producer collects them while it
    runs and puts what it has whenever it would wait (for the network, say; a callback the
    loop runs once the producer's task suspends) or once it holds `_BUFFER` items. A slow
    stream's items so cross one by one, as soon as they exist; a fast one's cost a put and a
    wake-up per batch, not per item. With `_BUFFER` items not yet taken, the producer waits
    for room, which the consumer gives back once it has taken half of them. Iterated
    batches go back to the producer (`_spent`), which frees their items.
    """

    __slots__ = (
        "_lock",
        "_loop",
        "_pending",
        "_queue",
        "_room",
        "_scope",
        "_sent",
        "_spent",
        "_stopped",
        "_taken",
    )

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders `_room` and `_scope` across the threads
        self._room: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        self._pending: list[T] = []  # collected, not yet put (the producer's only)
        self._sent = 0  # items put (written by the producer only)
        self._taken = 0  # items the consumer has taken (written by the consumer only)
        self._spent: list[list[T]] = []  # iterated batches (appended by the consumer only)

    async def run(
        self, open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterator[T]]]
    ) -> None:
        """The producer task: pump the stream, then put the end."""
        # Here, not at the top: asyncio loads logging, which `import chatstream` need not.
        from asyncio import get_running_loop

        try:
            with anyio.CancelScope() as scope:
                loop = get_running_loop()
                with self._lock:
                    self._loop, self._scope = loop, scope
                    if self._stopped:  # the consumer stopped before this task started
                        scope.cancel()
                async with open_stream() as stream:
                    await self._pump(stream, loop)
        finally:
            self._flush()  # what came before an error, too
            self._queue.put(_END)

    def stop(self) -> None:
        """From the consumer: cancel the producer (at once, or as soon as it starts)."""
        with self._lock:
            self._stopped = True
            if self._loop is not None and self._scope is not None:
                self._loop.call_soon_threadsafe(self._scope.cancel)

    async def _pump(self, stream: AsyncIterator[T], loop: asyncio.AbstractEventLoop) -> None:
        flush = self._flush
        async for item in stream:
            pending = self._pending
            if not pending:
                loop.call_soon(flush)  # runs once this task suspends
            pending.append(item)
            if len(pending) >= _BUFFER or self._sent - self._taken >= _BUFFER:
                flush()
                with self._lock:  # checked again: the consumer may have taken items since
                    full = self._sent - self._taken >= _BUFFER
                    room = self._room = loop.create_future() if full else None
                if room is not None:
                    await room
                    self._free_spent()

    def _free_spent(self) -> None:
        # The consumer hands the batches it has iterated back: their chunks are freed here,
        # where they were made, so their memory is not written from the consumer's core too.
        spent = self._spent
        while spent:
            spent.pop().clear()

    def _flush(self) -> None:
        self._free_spent()
        if pending := self._pending:
            self._pending = []
            self._sent += len(pending)
            self._queue.put(pending)

    def __iter__(self) -> Iterator[list[T]]:
        """The batches, each taken once the one before has been iterated."""
        get = self._queue.get
        while (batch := get()) is not _END:
            yield batch
            self._taken += len(batch)
            self._spent.append(batch)
            # A producer waiting for room set `_room` once `_BUFFER` items were put and not
            # taken, so this sees it before the queue runs dry.
            if self._room is not None and self._sent - self._taken <= _BUFFER // 2:
                with self._lock:
                    room, self._room = self._room, None
                if room is not None:
                    room.get_loop().call_soon_threadsafe(_free, room)


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
    channel: _Channel[T] = _Channel()
    future = _submit(partial(channel.run, open_stream))
    ended = False
    try:
        for batch in channel:
            yield from batch
        ended = True
        future.result()  # the producer's error, if it failed
    finally:
        if not ended:  # the caller stopped early: cancel the producer and wait for its cleanup
            channel.stop()
            with contextlib.suppress(Exception):
                future.result()
