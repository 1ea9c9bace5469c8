"""Parent runs for your own code: ``with chatstream.trace("step"):`` and ``@traceable``.

Model calls made inside become the step's child runs (through a context variable, so this holds
across ``abatch`` tasks and the sync bridge). Steps are traced like model calls when tracing is on.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .runs import Run

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

__all__ = ["trace", "traceable"]

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def trace(
    name: str,
    *,
    inputs: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Iterator[Run]:
    """Open a step run; calls inside it become its children.

    Works in sync and async code (it only sets a context variable). Set ``run.step_outputs`` in
    the block to record what the step produced. Example::

        with chatstream.trace("answer", inputs={"question": q}) as step:
            reply = await model.ainvoke(q)
            step.step_outputs = reply.text
    """
    run = Run.create(
        name,
        run_type="chain",
        step_inputs=inputs if inputs is not None else {},
        tags=list(tags or ()),
        metadata=dict(metadata or {}),
    )
    _drop(run.start())
    token = run.enter()
    try:
        yield run
    except BaseException as exc:
        _drop(run.fail(exc)[1])
        raise
    finally:
        run.leave(token)
    _drop(run.end(run.step_outputs))


def _drop(pending: Awaitable[None] | None) -> None:
    # A sync step cannot wait for an observer (a durable tracer's commit): its run is queued
    # all the same, and the awaitable is closed unawaited rather than left to warn.
    close = getattr(pending, "close", None)
    if close is not None:
        close()


@overload
def traceable(func: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...
@overload
def traceable(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def traceable(
    *, name: str | None = None, tags: list[str] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def traceable(
    func: Callable[P, Any] | None = None,
    /,
    *,
    name: str | None = None,
    tags: list[str] | None = None,
) -> Any:
    """Decorate a function (sync or async) so that each call is a step run.

    The step's inputs are the call's arguments and its outputs the return value. Use bare
    (``@traceable``) or with options (``@traceable(name="retrieve", tags=["rag"])``).
    """

    def decorate(function: Callable[P, Any]) -> Callable[P, Any]:
        step = name or function.__qualname__

        def inputs(*args: Any, **kwargs: Any) -> dict[str, Any]:
            bound = inspect.signature(function).bind_partial(*args, **kwargs)
            return {key: _jsonable(value) for key, value in bound.arguments.items()}

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with trace(step, inputs=inputs(*args, **kwargs), tags=tags) as run:
                    run.step_outputs = _jsonable(result := await function(*args, **kwargs))
                return result

            return run_async

        @functools.wraps(function)
        def run_sync(*args: P.args, **kwargs: P.kwargs) -> Any:
            with trace(step, inputs=inputs(*args, **kwargs), tags=tags) as run:
                run.step_outputs = _jsonable(result := function(*args, **kwargs))
            return result

        return run_sync

    return decorate if func is None else decorate(func)


def _jsonable(value: Any) -> Any:
    # Steps take arbitrary objects; keep JSON types and messages, describe the rest.
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return repr(value)
