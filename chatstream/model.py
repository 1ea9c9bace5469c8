"""`BaseChatModel`: a provider writes one async stream; every call is derived from it here.

``astream`` yields the provider's chunks as they come; ``ainvoke`` merges them; ``abatch`` and
``agenerate`` run many calls at once; the sync twins hand these to `chatstream.sync`. Each call
is recorded as one `Run` by the single loop in ``_stream_run``.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast, overload

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from . import runlog, sync
from ._compat import Self, TypedDict
from ._concurrency import as_completed, concurrency_limit, gather
from ._config import check_config, unknown_setting
from .callbacks import Callbacks
from .errors import ClosedError, InvalidInputError
from .inputs import LanguageModelInput, to_messages
from .outputs import LLMResult, RunInfo, token_usage
from .runs import Run
from .settings import SettingSpec, resolve, settings_of
from .streams import ChatStream

if TYPE_CHECKING:
    from types import TracebackType
    from uuid import UUID

    from .messages import AIMessage, AIMessageChunk, BaseMessage
    from .runlog import RunLog, RunLogPatch

__all__ = ["BaseChatModel", "RunConfig"]


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

    A subclass implements `_astream`, an async generator of `AIMessageChunk`, and declares the
    settings a call may override as fields marked `chatstream.settings.PerCall`. Example::

        class Echo(BaseChatModel):
            temperature: Annotated[float | None, PerCall()] = None

            async def _astream(self, messages, *, stop=None, **settings):
                yield AIMessageChunk(messages[-1].text)
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    settings_spec: ClassVar[SettingSpec] = settings_of({})
    """The per-call settings, derived from the fields marked `PerCall` (never set by hand)."""
    call_params: ClassVar[frozenset[str]] = frozenset()
    """The names of the per-call settings (``settings_spec.names``)."""

    tags: list[str] = Field(default_factory=list)
    """Tags recorded on every run of this model."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Metadata recorded on every run of this model."""
    callbacks: list[Any] = Field(default_factory=list)
    """Handlers notified of every call of this model."""

    _closed: bool = PrivateAttr(default=False)

    def __init__(self, /, **data: Any) -> None:
        fields = type(self).model_fields
        for key in data:
            if key not in fields:
                raise unknown_setting(type(self).__name__, key, fields)
        super().__init__(**data)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Derive the per-call settings from the fields, once per class."""
        super().__pydantic_init_subclass__(**kwargs)
        if "call_params" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} sets call_params; mark the per-call settings' fields "
                "Annotated[..., PerCall()] instead (chatstream.settings.PerCall)"
            )
        cls.settings_spec = settings_of(cls.model_fields)
        cls.call_params = cls.settings_spec.names

    # -- travelling: pickle and deepcopy ----------------------------------------------------

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        # Private attributes are per-process state (HTTP sessions of event loops, locks, the
        # closed flag): never sent, rebuilt lazily where the model lands.
        state["__pydantic_private__"] = None
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self.model_post_init(None)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        clone = type(self).__new__(type(self))
        clone.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return clone

    @property
    def model_name(self) -> str:
        """The name of the model this instance calls: its ``model`` setting, if it has one."""
        model = self.__dict__.get("model")
        return model if isinstance(model, str) and model else type(self).__name__

    @abstractmethod
    def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **settings: Any
    ) -> AsyncIterator[AIMessageChunk]:
        """Stream the answer to ``messages``: the one method a provider writes.

        ``stop`` and ``settings`` are the call's resolved settings: every per-call setting of
        the model (``None`` when unset), a call's values over the model's. The last chunk
        carries ``finish_reason`` in ``response_metadata`` and the usage in ``usage_metadata``.
        """

    async def _aclose(self) -> None:
        """Release what the provider holds (connections, loaded models); idempotent."""

    # -- one call ---------------------------------------------------------------------------

    def _start(
        self,
        input: LanguageModelInput,
        stop: list[str] | str | None,
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
        settings = resolve(self, self.settings_spec, stop, params)
        config = cast("RunConfig", check_config(config)) if config else _NO_CONFIG
        run = Run.create(
            config.get("run_name") or type(self).__name__,
            messages=to_messages(input, where=where),
            invocation_params={"model": self.model_name, **settings},
            settings=settings,
            tags=[*self.tags, *config.get("tags", ())],
            metadata={**self.metadata, **config.get("metadata", {})},
        )
        handlers = config.get("callbacks")
        if self.callbacks or handlers:
            run.observers.append(Callbacks([*self.callbacks, *(handlers or ())]))
        if "run_id" in config:
            run.id = config["run_id"]
        return run

    async def _stream_run(self, run: Run) -> AsyncGenerator[AIMessageChunk, None]:
        # The one loop every call goes through: it feeds the run each chunk exactly once.
        stream: AsyncIterator[AIMessageChunk] | None = None
        token = None
        observing = True  # a failure now is an observer's (a raise_error handler): not wrapped
        try:
            if (pending := run.start()) is not None:
                await pending
            stream = self._astream(run.messages, **run.settings)
            # The run is the current one only while the provider works, so that calls it
            # makes become its children; the caller's context never sees it.
            token = run.enter()
            observing = False
            async for chunk in stream:
                run.leave(token)
                token = None
                if (pending := run.add_chunk(chunk)) is not None:
                    observing = True
                    await pending
                    observing = False
                yield chunk
                token = run.enter()
        except Exception as exc:
            error, pending = run.fail(exc, wrap=not observing)
            if pending is not None:
                await pending
            if error is exc:
                raise
            raise error from exc
        except BaseException as exc:  # cancelled, or closed early by the consumer
            _, pending = run.fail(exc)
            if pending is not None:  # nothing can be awaited now; observers return None here
                getattr(pending, "close", lambda: None)()
            raise
        finally:
            if token is not None:
                run.leave(token)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if (pending := run.end()) is not None:
            await pending

    def astream(
        self,
        input: LanguageModelInput,
        *,
        stop: list[str] | str | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> ChatStream[AIMessageChunk]:
        """Stream the answer chunk by chunk, as the provider sends it.

        Closing the stream (``break`` under ``async with``, ``aclose()``, cancellation) closes
        the provider's stream at once. A failure raises with the chunks so far in ``partial``.
        """
        run = self._start(input, stop, config, params)
        return ChatStream(self._stream_run(run), run)

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
        stop: list[str] | str | None = None,
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
        stop: list[str] | str | None = None,
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
        stop: list[str] | str | None = None,
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
        run = self._start(input, stop, config, params)
        run.observers.insert(0, tracker)
        # ``diff`` decides which of the two kinds the stream yields; the overloads say so.
        return cast(
            "ChatStream[RunLogPatch] | ChatStream[RunLog]",
            ChatStream(runlog.stream_log(tracker, self._stream_run(run), diff=diff), run),
        )

    async def ainvoke(
        self,
        input: LanguageModelInput,
        *,
        stop: list[str] | str | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> AIMessage:
        """The whole answer: the stream merged into one `AIMessage`."""
        run = self._start(input, stop, config, params)
        await self._drain(run)
        return run.final_message()

    async def _drain(self, run: Run) -> None:
        async with aclosing(self._stream_run(run)) as stream:
            async for _ in stream:
                pass

    # -- many calls -------------------------------------------------------------------------

    @overload
    async def abatch(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | str | None = None,
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
        stop: list[str] | str | None = None,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        return_exceptions: Literal[True],
        **params: Any,
    ) -> list[AIMessage | Exception]: ...

    async def abatch(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | str | None = None,
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
        limit = concurrency_limit(max_concurrency, config)
        if return_exceptions:
            return await gather(calls, limit, return_exceptions=True)
        return await gather(calls, limit, return_exceptions=False)

    def abatch_as_completed(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | str | None = None,
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
        return as_completed(calls, concurrency_limit(max_concurrency, config), return_exceptions)

    def _batch_calls(
        self,
        inputs: Sequence[LanguageModelInput],
        stop: list[str] | str | None,
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
        stop: list[str] | str | None,
        config: RunConfig | None,
        params: dict[str, Any],
    ) -> AIMessage:
        run = self._start(input, stop, config, params, where=where)
        await self._drain(run)
        return run.final_message()

    async def agenerate(
        self,
        messages: Sequence[LanguageModelInput],
        *,
        stop: list[str] | str | None = None,
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
        calls = [partial(self._drain, run) for run in runs]
        await gather(calls, concurrency_limit(None, config), return_exceptions=False)
        reported = [run.output.response_metadata.get("model_name") for run in runs]
        return LLMResult(
            generations=[run.final_output.generations[0] for run in runs],
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
        stop: list[str] | str | None = None,
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
        stop: list[str] | str | None = None,
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
        stop: list[str] | str | None = None,
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
        stop: list[str] | str | None = None,
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
        stop: list[str] | str | None = None,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        return_exceptions: Literal[True],
        **params: Any,
    ) -> list[AIMessage | Exception]: ...

    def batch(
        self,
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
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        stop: list[str] | str | None = None,
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
        stop: list[str] | str | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> LLMResult:
        """Sync `agenerate`."""
        return sync.run(partial(self.agenerate, messages, stop=stop, config=config, **params))

    def close(self) -> None:
        """Sync `aclose`."""
        sync.run(self.aclose)


_NOT_OPTIONS = frozenset({"self", "input", "params"})

_NO_CONFIG: RunConfig = {}
