"""`Run`: the record of one model call, fed each chunk once as it streams.

A run knows its inputs, invocation parameters, times, chunks, merged output, usage and error.
Everything that observes calls (callbacks, run logs, tracing) reads runs; nothing re-derives them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, final

from .errors import ChatStreamError, StreamInterruptedError
from .messages import AIMessageChunk, BaseMessage, UsageMetadata, merge_chunks

if TYPE_CHECKING:
    from uuid import UUID

__all__ = ["CHOICE_INDEX", "Run", "merge_choices"]

CHOICE_INDEX = "choice_index"
"""The ``response_metadata`` key that marks which choice a chunk belongs to when ``n > 1``."""


def merge_choices(chunks: list[AIMessageChunk]) -> list[AIMessageChunk]:
    """Merge chunks per choice; a single merged chunk when no chunk names a choice."""
    groups: dict[int, list[AIMessageChunk]] = {}
    for chunk in chunks:
        index = chunk.response_metadata.get(CHOICE_INDEX, 0) if chunk.response_metadata else 0
        groups.setdefault(index, []).append(chunk)
    if len(groups) <= 1:
        return [merge_chunks(chunks)]
    return [merge_chunks(groups[index]) for index in sorted(groups)]


@final
@dataclass(eq=False, slots=True)
class Run:
    """One model call: created when the call starts, fed every chunk, closed at its end.

    Times are seconds since the epoch (``time.time()``).
    """

    name: str
    """The model class name, or the ``run_name`` given in the call's config."""
    messages: list[BaseMessage]
    """The input, as messages."""
    invocation_params: dict[str, Any]
    """The model and the parameters the call used (never a secret)."""
    id: UUID = field(default_factory=uuid.uuid4)
    """A fresh uuid4, unless the config gave one."""
    parent_run_id: UUID | None = None
    """The enclosing run, when the call ran inside a traced step."""
    run_type: str = "chat_model"
    """Always ``"chat_model"`` for model calls."""
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
    chunks: list[AIMessageChunk] = field(default_factory=list)
    """Every chunk streamed so far, in order."""
    error: BaseException | None = None
    """What ended the call, if it did not end normally (cancellation included)."""
    _outputs: list[AIMessageChunk] | None = None

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """The input messages as JSON-ready dicts."""
        return [message.model_dump(mode="json") for message in self.messages]

    @property
    def outputs(self) -> list[AIMessageChunk]:
        """The chunks merged per choice, in choice order (several only when ``n > 1``).

        Providers mark the chunks of a multi-choice response with ``response_metadata
        ["choice_index"]``; chunks without it belong to choice 0.
        """
        if self._outputs is not None:
            return self._outputs
        merged = merge_choices(self.chunks)
        if self.end_time is not None:
            self._outputs = merged
        return merged

    @property
    def output(self) -> AIMessageChunk:
        """The first choice's chunks merged so far (merged once, when asked for after the end)."""
        return self.outputs[0]

    @property
    def usage(self) -> UsageMetadata | None:
        """Token usage reported by the provider, summed over the chunks of every choice."""
        return (
            merge_chunks(self.outputs).usage_metadata
            if len(self.outputs) > 1
            else self.output.usage_metadata
        )

    @property
    def latency(self) -> float | None:
        """Seconds from start to end, once ended."""
        return None if self.end_time is None else self.end_time - self.start_time

    def add_chunk(self, chunk: AIMessageChunk) -> None:
        """Record one streamed chunk."""
        if self.first_token_time is None:
            self.first_token_time = time.time()
        self.chunks.append(chunk)

    def end(self) -> None:
        """Mark the call finished normally."""
        self.end_time = time.time()

    def fail(self, error: BaseException) -> BaseException:
        """Mark the call failed and return the exception to raise in its place.

        A chatstream error is returned as it is, with ``partial`` set to the output so far. Any
        other exception after chunks had arrived is wrapped in `StreamInterruptedError` so that
        the partial output is not lost; before any chunk it is returned unchanged, and so is
        cancellation.
        """
        self.end_time = time.time()
        self.error = error
        if not self.chunks:
            return error
        partial = self.output
        if isinstance(error, ChatStreamError):
            if error.partial is None:
                error.partial = partial
            return error
        if isinstance(error, Exception):
            return StreamInterruptedError(
                f"the stream broke after {len(self.chunks)} chunks: {error!r}", partial=partial
            )
        return error
