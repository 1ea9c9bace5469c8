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
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.lowlevel

from .errors import ChatStreamError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Generator
    from contextlib import AbstractAsyncContextManager

    from anyio.abc import TaskStatus
    from anyio.from_thread import BlockingPortal
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["iterate", "run"]

T = TypeVar("T")

_BUFFER = 256
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


async def _produce(
    context: contextvars.Context,
    open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterator[T]]],
    send: MemoryObjectSendStream[T],
    *,
    task_status: TaskStatus[anyio.CancelScope],
) -> None:
    with anyio.CancelScope() as scope:
        task_status.started(scope)

        async def pump() -> None:
            async with send, open_stream() as stream:
                async for item in stream:
                    # Bounded all the same: a full buffer makes the producer await send(). Not
                    # yielding while there is room saves one loop turn per chunk, which was
                    # most of the cost of a sync stream.
                    try:
                        send.send_nowait(item)
                    except anyio.WouldBlock:
                        await send.send(item)

        await _in_context(context, pump)


async def _receive_batch(receive: MemoryObjectReceiveStream[T]) -> tuple[list[T], bool]:
    # One trip across threads costs 100-300 µs here, so take what is ready and give a fast
    # producer a few turns of the loop to add more; a slow producer (a network) ends the batch
    # at once. The end of the stream travels with the last batch, saving a trip.
    batch: list[T] = []
    idle = 0
    try:
        batch.append(await receive.receive())
        while len(batch) < _BUFFER and idle < _IDLE_TURNS:
            try:
                batch.append(receive.receive_nowait())
                idle = 0
            except anyio.WouldBlock:
                idle += 1
                await anyio.lowlevel.checkpoint()
    except anyio.EndOfStream:
        receive.close()
        return batch, True
    return batch, False


async def _stop(scope: anyio.CancelScope, receive: MemoryObjectReceiveStream[T]) -> None:
    scope.cancel()
    receive.close()


def iterate(
    open_stream: Callable[[], AbstractAsyncContextManager[AsyncIterator[T]]],
) -> Generator[T, None, None]:
    """Iterate ``async with open_stream() as s: async for item in s`` on the bridge's loop.

    The whole async iteration runs in one task on the bridge's loop and hands items over a
    bounded memory stream. Closing the returned generator (``break``, ``close()``, garbage
    collection) cancels that task, which closes the async stream.
    """
    portal = _get_portal()
    send, receive = anyio.create_memory_object_stream[T](_BUFFER)
    future, scope = portal.start_task(_produce, contextvars.copy_context(), open_stream, send)
    ended = False
    try:
        while not ended:
            batch, ended = portal.call(_receive_batch, receive)
            yield from batch
        future.result()  # the producer's error, if it failed
    finally:
        if not ended:  # the caller stopped early: cancel the producer and wait for its cleanup
            portal.call(_stop, scope, receive)
            with contextlib.suppress(Exception):
                future.result()
