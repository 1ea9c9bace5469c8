"""`BaseChatModel`: a provider writes one async stream; every call is derived from it here.

``astream`` yields the provider's chunks as they come; ``ainvoke`` merges them; ``abatch`` and
``agenerate`` run many calls at once; the sync twins hand these to `chatstream.sync`. Each call
is recorded as one `Run` by the single loop in ``_stream_run``.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager, aclosing
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast, overload

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from . import _batch, _model_tools, _sync_twins, runlog
from ._compat import Self, TypedDict, override
from ._config import check_config, unknown_setting
from ._context import CURRENT_RUN
from .cache import Cache, cache_key, cached_stream, get_default_cache
from .callbacks import Callbacks
from .errors import ClosedError
from .inputs import LanguageModelInput, to_messages
from .ratelimit import RateLimiter, estimate_tokens, limited_stream
from .runs import Run
from .settings import SettingSpec, resolve, settings_of
from .streams import ChatStream

if TYPE_CHECKING:
    from collections.abc import (
        AsyncGenerator,
        AsyncIterable,
        AsyncIterator,
        Callable,
        Iterable,
        Mapping,
        Sequence,
    )
    from types import TracebackType
    from uuid import UUID

    from .messages import AIMessage, AIMessageChunk, BaseMessage
    from .outputs import LLMResult, RowResult
    from .runlog import RunLog, RunLogPatch
    from .tools import Tool  # noqa: TC004 - pydantic never evaluates private attributes' annotations

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
    cache: bool
    """``False``: this call neither reads nor writes the model's response cache."""


class BaseChatModel(BaseModel, ABC):
    """The base every chat model derives from; documented as the one base to subclass.

    A subclass implements `_astream`, an async generator of `AIMessageChunk`, and declares the
    settings a call may override as fields marked `chatstream.settings.PerCall`. Example::

        class Echo(BaseChatModel):
            temperature: Annotated[float | None, PerCall()] = None

            async def _astream(self, messages, *, stop=None, **settings):
                yield AIMessageChunk(messages[-1].text)
    """

    # defer_build: `import chatstream` builds no pydantic validator at all, so pydantic's plugin
    # discovery (importlib.metadata and a scan of every installed distribution's entry points)
    # waits for the first model class that is built. Only this abstract base defers: see below.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, defer_build=True)

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
    rate_limiter: RateLimiter | None = None
    """Requests/tokens-per-minute budgets this model's calls wait for (see
    `chatstream.ratelimit`); share one between models to share the budget."""
    cache: Cache | bool | None = None
    """The response cache of this model's calls: a `chatstream.cache.Cache`; ``None`` or
    ``True`` for the default one (`chatstream.cache.set_default_cache`), if any; ``False``
    for none. A call opts out with ``config={"cache": False}``."""

    _closed: bool = PrivateAttr(default=False)
    _bound_tools: tuple[Tool, ...] = PrivateAttr(default=())

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

    @override
    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy of this model with ``update`` applied, as pydantic's `BaseModel.model_copy`.

        The copy's private state is rebuilt from its own settings, as after unpickling (its
        closed flag and bound tools kept): it has an HTTP client of its own, so closing the
        copy (a `bind_tools` result, say) leaves this model open, and the other way round.
        """
        copied = super().model_copy(update=update, deep=deep)
        copied.model_post_init(None)
        return copied

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
        cache = self.cache
        if cache is not False and config.get("cache", True):
            run.cache = get_default_cache() if cache is None or cache is True else cache
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
            stream = self._open_stream(run)
            # The run is the current one only while the provider works, so that calls it
            # makes become its children; the caller's context never sees it.
            # The context variable's own methods, not Run.enter/leave: two calls less a chunk.
            enter, leave = CURRENT_RUN.set, CURRENT_RUN.reset
            token = enter(run)
            observing = False
            async for chunk in stream:
                leave(token)
                token = None
                if (pending := run.add_chunk(chunk)) is not None:
                    observing = True
                    await pending
                    observing = False
                yield chunk
                token = enter(run)
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
                CURRENT_RUN.reset(token)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if (pending := run.end()) is not None:
            await pending

    def _open_stream(self, run: Run) -> AsyncIterator[AIMessageChunk]:
        """The provider's stream for ``run``, or the recorded one when the cache has it."""
        open_stream: Callable[[], AsyncIterator[AIMessageChunk]]
        open_stream = partial(self._astream, run.messages, **run.settings)
        limiter = self.rate_limiter
        if limiter is not None:
            texts = [message.text for message in run.messages]
            tokens = estimate_tokens(texts, run.settings.get("max_tokens"))
            open_stream = partial(limited_stream, limiter, tokens, open_stream)
        cache = run.cache
        if cache is None:
            return open_stream()
        key = cache_key(type(self).__name__, self.model_name, run.settings, run.messages)
        return cached_stream(cache, key, open_stream)  # a hit spends no rate-limit budget

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

    def amap(
        self,
        inputs: Iterable[LanguageModelInput] | AsyncIterable[LanguageModelInput],
        *,
        max_concurrency: int,
        ordered: bool = False,
        return_exceptions: bool = True,
        stop: list[str] | str | None = None,
        config: RunConfig | None = None,
        **params: Any,
    ) -> AbstractAsyncContextManager[AsyncIterator[RowResult]]:
        """Answer every input, at most ``max_concurrency`` at once, yielding a `RowResult` each.

        ``inputs`` may be any iterable or async iterable, read lazily: an input is taken only
        when a call may start, so memory stays O(``max_concurrency``) however long the input
        (a generator of a million prompts is fine). Rows come as calls complete, or in input
        order with ``ordered=True`` (a finished row then waits for those before it, holding
        its place). A failed call is a row with ``error`` (and the partial answer), unless
        ``return_exceptions=False`` makes the first failure raise. It is a context manager, so
        that the calls still running are cancelled when the block ends, however it ends::

            async with model.amap(prompts, max_concurrency=16) as rows:
                async for row in rows:
                    print(row.index, row.ok, row.message and row.message.text, row.usage)
        """
        return _batch.amap(
            self,
            inputs,
            max_concurrency=max_concurrency,
            ordered=ordered,
            return_exceptions=return_exceptions,
            stop=stop,
            config=config,
            params=params,
        )

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
        """Answer every input concurrently; results keep the input order (`amap`, collected).

        At most ``max_concurrency`` calls (or ``config["max_concurrency"]``; default: all)
        run at once. The first failure cancels the rest and is raised, unless
        ``return_exceptions`` puts each failure in its place in the results.
        """
        return await _batch.abatch(
            self,
            inputs,
            max_concurrency=max_concurrency,
            return_exceptions=return_exceptions,
            stop=stop,
            config=config,
            params=params,
        )

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
        return _batch.as_completed(
            self,
            inputs,
            max_concurrency=max_concurrency,
            return_exceptions=return_exceptions,
            stop=stop,
            config=config,
            params=params,
        )

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
        return await _batch.agenerate(self, messages, stop=stop, config=config, params=params)

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

    # -- sync twins: each only hands its async twin to the bridge (chatstream._sync_twins) -

    invoke = _sync_twins.invoke
    stream = _sync_twins.stream
    stream_log = _sync_twins.stream_log
    map = _sync_twins.map
    batch = _sync_twins.batch
    batch_as_completed = _sync_twins.batch_as_completed
    generate = _sync_twins.generate
    close = _sync_twins.close
    __call__ = _sync_twins.invoke

    # -- tools and structured output (chatstream._model_tools) ------------------------------

    bind_tools = _model_tools.bind_tools
    with_structured_output = _model_tools.with_structured_output
    tool_loop = _model_tools.tool_loop


# Subclasses (the providers' and users' models) inherit the config without defer_build, so each
# is built when it is defined, as before, and a field pydantic cannot handle fails there.
BaseChatModel.model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

_NO_CONFIG: RunConfig = {}
