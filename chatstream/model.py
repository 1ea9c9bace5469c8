"""`BaseChatModel`: a provider writes one async stream; every call is derived from it here.

``astream`` yields the provider's chunks as they come; ``ainvoke`` merges them; ``abatch`` and
``agenerate`` run many calls at once; the sync twins hand these to `chatstream.sync`. Each call
is recorded as one `Run` by the single loop in ``_stream_run``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, cast, overload

import anyio
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from . import runlog, sync
from ._compat import BaseExceptionGroup, Self, TypedDict
from .callbacks import Callbacks
from .errors import ClosedError, InvalidInputError, InvalidParameterError
from .inputs import LanguageModelInput, to_messages
from .outputs import ChatGeneration, LLMResult, RunInfo, token_usage
from .runs import Run, RunObserver
from .streams import ChatStream

if TYPE_CHECKING:
    from types import TracebackType
    from uuid import UUID

    from anyio.streams.memory import MemoryObjectSendStream

    from .messages import AIMessage, AIMessageChunk, BaseMessage
    from .runlog import RunLog, RunLogPatch

__all__ = ["BaseChatModel", "RunConfig"]

R = TypeVar("R")


class RunConfig(TypedDict, total=False):
    """Per-call options, passed as ``config=`` to any call."""

    run_name: str
    """Name of the run (default: the model class name)."""
    run_id: UUID
    """Id for the run (default: a fresh uuid4); in a batch, only for a single input."""
    tags: list[str]
    """Tags added to the model's own."""
    metadata: dict[str, Any]
    """Metadata merged over the model's own."""
    callbacks: list[Any]
    """Handlers notified of this call, in addition to the model's."""
    max_concurrency: int | None
    """How many calls of a batch run at once (default: all)."""


class BaseChatModel(BaseModel, ABC):
    """The base every chat model derives from; documented as the one base to subclass.

    A subclass implements `_astream`, an async generator of `AIMessageChunk`, and declares its
    per-call settings in ``call_params``. Example::

        class Echo(BaseChatModel):
            async def _astream(self, messages, *, stop=None, **params):
                yield AIMessageChunk(messages[-1].text)
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    call_params: ClassVar[frozenset[str]] = frozenset()
    """Settings that a single call may override as keyword arguments (``temperature=0``)."""

    tags: list[str] = Field(default_factory=list)
    """Tags recorded on every run of this model."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Metadata recorded on every run of this model."""
    callbacks: list[Any] = Field(default_factory=list)
    """Handlers notified of every call of this model."""

    _closed: bool = PrivateAttr(default=False)

    @property
    def model_name(self) -> str:
        """The name of the model this instance calls: its ``model`` setting, if it has one."""
        model = self.__dict__.get("model")
        return model if isinstance(model, str) and model else type(self).__name__

    @abstractmethod
    def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        """Stream the answer to ``messages``: the one method a provider writes.

        ``params`` are already checked against ``call_params``. The last chunk carries
        ``finish_reason`` in ``response_metadata`` and the usage in ``usage_metadata``.
        """

    async def _aclose(self) -> None:
        """Release what the provider holds (connections, loaded models); idempotent."""

    # -- one call ---------------------------------------------------------------------------

    def _start(
        self,
        input: LanguageModelInput,
        stop: list[str] | None,
        config: RunConfig | None,
        params: dict[str, Any],
        *,
        where: str = "input",
    ) -> Run:
        # Read from pydantic's private-attribute slot: `self._closed` goes through its slow
        # __getattr__ fallback, which cost more than the rest of starting a run.
        private = self.__pydantic_private__
        if private is not None and private["_closed"]:
            raise ClosedError(f"{type(self).__name__} was closed; create a new model to call it")
        for key in params:
            if key not in self.call_params:
                accepted = ", ".join(sorted(self.call_params)) or "none"
                raise InvalidParameterError(
                    f"{type(self).__name__} has no per-call parameter {key!r} "
                    f"(accepted: {accepted})",
                    where=key,
                )
        config = config or {}
        invocation = {name: getattr(self, name) for name in self.call_params}
        invocation.update(params, model=self.model_name, stop=stop)
        run = Run.create(
            config.get("run_name") or type(self).__name__,
            messages=to_messages(input, where=where),
            invocation_params=invocation,
            tags=[*self.tags, *config.get("tags", ())],
            metadata={**self.metadata, **config.get("metadata", {})},
        )
        if "run_id" in config:
            run.id = config["run_id"]
        return run

    async def _stream_run(
        self,
        run: Run | None,
        input: LanguageModelInput,
        stop: list[str] | None,
        config: RunConfig | None,
        params: dict[str, Any],
        observer: RunObserver | None = None,
    ) -> AsyncGenerator[AIMessageChunk, None]:
        # The one loop every call goes through: it feeds the run each chunk exactly once.
        if run is None:
            run = self._start(input, stop, config, params)
        if observer is not None:
            run.observers.insert(0, observer)
        handlers = config.get("callbacks") if config else None
        callbacks = Callbacks.of(self.callbacks, handlers) if self.callbacks or handlers else None
        run.start()
        if callbacks:
            await callbacks.chat_model_start(run)
        stream = self._astream(run.messages, stop=stop, **params)
        # The run is the current one only while the provider works, so that calls it makes
        # become its children; the caller's context never sees it.
        token = run.enter()
        entered = True
        try:
            async for chunk in stream:
                run.leave(token)
                entered = False
                run.add_chunk(chunk)
                if callbacks:
                    await callbacks.new_token(chunk, run)
                yield chunk
                token = run.enter()
                entered = True
        except Exception as exc:
            error = run.fail(exc)
            if callbacks:
                await callbacks.error(error, run.output if run.items else None, run)
            if error is exc:
                raise
            raise error from exc
        except BaseException as exc:  # cancelled, or closed early by the consumer
            run.fail(exc)
            raise
        finally:
            if entered:
                run.leave(token)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        run.end()
        if callbacks:
            await callbacks.end(run.final_output, run)

    def astream(
        self,
        input: LanguageModelInput,
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> ChatStream[AIMessageChunk]:
        """Stream the answer chunk by chunk, as the provider sends it.

        Closing the stream (``break`` under ``async with``, ``aclose()``, cancellation) closes
        the provider's stream at once. A failure raises with the chunks so far in ``partial``.
        """
        return ChatStream(self._stream_run(None, input, stop, config, params))

    @overload
    def astream_log(
        self,
        input: LanguageModelInput,
        *,
        diff: Literal[True] = True,
        with_streamed_output_list: bool = True,
        include_names: Sequence[str] | None = None,
        include_types: Sequence[str] | None = None,
        include_tags: Sequence[str] | None = None,
        exclude_names: Sequence[str] | None = None,
        exclude_types: Sequence[str] | None = None,
        exclude_tags: Sequence[str] | None = None,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> ChatStream[RunLogPatch]: ...

    @overload
    def astream_log(
        self,
        input: LanguageModelInput,
        *,
        diff: Literal[False],
        with_streamed_output_list: bool = True,
        include_names: Sequence[str] | None = None,
        include_types: Sequence[str] | None = None,
        include_tags: Sequence[str] | None = None,
        exclude_names: Sequence[str] | None = None,
        exclude_types: Sequence[str] | None = None,
        exclude_tags: Sequence[str] | None = None,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> ChatStream[RunLog]: ...

    def astream_log(
        self,
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
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> ChatStream[RunLogPatch] | ChatStream[RunLog]:
        """Stream the call as JSON-patch `RunLogPatch`es, each made as its chunk arrives.

        The first patch replaces ``''`` with the initial state, each chunk adds to
        ``/streamed_output``, and the last sets ``/final_output`` (or, on failure, ``/error``
        with the partial output, before the error is raised). Runs started inside this one
        appear under ``/logs/<name>`` when they pass the include/exclude filters (by name,
        run type and tag). With ``diff=False`` it yields the accumulated `RunLog` instead.
        """
        tracker = runlog.LogTracker(
            with_streamed_output_list=with_streamed_output_list,
            include_names=include_names,
            include_types=include_types,
            include_tags=include_tags,
            exclude_names=exclude_names,
            exclude_types=exclude_types,
            exclude_tags=exclude_tags,
        )
        chunks = self._stream_run(None, input, stop, config, params, observer=tracker)
        # ``diff`` decides which of the two kinds the stream yields; the overloads say so.
        return cast(
            "ChatStream[RunLogPatch] | ChatStream[RunLog]",
            ChatStream(runlog.stream_log(tracker, chunks, diff=diff)),
        )

    async def ainvoke(
        self,
        input: LanguageModelInput,
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> AIMessage:
        """The whole answer: the stream merged into one `AIMessage`."""
        run = self._start(input, stop, config, params)
        await self._drain(run, stop, config, params)
        return _message(run)

    async def _drain(
        self, run: Run, stop: list[str] | None, config: RunConfig | None, params: dict[str, Any]
    ) -> None:
        async with aclosing(self._stream_run(run, run.messages, stop, config, params)) as stream:
            async for _ in stream:
                pass

    # -- many calls -------------------------------------------------------------------------

    @overload
    async def abatch(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        return_exceptions: Literal[False] = False,
        **params: Any,
    ) -> list[AIMessage]: ...

    @overload
    async def abatch(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        return_exceptions: Literal[True],
        **params: Any,
    ) -> list[AIMessage | Exception]: ...

    async def abatch(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        **params: Any,
    ) -> list[AIMessage] | list[AIMessage | Exception]:
        """Answer every input concurrently; results keep the input order.

        At most ``max_concurrency`` calls (or ``config["max_concurrency"]``) run at once. The
        first failure cancels the rest and is raised, unless ``return_exceptions`` puts each
        failure in its place in the results.
        """
        calls = self._batch_calls(inputs, stop, config, params)
        limit = _limit(max_concurrency, config)
        if return_exceptions:
            return await _gather(calls, limit, return_exceptions=True)
        return await _gather(calls, limit, return_exceptions=False)

    def abatch_as_completed(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        **params: Any,
    ) -> AbstractAsyncContextManager[AsyncIterator[tuple[int, AIMessage | Exception]]]:
        """Answer every input concurrently, yielding ``(index, result)`` as each completes.

        It is a context manager, so that the calls still running are cancelled when the block
        ends, however it ends::

            async with model.abatch_as_completed(questions) as results:
                async for index, answer in results:
                    ...
        """
        calls = self._batch_calls(inputs, stop, config, params)
        return _as_completed(calls, _limit(max_concurrency, config), return_exceptions)

    def _batch_calls(
        self,
        inputs: Sequence[LanguageModelInput],
        stop: list[str] | None,
        config: RunConfig | None,
        params: dict[str, Any],
    ) -> list[Callable[[], Awaitable[AIMessage]]]:
        if isinstance(inputs, str) or not isinstance(inputs, Sequence):
            raise InvalidInputError(
                f"expected a list of inputs, got {type(inputs).__name__}", where="inputs"
            )
        return [
            partial(self._invoke_at, item, f"inputs[{i}]", stop, config, params)
            for i, item in enumerate(inputs)
        ]

    async def _invoke_at(
        self,
        input: LanguageModelInput,
        where: str,
        stop: list[str] | None,
        config: RunConfig | None,
        params: dict[str, Any],
    ) -> AIMessage:
        run = self._start(input, stop, config, params, where=where)
        await self._drain(run, stop, config, params)
        return _message(run)

    async def agenerate(
        self,
        messages: Sequence[LanguageModelInput],
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> LLMResult:
        """Answer several conversations concurrently and return an `LLMResult`.

        The result has one generation list per input (one generation per choice when the
        provider returns ``n > 1``, each with ``finish_reason`` in ``generation_info``),
        ``llm_output`` with the summed ``token_usage`` and the ``model_name``, and one `RunInfo`
        per input. ``ainvoke`` returns the first choice.
        """
        if isinstance(messages, str) or not isinstance(messages, Sequence):
            raise InvalidInputError(
                f"expected a list of inputs, got {type(messages).__name__}", where="messages"
            )
        runs = [
            self._start(item, stop, config, params, where=f"messages[{i}]")
            for i, item in enumerate(messages)
        ]
        calls = [partial(self._drain, run, stop, config, params) for run in runs]
        await _gather(calls, _limit(None, config), return_exceptions=False)
        reported = [run.output.response_metadata.get("model_name") for run in runs]
        return LLMResult(
            generations=[_generations(run) for run in runs],
            llm_output={
                "token_usage": token_usage(
                    output.usage_metadata for run in runs for output in run.outputs
                ),
                "model_name": next((name for name in reported if name), self.model_name),
            },
            run=[RunInfo(run_id=run.id) for run in runs],
        )

    # -- lifetime ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release what the model holds; calling it after this raises `ClosedError`."""
        if not self._closed:
            self._closed = True
            await self._aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- sync twins: each only hands its async twin to the bridge ----------------------------

    def invoke(
        self,
        input: LanguageModelInput,
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> AIMessage:
        """Sync `ainvoke`: the whole answer as one `AIMessage`."""
        return sync.run(partial(self.ainvoke, input, stop=stop, config=config, **params))

    __call__ = invoke

    def stream(
        self,
        input: LanguageModelInput,
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> Iterator[AIMessageChunk]:
        """Sync `astream`: chunks as they arrive; closing the iterator stops the call."""
        return sync.iterate(partial(self.astream, input, stop=stop, config=config, **params))

    def stream_log(
        self,
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
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> Iterator[RunLogPatch | RunLog]:
        """Sync `astream_log`."""
        # The same signature as astream_log: hand over every argument as it came.
        options = {key: value for key, value in locals().items() if key not in _NOT_OPTIONS}
        return sync.iterate(partial(self.astream_log, input, **options, **params))

    @overload
    def batch(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        return_exceptions: Literal[False] = False,
        **params: Any,
    ) -> list[AIMessage]: ...

    @overload
    def batch(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        return_exceptions: Literal[True],
        **params: Any,
    ) -> list[AIMessage | Exception]: ...

    def batch(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | None = None,
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
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        **params: Any,
    ) -> Iterator[tuple[int, AIMessage | Exception]]:
        """Sync `abatch_as_completed`: ``(index, result)`` pairs as each call completes."""
        call = partial(self.abatch_as_completed, inputs, stop=stop, config=config, **params)
        return sync.iterate(
            partial(call, max_concurrency=max_concurrency, return_exceptions=return_exceptions)
        )

    def generate(
        self,
        messages: Sequence[LanguageModelInput],
        *,
        stop: list[str] | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> LLMResult:
        """Sync `agenerate`."""
        return sync.run(partial(self.agenerate, messages, stop=stop, config=config, **params))

    def close(self) -> None:
        """Sync `aclose`."""
        sync.run(self.aclose)


_NOT_OPTIONS = frozenset({"self", "input", "params"})


def _message(run: Run, output: AIMessageChunk | None = None) -> AIMessage:
    message = (output or run.output).to_message()
    if message.id is None:
        message = message.model_copy(update={"id": f"run-{run.id}"})
    return message


def _generations(run: Run) -> list[ChatGeneration]:
    generations = []
    for output in run.outputs:
        finish_reason = output.response_metadata.get("finish_reason")
        info = {"finish_reason": finish_reason} if finish_reason is not None else None
        generations.append(ChatGeneration(message=_message(run, output), generation_info=info))
    return generations


def _limit(max_concurrency: int | None, config: RunConfig | None) -> int | None:
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
async def _gather(
    calls: Sequence[Callable[[], Awaitable[R]]],
    limit: int | None,
    *,
    return_exceptions: Literal[False],
) -> list[R]: ...


@overload
async def _gather(
    calls: Sequence[Callable[[], Awaitable[R]]],
    limit: int | None,
    *,
    return_exceptions: Literal[True],
) -> list[R | Exception]: ...


async def _gather(
    calls: Sequence[Callable[[], Awaitable[R]]], limit: int | None, *, return_exceptions: bool
) -> list[R] | list[R | Exception]:
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
async def _as_completed(
    calls: Sequence[Callable[[], Awaitable[R]]], limit: int | None, return_exceptions: bool
) -> AsyncGenerator[AsyncIterator[tuple[int, R | Exception]], None]:
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
