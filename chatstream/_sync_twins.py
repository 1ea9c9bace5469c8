"""The sync twins of `BaseChatModel`'s calls, one function each, made its methods there.

Each only hands its async twin to `chatstream.sync` (at most five lines, no logic of its own),
and has the same signature; tests hold both rules.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Literal, overload

from . import sync

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Generator, Iterable, Sequence

    from .inputs import LanguageModelInput
    from .messages import AIMessage, AIMessageChunk
    from .model import BaseChatModel, RunConfig
    from .outputs import LLMResult, RowResult
    from .runlog import RunLog, RunLogPatch

_NOT_OPTIONS = frozenset({"self", "input", "params"})
"""``stream_log``'s arguments that are not options of ``astream_log``."""

__all__ = [
    "batch",
    "batch_as_completed",
    "close",
    "generate",
    "invoke",
    "map",
    "stream",
    "stream_log",
]


def invoke(
    self: BaseChatModel,
    input: LanguageModelInput,
    *,
    stop: list[str] | str | None = None,
    config: RunConfig | None = None,
    **params: Any,
) -> AIMessage:
    """Sync `ainvoke`: the whole answer as one `AIMessage`."""
    return sync.run(partial(self.ainvoke, input, stop=stop, config=config, **params))


def stream(
    self: BaseChatModel,
    input: LanguageModelInput,
    *,
    stop: list[str] | str | None = None,
    config: RunConfig | None = None,
    **params: Any,
) -> Generator[AIMessageChunk, None, None]:
    """Sync `astream`: chunks as they arrive; closing the iterator stops the call."""
    return sync.iterate(partial(self.astream, input, stop=stop, config=config, **params))


def stream_log(
    self: BaseChatModel,
    input: LanguageModelInput,
    *,
    diff: bool = True,
    with_streamed_output_list: bool = True,
    include_names: Sequence[str] | None = None,
    include_types: Sequence[str] | None = None,
    include_tags: Sequence[str] | None = None,
    exclude_names: Sequence[str] | None = None,
    exclude_types: Sequence[str] | None = None,
    exclude_tags: Sequence[str] | None = None,
    stop: list[str] | str | None = None,
    config: RunConfig | None = None,
    **params: Any,
) -> Generator[RunLogPatch | RunLog, None, None]:
    """Sync `astream_log`."""
    # The same signature as astream_log: hand over every argument as it came.
    options = {key: value for key, value in locals().items() if key not in _NOT_OPTIONS}
    return sync.iterate(partial(self.astream_log, input, **options, **params))


def map(
    self: BaseChatModel,
    inputs: Iterable[LanguageModelInput] | AsyncIterable[LanguageModelInput],
    *,
    max_concurrency: int,
    ordered: bool = False,
    return_exceptions: bool = True,
    stop: list[str] | str | None = None,
    config: RunConfig | None = None,
    **params: Any,
) -> Generator[RowResult, None, None]:
    """Sync `amap`: a `RowResult` per input; closing the iterator cancels what still runs."""
    call = partial(self.amap, inputs, max_concurrency=max_concurrency, ordered=ordered)
    return sync.iterate(
        partial(call, return_exceptions=return_exceptions, stop=stop, config=config, **params)
    )


@overload
def batch(
    self: BaseChatModel,
    inputs: Sequence[LanguageModelInput],
    *,
    stop: list[str] | str | None = None,
    config: RunConfig | None = None,
    max_concurrency: int | None = None,
    return_exceptions: Literal[False] = False,
    **params: Any,
) -> list[AIMessage]: ...


@overload
def batch(
    self: BaseChatModel,
    inputs: Sequence[LanguageModelInput],
    *,
    stop: list[str] | str | None = None,
    config: RunConfig | None = None,
    max_concurrency: int | None = None,
    return_exceptions: Literal[True],
    **params: Any,
) -> list[AIMessage | Exception]: ...


def batch(
    self: BaseChatModel,
    inputs: Sequence[LanguageModelInput],
    *,
    stop: list[str] | str | None = None,
    config: RunConfig | None = None,
    max_concurrency: int | None = None,
    return_exceptions: bool = False,
    **params: Any,
) -> list[AIMessage] | list[AIMessage | Exception]:
    """Sync `abatch`."""
    call = partial(self.abatch, inputs, stop=stop, config=config, **params)
    return sync.run(
        partial(call, max_concurrency=max_concurrency, return_exceptions=return_exceptions)
    )


def batch_as_completed(
    self: BaseChatModel,
    inputs: Sequence[LanguageModelInput],
    *,
    stop: list[str] | str | None = None,
    config: RunConfig | None = None,
    max_concurrency: int | None = None,
    return_exceptions: bool = False,
    **params: Any,
) -> Generator[tuple[int, AIMessage | Exception], None, None]:
    """Sync `abatch_as_completed`: ``(index, result)`` pairs as each call completes."""
    call = partial(self.abatch_as_completed, inputs, stop=stop, config=config, **params)
    return sync.iterate(
        partial(call, max_concurrency=max_concurrency, return_exceptions=return_exceptions)
    )


def generate(
    self: BaseChatModel,
    messages: Sequence[LanguageModelInput],
    *,
    stop: list[str] | str | None = None,
    config: RunConfig | None = None,
    **params: Any,
) -> LLMResult:
    """Sync `agenerate`."""
    return sync.run(partial(self.agenerate, messages, stop=stop, config=config, **params))


def close(self: BaseChatModel) -> None:
    """Sync `aclose`."""
    sync.run(self.aclose)
