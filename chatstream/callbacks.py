"""User callback handlers: the `CallbackHandler` protocol and how calls notify handlers.

Async handler methods are awaited in order. Sync ones run in order on one worker thread behind a
bounded queue, so a slow handler never stalls the event loop. A handler that raises is logged
and the stream goes on, unless the handler sets ``raise_error = True``.
"""

from __future__ import annotations

import functools
import queue
import threading
from typing import TYPE_CHECKING, Any, Protocol

import anyio

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable, Sequence

    from .messages import AIMessageChunk
    from .outputs import LLMResult
    from .runs import Run

__all__ = ["CallbackHandler", "Callbacks"]


_QUEUE_SIZE = 1024
"""Sync-handler calls that may wait for the worker before the stream waits for it."""


class CallbackHandler(Protocol):
    """What a callback handler may implement; every method is optional and may be async.

    Subclass it to inherit no-op methods, or pass any object with some of these methods.
    Example::

        class Printer(CallbackHandler):
            def on_llm_new_token(self, token, chunk, run):
                print(token, end="", flush=True)

        model.invoke("Hi", config={"callbacks": [Printer()]})
    """

    raise_error: bool = False
    """Whether an exception in this handler should fail the call instead of being logged."""

    def on_chat_model_start(self, run: Run) -> Awaitable[None] | None:
        """A model call started; ``run.messages`` and ``run.invocation_params`` are set."""
        return None

    def on_llm_new_token(
        self, token: str, chunk: AIMessageChunk, run: Run
    ) -> Awaitable[None] | None:
        """A chunk arrived; ``token`` is its text."""
        return None

    def on_llm_end(self, result: LLMResult, run: Run) -> Awaitable[None] | None:
        """The call finished; ``result`` has the generations, usage and model name."""
        return None

    def on_llm_error(
        self, error: BaseException, partial: AIMessageChunk | None, run: Run
    ) -> Awaitable[None] | None:
        """The call failed; ``partial`` holds the chunks that had arrived, merged."""
        return None


class _Worker:
    """One daemon thread running sync handler calls in the order they were queued."""

    def __init__(self) -> None:
        self.jobs: queue.Queue[Callable[[], None]] = queue.Queue(_QUEUE_SIZE)
        threading.Thread(target=self._serve, name="chatstream-callbacks", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self.jobs.get()()


_worker: _Worker | None = None


def _get_worker() -> _Worker:
    global _worker
    if _worker is None:
        # Two loops racing here would start two workers; each runs its jobs in order and a
        # call keeps the one it saw, so no lock is needed.
        _worker = _Worker()
    return _worker


def _report(handler: object, event: str, exc: Exception) -> bool:
    """Log a handler's failure; whether the call should fail too."""
    if getattr(handler, "raise_error", False):
        return True
    _logger().warning("callback %s.%s raised %r", type(handler).__name__, event, exc, exc_info=exc)
    return False


class Callbacks:
    """The handlers of one call, and the notifications it sends them."""

    __slots__ = ("_async", "_failure", "_jobs", "_pending", "_sync")

    def __init__(self, handlers: Sequence[object]) -> None:
        self._async: dict[str, list[tuple[object, Callable[..., Any]]]] = {}
        self._sync: dict[str, list[tuple[object, Callable[..., Any]]]] = {}
        self._failure: list[Exception] = []
        self._pending = False
        self._jobs: queue.Queue[Callable[[], None]] | None = None
        for handler in handlers:
            for event in ("on_chat_model_start", "on_llm_new_token", "on_llm_end", "on_llm_error"):
                method = getattr(handler, event, None)
                if method is None or _is_noop(handler, event):
                    continue
                target = self._async if _is_async(method) else self._sync
                target.setdefault(event, []).append((handler, method))
        if self._sync:
            self._jobs = _get_worker().jobs  # one worker per call keeps its jobs in order

    @classmethod
    def of(cls, *handler_lists: Sequence[object] | None) -> Callbacks | None:
        """The callbacks for these handlers, or ``None`` when there are none."""
        handlers = [handler for handlers in handler_lists if handlers for handler in handlers]
        return cls(handlers) if handlers else None

    async def chat_model_start(self, run: Run) -> None:
        """Notify ``on_chat_model_start``."""
        await self._send("on_chat_model_start", run)

    async def new_token(self, chunk: AIMessageChunk, run: Run) -> None:
        """Notify ``on_llm_new_token``."""
        if "on_llm_new_token" in self._async or "on_llm_new_token" in self._sync:
            await self._send("on_llm_new_token", chunk.text, chunk, run)

    async def end(self, result: LLMResult, run: Run) -> None:
        """Notify ``on_llm_end`` and wait until sync handlers have caught up."""
        await self._send("on_llm_end", result, run)
        await self._drain()

    async def error(self, error: BaseException, partial: AIMessageChunk | None, run: Run) -> None:
        """Notify ``on_llm_error`` and wait until sync handlers have caught up.

        A failure of a handler here is only logged: the call's own error is what is raised.
        """
        try:
            await self._send("on_llm_error", error, partial, run)
            await self._drain()
        except Exception as exc:  # a raise_error handler failing while the call fails anyway
            _logger().warning("callback failed while reporting %r: %r", error, exc)

    async def _send(self, event: str, *args: Any) -> None:
        for handler, method in self._async.get(event, ()):
            try:
                await method(*args)
            except Exception as exc:
                if _report(handler, event, exc):
                    raise
        for handler, method in self._sync.get(event, ()):
            await self._queue(functools.partial(self._call, handler, method, event, args))
        if self._failure:
            raise self._failure.pop(0)

    def _call(
        self, handler: object, method: Callable[..., Any], event: str, args: tuple[Any, ...]
    ) -> None:
        try:
            method(*args)
        except Exception as exc:
            if _report(handler, event, exc):
                self._failure.append(exc)

    async def _queue(self, job: Callable[[], None]) -> None:
        jobs = self._jobs
        assert jobs is not None  # only sync handlers queue jobs, and they set it
        self._pending = True
        try:
            jobs.put_nowait(job)
        except queue.Full:
            # The handler is slower than the stream: wait on a thread, never on the loop.
            await anyio.to_thread.run_sync(jobs.put, job)

    async def _drain(self) -> None:
        if not self._pending:
            return
        done = threading.Event()
        await self._queue(done.set)
        await anyio.to_thread.run_sync(done.wait)
        self._pending = False
        if self._failure:
            raise self._failure.pop(0)


def _logger() -> logging.Logger:
    import logging  # only when a handler fails: `import chatstream` need not load logging

    return logging.getLogger("chatstream.callbacks")


def _is_async(method: Callable[..., Any]) -> bool:
    import inspect  # only when handlers are given: `import chatstream` need not load inspect

    return inspect.iscoroutinefunction(method)


def _is_noop(handler: object, event: str) -> bool:
    # Methods inherited unchanged from the protocol do nothing: skip them (no thread hop).
    return getattr(type(handler), event, None) is getattr(CallbackHandler, event)
