"""Many calls of one model: ``amap``'s rows, and the batch calls built on them.

`BaseChatModel`'s ``amap``, ``abatch``, ``abatch_as_completed`` and ``agenerate`` hand over
to these.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from ._concurrency import Outcome, concurrency_limit, map_bounded
from .errors import InvalidInputError
from .outputs import LLMResult, RowResult, RunInfo, token_usage

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator
    from contextlib import AbstractAsyncContextManager

    from .inputs import LanguageModelInput
    from .messages import AIMessage
    from .model import BaseChatModel, RunConfig
    from .runs import Run

__all__ = ["abatch", "agenerate", "amap", "as_completed", "bounded_rows"]


def amap(
    model: BaseChatModel,
    inputs: Iterable[LanguageModelInput] | AsyncIterable[LanguageModelInput],
    *,
    max_concurrency: int,
    ordered: bool,
    return_exceptions: bool,
    stop: list[str] | str | None,
    config: RunConfig | None,
    params: dict[str, Any],
) -> AbstractAsyncContextManager[AsyncIterator[RowResult]]:
    """The rows of `BaseChatModel.amap` (see there)."""
    if isinstance(inputs, str) or not isinstance(inputs, (Iterable, AsyncIterable)):
        raise InvalidInputError(
            f"expected an iterable of inputs, got {type(inputs).__name__}", where="inputs"
        )
    limit = concurrency_limit(max_concurrency, None)
    if limit is None:
        raise InvalidInputError("amap needs a bound", where="max_concurrency")
    return bounded_rows(model, inputs, limit, ordered, return_exceptions, stop, config, params)


def bounded_rows(
    model: BaseChatModel,
    inputs: Iterable[LanguageModelInput] | AsyncIterable[LanguageModelInput],
    limit: int,
    ordered: bool,
    return_exceptions: bool,
    stop: list[str] | str | None,
    config: RunConfig | None,
    params: dict[str, Any],
) -> AbstractAsyncContextManager[AsyncIterator[RowResult]]:
    """A `RowResult` per input, at most ``limit`` calls at once."""
    call = partial(_row_at, model, stop=stop, config=config, params=params)
    return _rows(map_bounded(inputs, call, limit, ordered=ordered), return_exceptions)


async def abatch(
    model: BaseChatModel,
    inputs: Sequence[LanguageModelInput],
    *,
    max_concurrency: int | None,
    return_exceptions: bool,
    stop: list[str] | str | None,
    config: RunConfig | None,
    params: dict[str, Any],
) -> list[Any]:
    """The answers of `BaseChatModel.abatch`, in input order."""
    results: list[Any] = [None] * len(_sequence(inputs))
    async with _every_row(model, inputs, max_concurrency, stop, config, params) as rows:
        async for row in rows:
            results[row.index] = _answer(row, return_exceptions)
    return results


@asynccontextmanager
async def as_completed(
    model: BaseChatModel,
    inputs: Sequence[LanguageModelInput],
    *,
    max_concurrency: int | None,
    return_exceptions: bool,
    stop: list[str] | str | None,
    config: RunConfig | None,
    params: dict[str, Any],
) -> AsyncGenerator[AsyncIterator[tuple[int, AIMessage | Exception]], None]:
    """The ``(index, answer)`` pairs of `BaseChatModel.abatch_as_completed`."""
    async with _every_row(model, inputs, max_concurrency, stop, config, params) as stream:

        async def pairs() -> AsyncGenerator[tuple[int, AIMessage | Exception], None]:
            async for row in stream:
                yield row.index, _answer(row, return_exceptions)

        yield pairs()


async def agenerate(
    model: BaseChatModel,
    messages: Sequence[LanguageModelInput],
    *,
    stop: list[str] | str | None,
    config: RunConfig | None,
    params: dict[str, Any],
) -> LLMResult:
    """The `LLMResult` of `BaseChatModel.agenerate`."""
    if isinstance(messages, str) or not isinstance(messages, Sequence):
        raise InvalidInputError(
            f"expected a list of inputs, got {type(messages).__name__}", where="messages"
        )
    runs = [
        model._start(item, stop, config, params, where=f"messages[{i}]")
        for i, item in enumerate(messages)
    ]
    limit = concurrency_limit(None, config) or max(len(runs), 1)
    drain = model._drain
    async with map_bounded(runs, lambda _, run: drain(run), limit, ordered=False) as outcomes:
        async for outcome in outcomes:
            if outcome.error is not None:
                raise outcome.error
    reported = [run.output.response_metadata.get("model_name") for run in runs]
    return LLMResult(
        generations=[run.final_output.generations[0] for run in runs],
        llm_output={
            "token_usage": token_usage(
                output.usage_metadata for run in runs for output in run.outputs
            ),
            "model_name": next((name for name in reported if name), model.model_name),
        },
        run=[RunInfo(run_id=run.id) for run in runs],
    )


def _every_row(
    model: BaseChatModel,
    inputs: Sequence[LanguageModelInput],
    max_concurrency: int | None,
    stop: list[str] | str | None,
    config: RunConfig | None,
    params: dict[str, Any],
) -> AbstractAsyncContextManager[AsyncIterator[RowResult]]:
    # A list's calls all start at once unless bounded, as abatch always did.
    limit = concurrency_limit(max_concurrency, config) or max(len(_sequence(inputs)), 1)
    return bounded_rows(model, inputs, limit, False, True, stop, config, params)


async def _row_at(
    model: BaseChatModel,
    index: int,
    input: LanguageModelInput,
    *,
    stop: list[str] | str | None,
    config: RunConfig | None,
    params: dict[str, Any],
) -> RowResult:
    try:
        run = model._start(input, stop, config, params, where=f"inputs[{index}]")
    except Exception as exc:  # this input cannot start a call: its row says why
        return RowResult(index, None, exc)
    try:
        await model._drain(run)
    except Exception as exc:
        return _row(index, run, exc)
    return _row(index, run, None)


def _sequence(inputs: Sequence[LanguageModelInput]) -> Sequence[LanguageModelInput]:
    if isinstance(inputs, str) or not isinstance(inputs, Sequence):
        raise InvalidInputError(
            f"expected a list of inputs, got {type(inputs).__name__}", where="inputs"
        )
    return inputs


def _row(index: int, run: Run, error: Exception | None) -> RowResult:
    return RowResult(
        index,
        run.final_message() if run.items else None,
        error,
        run.id,
        run.usage,
        run.start_time,
        run.first_token_time,
        run.end_time,
        max(run.attempts, 1),
    )


def _answer(row: RowResult, return_exceptions: bool) -> AIMessage | Exception:
    if row.error is None:
        assert row.message is not None  # a successful call has an answer
        return row.message
    if not return_exceptions:
        raise row.error
    return row.error


@asynccontextmanager
async def _rows(
    outcomes: AbstractAsyncContextManager[AsyncIterator[Outcome[RowResult]]],
    return_exceptions: bool,
) -> AsyncGenerator[AsyncIterator[RowResult], None]:
    async with outcomes as stream:

        async def rows() -> AsyncGenerator[RowResult, None]:
            async for outcome in stream:
                row = outcome.value
                assert row is not None  # _row_at returns every failure as a row
                if row.error is not None and not return_exceptions:
                    raise row.error
                yield row

        yield rows()
