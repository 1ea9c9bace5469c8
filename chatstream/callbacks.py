"""User callback handlers: the `CallbackHandler` protocol, and the run observer that calls them.

Async handler methods are awaited in order. Sync ones run in order on a thread of the call's own
(its *lane*) behind a bounded buffer, so a slow handler never stalls the event loop or another
call, and a handler that itself calls a model (sync or async) cannot deadlock. A handler that
raises is logged and the stream goes on, unless the handler sets ``raise_error = True``.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel

from .errors import InputTypeError

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable, Sequence

    from .messages import AIMessageChunk
    from .outputs import LLMResult
    from .runs import Run

__all__ = ["CallbackHandler", "Callbacks", "check_handlers"]


_LANE_SIZE = 1024
"""Sync-handler calls that may wait for the lane before the stream waits for it."""

_EVENTS = ("on_chat_model_start", "on_llm_new_token", "on_llm_end", "on_llm_error")


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


def check_handlers(handlers: object, where: str) -> list[object]:
    """``handlers`` as a list, or an `InputTypeError` naming ``where`` when it is not one."""
    if isinstance(handlers, (list, tuple)):
        for index, handler in enumerate(handlers):
            if isinstance(handler, (str, bytes)) or not any(hasattr(handler, e) for e in _EVENTS):
                raise InputTypeError(
                    f"{type(handler).__name__} is not a callback handler (it has none of "
                    f"{', '.join(_EVENTS)})",
                    where=f"{where}[{index}]",
                )
        return list(handlers)
    raise InputTypeError(
        f"expected a list of callback handlers, got {type(handlers).__name__}", where=where
    )


class _Lane:
    """A thread of one call that runs its sync handler calls in order, then ends.

    The thread starts with the first job and stops when the call is over, so no call waits
    behind another's handlers.
    """

    __slots__ = ("_closed", "_jobs", "_ready", "_thread")

    def __init__(self) -> None:
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def is_full(self) -> bool:
        return len(self._jobs) >= _LANE_SIZE

    def put(self, job: Callable[[], None]) -> None:
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="chatstream-callbacks")
            self._thread.daemon = True
            self._thread.start()

    def wait_for_room(self) -> None:
        """Block (a worker thread, never the loop) until the lane has room again."""
        with self._ready:
            self._ready.wait_for(lambda: len(self._jobs) < _LANE_SIZE or self._closed)

    def close(self) -> None:
        """Let the thread end once the jobs queued so far are done."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def _serve(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._jobs or self._closed)
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._ready.notify_all()
            job()


def _report(handler: object, event: str, exc: Exception) -> bool:
    """Log a handler's failure; whether the call should fail too."""
    if getattr(handler, "raise_error", False):
        return True
    _logger().warning("callback %s.%s raised %r", type(handler).__name__, event, exc, exc_info=exc)
    return False


class Callbacks:
    """The run observer that notifies the user handlers of one call."""

    __slots__ = ("_async", "_failure", "_lane", "_sync")

    inherit = False

    def __init__(self, handlers: Sequence[object]) -> None:
        self._async: dict[str, list[tuple[object, Callable[..., Any]]]] = {}
        self._sync: dict[str, list[tuple[object, Callable[..., Any]]]] = {}
        self._failure: list[Exception] = []
        self._lane: _Lane | None = None
        for handler in handlers:
            for event in _EVENTS:
                method = getattr(handler, event, None)
                if method is None or _is_noop(handler, event):
                    continue
                target = self._async if _is_async(method) else self._sync
                target.setdefault(event, []).append((handler, method))
        if self._sync:
            self._lane = _Lane()

    @classmethod
    def of(cls, *handler_lists: Sequence[object] | None) -> Callbacks | None:
        """The callbacks for these handlers, or ``None`` when there are none."""
        handlers = [handler for handlers in handler_lists if handlers for handler in handlers]
        return cls(handlers) if handlers else None

    def on_start(self, run: Run) -> Awaitable[None] | None:
        """Notify ``on_chat_model_start``."""
        return self._send("on_chat_model_start", (run,))

    def on_chunk(self, run: Run, chunk: AIMessageChunk) -> Awaitable[None] | None:
        """Notify ``on_llm_new_token``."""
        if "on_llm_new_token" in self._async or "on_llm_new_token" in self._sync:
            return self._send("on_llm_new_token", (chunk.text, chunk, run))
        return None

    def on_end(self, run: Run) -> Awaitable[None] | None:
        """Notify ``on_llm_end`` and wait until the sync handlers have caught up."""
        return self._finish("on_llm_end", (run.final_output, run), quiet=False)

    def on_error(self, run: Run, error: BaseException) -> Awaitable[None] | None:
        """Notify ``on_llm_error`` (not for cancellation, which cannot wait for handlers)."""
        if not isinstance(error, Exception):
            if self._lane is not None:
                self._lane.close()
            return None
        partial = run.output if run.items else None
        return self._finish("on_llm_error", (error, partial, run), quiet=True)

    def _send(self, event: str, args: tuple[Any, ...]) -> Awaitable[None] | None:
        lane = self._lane
        full = False
        for handler, method in self._sync.get(event, ()):
            assert lane is not None  # sync handlers come with a lane
            lane.put(_Job(self, handler, method, event, args))
            full = full or lane.is_full()
        if event in self._async or full or self._failure:
            return self._send_async(event, args, full)
        return None

    async def _send_async(self, event: str, args: tuple[Any, ...], full: bool) -> None:
        for handler, method in self._async.get(event, ()):
            try:
                await method(*args)
            except Exception as exc:
                if _report(handler, event, exc):
                    raise
        if full and self._lane is not None:
            # The handlers are slower than the stream: wait on a worker thread, never the loop.
            await anyio.to_thread.run_sync(self._lane.wait_for_room)
        if self._failure:
            raise self._failure.pop(0)

    async def _finish(self, event: str, args: tuple[Any, ...], *, quiet: bool) -> None:
        try:
            pending = self._send(event, args)
            if pending is not None:
                await pending
            await self._drain()
        except Exception as exc:
            if not quiet:
                raise
            # A raise_error handler failing while the call fails anyway: the call's own error
            # is what is raised.
            _logger().warning("callback failed while reporting %r: %r", args[0], exc)

    async def _drain(self) -> None:
        lane = self._lane
        if lane is None:
            return
        import anyio.from_thread  # only for calls with sync handlers

        done = anyio.Event()
        token = anyio.lowlevel.current_token()
        lane.put(lambda: anyio.from_thread.run_sync(done.set, token=token))
        lane.close()
        with anyio.CancelScope(shield=True):
            await done.wait()
        if self._failure:
            raise self._failure.pop(0)


class _Job:
    """One sync handler call, run on the lane."""

    __slots__ = ("args", "callbacks", "event", "handler", "method")

    def __init__(
        self,
        callbacks: Callbacks,
        handler: object,
        method: Callable[..., Any],
        event: str,
        args: tuple[Any, ...],
    ) -> None:
        self.callbacks, self.handler, self.method = callbacks, handler, method
        self.event, self.args = event, args

    def __call__(self) -> None:
        try:
            self.method(*self.args)
        except Exception as exc:
            if _report(self.handler, self.event, exc):
                self.callbacks._failure.append(exc)


def _logger() -> logging.Logger:
    import logging  # only when a handler fails: `import chatstream` need not load logging

    return logging.getLogger("chatstream.callbacks")


def _is_async(method: Callable[..., Any]) -> bool:
    import inspect  # only when handlers are given: `import chatstream` need not load inspect

    return inspect.iscoroutinefunction(method)


def _is_noop(handler: object, event: str) -> bool:
    # Methods inherited unchanged from the protocol do nothing: skip them (no thread hop).
    return getattr(type(handler), event, None) is getattr(CallbackHandler, event)
