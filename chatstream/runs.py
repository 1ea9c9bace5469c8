"""`Run`: the record of one call, fed each chunk once as it streams, and who observes it.

A run knows its inputs, invocation parameters, times, chunks, merged output, usage and error.
Everything that watches calls (run logs, tracers) is a `RunObserver` of runs; nothing re-derives
them. The run being executed is kept in a context variable, so calls made inside it (or inside a
``chatstream.trace`` block) become its children.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, final

from ._context import CURRENT_RUN
from .errors import ChatStreamError, StreamInterruptedError
from .messages import (
    CHOICE_INDEX,
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    Content,
    UsageMetadata,
    merge_chunks,
    merge_parts,
)
from .outputs import ChatGeneration, LLMResult, token_usage

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Awaitable, Sequence
    from uuid import UUID

__all__ = [
    "Run",
    "RunObserver",
    "current_run",
    "global_observers",
    "merge_choices",
]

_CURRENT: contextvars.ContextVar[Run | None] = CURRENT_RUN


def current_run() -> Run | None:
    """The run whose code is executing now (a model's stream or a traced step), if any."""
    return _CURRENT.get()


class RunObserver(Protocol):
    """Watches runs as they happen: the one way anything (run logs, tracers, callbacks) is told.

    Each method is called on the event loop, in the order the observers were added, and may
    return an awaitable that the run awaits before it goes on (user callbacks do; run logs and
    tracers return ``None`` and must be quick). An observer with ``inherit = True`` also sees
    every run started inside the runs it observes.
    """

    inherit: bool

    def on_start(self, run: Run) -> Awaitable[None] | None:
        """The run started."""

    def on_chunk(self, run: Run, chunk: AIMessageChunk) -> Awaitable[None] | None:
        """The run streamed a chunk (already recorded on the run)."""

    def on_end(self, run: Run) -> Awaitable[None] | None:
        """The run finished normally."""

    def on_error(self, run: Run, error: BaseException) -> Awaitable[None] | None:
        """The run failed or was cancelled; ``run.error`` is set."""


async def _await_all(pending: list[Awaitable[None]]) -> None:
    for awaitable in pending:
        await awaitable


def _gather(pending: list[Awaitable[None]] | None) -> Awaitable[None] | None:
    if pending is None:
        return None
    return pending[0] if len(pending) == 1 else _await_all(pending)


def global_observers() -> list[RunObserver]:
    """Observers that watch every run: the tracer, when ``CHATSTREAM_TRACING`` turns it on."""
    if not (os.environ.get("CHATSTREAM_TRACING") or "").strip():
        return []
    # Imported only when asked for, so that `import chatstream` never loads the tracing sinks.
    from .tracing import tracer_from_env

    tracer = tracer_from_env()
    return [] if tracer is None else [tracer]


def merge_choices(items: Sequence[str | AIMessageChunk]) -> list[AIMessageChunk]:
    """Merge a run's chunks per choice (one merged chunk when no chunk names a choice).

    Items are chunks, or plain strings standing for content-only chunks (see `Run.add_chunk`).
    """
    groups: dict[int, tuple[list[Content], list[AIMessageChunk]]] = {}
    for item in items:
        if isinstance(item, str):
            groups.setdefault(0, ([], []))[0].append(item)
            continue
        index = item.response_metadata.get(CHOICE_INDEX, 0) if item.response_metadata else 0
        contents, chunks = groups.setdefault(index, ([], []))
        contents.append(item.content)
        chunks.append(item)
    if not groups:
        return [merge_parts((), ())]
    return [merge_parts(*groups[index]) for index in sorted(groups)]


@final
@dataclass(eq=False, slots=True)
class Run:
    """One call: created when the call starts, fed every chunk, closed at its end.

    Model calls are ``run_type="chat_model"``; ``chatstream.trace`` steps are ``"chain"`` runs
    with free-form ``inputs``/``outputs``. Times are seconds since the epoch (``time.time()``).
    """

    name: str
    """The model class name, the ``run_name`` given in the call's config, or the step's name."""
    messages: list[BaseMessage] = field(default_factory=list)
    """A model call's input, as messages."""
    invocation_params: dict[str, Any] = field(default_factory=dict)
    """The model and the settings the call used (never a secret)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """A model call's resolved settings, as handed to the provider's ``_astream``."""
    parent_run_id: UUID | None = None
    """The enclosing run, when the call ran inside another run or a traced step."""
    run_type: str = "chat_model"
    """``"chat_model"`` for model calls, ``"chain"`` for traced steps."""
    tags: list[str] = field(default_factory=list)
    """Tags from the model and the call's config."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Metadata from the model and the call's config."""
    start_time: float = field(default_factory=time.time)
    """When the call started."""
    first_token_time: float | None = None
    """When the first chunk arrived."""
    end_time: float | None = None
    """When the call ended, successfully or not."""
    items: list[str | AIMessageChunk] = field(default_factory=list)
    """Every chunk streamed so far, in order: a content-only chunk as its plain string (which
    the garbage collector never scans, so a long stream stays cheap), any other as itself.
    `chunks` rebuilds the chunks."""
    error: BaseException | None = None
    """What ended the call, if it did not end normally (cancellation included)."""
    step_inputs: dict[str, Any] | None = None
    """A traced step's inputs (model calls have ``messages`` instead)."""
    step_outputs: Any = None
    """A traced step's return value."""
    observers: list[RunObserver] = field(default_factory=list)
    """Who is told about this run as it happens."""
    attempts: int = 0
    """HTTP requests sent for this call, retries included (0 for a model that sends none)."""
    cache: Any = None
    """The response cache this call reads and writes (a `chatstream.cache.Cache`), if any."""
    _outputs: list[AIMessageChunk] | None = None
    _final_output: LLMResult | None = None
    _id: UUID | None = None
    _last_id: str | None = None  # the message id of the last chunk kept whole
    # Which items stand for a chunk that repeated that id (1) rather than had none (0); made
    # at the first such chunk. Bytes: a flag per chunk that the collector never scans.
    _repeats: bytearray | None = None

    @property
    def id(self) -> UUID:
        """A uuid4 made when first read (a plain stream never pays for it), or the config's."""
        if self._id is None:
            self._id = uuid.uuid4()
        return self._id

    @id.setter
    def id(self, value: UUID) -> None:
        self._id = value

    @classmethod
    def create(cls, name: str, **fields: Any) -> Run:
        """A run whose parent and observers come from the run executing now, if any."""
        parent = _CURRENT.get()
        observers = global_observers()
        if parent is not None:
            fields.setdefault("parent_run_id", parent.id)
            observers = [o for o in parent.observers if o.inherit] + observers
        return cls(name=name, observers=observers, **fields)

    @property
    def chunks(self) -> list[AIMessageChunk]:
        """Every chunk streamed so far, in order (rebuilt from `items` on each call)."""
        chunks: list[AIMessageChunk] = []
        repeats = self._repeats
        last_id = None
        for position, item in enumerate(self.items):
            if not isinstance(item, str):
                chunks.append(item)
                last_id = item.id or last_id
            elif repeats is not None and repeats[position]:
                chunks.append(AIMessageChunk(item, id=last_id))
            else:
                chunks.append(AIMessageChunk(item))
        return chunks

    @property
    def chunk_count(self) -> int:
        """How many chunks have been streamed."""
        return len(self.items)

    @property
    def inputs(self) -> dict[str, Any]:
        """The inputs as JSON-ready data: ``{"messages": [...]}`` for a model call."""
        if self.step_inputs is not None:
            return self.step_inputs
        return {"messages": [message.model_dump(mode="json") for message in self.messages]}

    @property
    def outputs(self) -> list[AIMessageChunk]:
        """The chunks merged per choice, in choice order (several only when ``n > 1``).

        Providers mark the chunks of a multi-choice response with ``response_metadata
        ["choice_index"]``; chunks without it belong to choice 0.
        """
        if self._outputs is not None:
            return self._outputs
        merged = merge_choices(self.items)
        if self.end_time is not None:
            self._outputs = merged
        return merged

    @property
    def output(self) -> AIMessageChunk:
        """The first choice's chunks merged so far (merged once, when asked for after the end)."""
        return self.outputs[0]

    def final_message(self, choice: int = 0) -> AIMessage:
        """The answer of one choice so far as an `AIMessage`: the one place chunks become it.

        Its ``id`` is the provider's response id, else ``run-<run id>``.
        """
        message = self.outputs[choice].to_message()
        if message.id is None:
            message = message.model_copy(update={"id": f"run-{self.id}"})
        return message

    @property
    def final_output(self) -> LLMResult:
        """The outcome as an `LLMResult` with one generation per choice (``run`` left empty)."""
        if self._final_output is not None:
            return self._final_output
        result = LLMResult(
            generations=[[self._generation(choice) for choice in range(len(self.outputs))]],
            llm_output={
                "token_usage": token_usage(output.usage_metadata for output in self.outputs),
                "model_name": self.output.response_metadata.get("model_name")
                or self.invocation_params.get("model"),
            },
        )
        if self.end_time is not None:
            self._final_output = result
        return result

    @property
    def usage(self) -> UsageMetadata | None:
        """Token usage reported by the provider, summed over the chunks of every choice."""
        outputs = self.outputs
        return (merge_chunks(outputs) if len(outputs) > 1 else outputs[0]).usage_metadata

    @property
    def latency(self) -> float | None:
        """Seconds from start to end, once ended."""
        return None if self.end_time is None else self.end_time - self.start_time

    def _generation(self, choice: int) -> ChatGeneration:
        message = self.final_message(choice)
        finish_reason = message.response_metadata.get("finish_reason")
        info = {"finish_reason": finish_reason} if finish_reason is not None else None
        return ChatGeneration(message=message, generation_info=info)

    def enter(self) -> contextvars.Token[Run | None]:
        """Make this the current run (for code that runs on its behalf); see `leave`."""
        return _CURRENT.set(self)

    @staticmethod
    def leave(token: contextvars.Token[Run | None]) -> None:
        """Restore the current run saved by `enter`."""
        _CURRENT.reset(token)

    def start(self) -> Awaitable[None] | None:
        """Start the clock and tell the observers; await what this returns, if anything."""
        self.start_time = time.time()
        return self._tell("on_start")

    def add_chunk(self, chunk: AIMessageChunk) -> Awaitable[None] | None:
        """Record one streamed chunk and tell the observers; await what this returns."""
        if self.first_token_time is None:
            self.first_token_time = time.time()
        # A chunk that repeats the id of the last one kept whole (OpenAI names every chunk)
        # adds nothing but its text: keep the text alone. Kept whole, each would be a few
        # GC-tracked objects more, and the collector's passes would grow with the stream.
        # The fields read from the instance dict once: seven attribute lookups on a pydantic
        # model cost a good part of recording a chunk.
        fields = chunk.__dict__
        chunk_id = fields["id"]
        plain = (
            fields["usage_metadata"] is None
            and not fields["response_metadata"]
            and not fields["tool_call_chunks"]
            and not fields["additional_kwargs"]
            and (chunk_id is None or chunk_id == self._last_id)
            and fields["name"] is None
            and type(fields["content"]) is str
        )
        repeats = self._repeats
        if plain:
            if chunk_id is not None and repeats is None:
                repeats = self._repeats = bytearray(len(self.items))
            if repeats is not None:
                repeats.append(chunk_id is not None)
            self.items.append(fields["content"])
        else:
            if repeats is not None:
                repeats.append(0)
            self.items.append(chunk)
            if chunk_id is not None:
                self._last_id = chunk_id
        # Spelt out rather than through `_tell`: this runs once per chunk.
        pending = None
        for observer in self.observers:
            if (waiting := observer.on_chunk(self, chunk)) is not None:
                pending = [*(pending or ()), waiting]
        return _gather(pending)

    def end(self, outputs: Any = None) -> Awaitable[None] | None:
        """Mark the run finished normally (a step passes its return value) and tell observers."""
        self.end_time = time.time()
        self.step_outputs = outputs
        return self._tell("on_end")

    def fail(
        self, error: BaseException, *, wrap: bool = True
    ) -> tuple[BaseException, Awaitable[None] | None]:
        """Mark the run failed; the exception to raise in its place, and what to await.

        A chatstream error is returned as it is, with ``partial`` set to the output so far. Any
        other exception after chunks had arrived is wrapped in `StreamInterruptedError` (unless
        ``wrap`` is false: an observer's own failure) so that the partial output is not lost;
        before any chunk it is returned unchanged, and so is cancellation.
        """
        self.end_time = time.time()
        self.error = error
        raised = self._error_to_raise(error) if wrap else error
        return raised, self._tell("on_error", raised)

    def _tell(self, event: str, *args: Any) -> Awaitable[None] | None:
        pending = None
        for observer in self.observers:
            if (waiting := getattr(observer, event)(self, *args)) is not None:
                pending = [*(pending or ()), waiting]
        return _gather(pending)

    def _error_to_raise(self, error: BaseException) -> BaseException:
        if not self.items:
            return error
        partial = self.output
        if isinstance(error, ChatStreamError):
            if error.partial is None:
                error.partial = partial
            return error
        if isinstance(error, Exception):
            return StreamInterruptedError(
                f"the stream broke after {len(self.items)} chunks: {error!r}", partial=partial
            )
        return error
