"""What ``generate`` returns: generations, `LLMResult`, `RunInfo`, and token-usage totals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .messages import AIMessage, AIMessageChunk, UsageMetadata, merge_chunks

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ChatGeneration",
    "ChatGenerationChunk",
    "LLMResult",
    "RowResult",
    "RunInfo",
    "token_usage",
]


@final
class ChatGeneration(BaseModel):
    """One answer: the message, its text, and ``generation_info`` such as ``finish_reason``."""

    # defer_build: validators are built on first use, not by `import chatstream` (as for the
    # messages, and for the same reasons: see `chatstream.model`).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    text: str = ""
    """The message's text (filled in from ``message`` when not given)."""
    generation_info: dict[str, Any] | None = None
    """Per-answer details from the provider, e.g. ``{"finish_reason": "stop"}``."""
    message: AIMessage
    """The answer."""

    @model_validator(mode="before")
    @classmethod
    def _text_from_message(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("text") and "message" in data:
            message = data["message"]
            if isinstance(message, AIMessage):
                return {**data, "text": message.text}
        return data


@final
class ChatGenerationChunk(BaseModel):
    """A streamed piece of a generation; ``a + b`` merges two of them."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    message: AIMessageChunk
    """The chunk."""
    generation_info: dict[str, Any] | None = None
    """Details known so far."""

    @property
    def text(self) -> str:
        """The chunk's text."""
        return self.message.text

    def __add__(self, other: ChatGenerationChunk) -> ChatGenerationChunk:
        if not isinstance(other, ChatGenerationChunk):
            return NotImplemented
        info = {**(self.generation_info or {}), **(other.generation_info or {})}
        return ChatGenerationChunk(
            message=merge_chunks((self.message, other.message)), generation_info=info or None
        )


@final
class RunInfo(BaseModel):
    """Identifies the run that produced a generation (see ``chatstream.runs``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    run_id: UUID
    """The run's id."""


@final
class LLMResult(BaseModel):
    """The result of ``generate``: one list of generations per input, usage and run ids.

    ``llm_output`` is ``{"token_usage": {"prompt_tokens", "completion_tokens", "total_tokens"},
    "model_name": ...}``, summed over the inputs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    generations: list[list[ChatGeneration]]
    """For each input, its generations (several when the provider returned ``n > 1``)."""
    llm_output: dict[str, Any] | None = None
    """Provider-level output: token usage and model name."""
    run: list[RunInfo] | None = Field(default=None)
    """One `RunInfo` per input, in input order."""


def token_usage(usages: Iterable[UsageMetadata | None]) -> dict[str, int]:
    """Sum usage into the OpenAI-style ``token_usage`` dict that ``llm_output`` carries."""
    prompt = completion = 0
    for usage in usages:
        if usage:
            prompt += usage["input_tokens"]
            completion += usage["output_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@final
@dataclass(frozen=True, slots=True)
class RowResult:
    """The outcome of one input of `BaseChatModel.amap` (and of a provider Batch API job).

    A plain frozen dataclass: a million of them cost a fraction of pydantic models.
    """

    index: int
    """The input's position."""
    message: AIMessage | None
    """The answer; on failure, the partial answer if some of it had arrived."""
    error: Exception | None = None
    """Why the call failed, or ``None``."""
    run_id: UUID | None = None
    """The call's run (``None`` when the input could not even start one)."""
    usage: UsageMetadata | None = None
    """The call's token usage."""
    start_time: float | None = None
    """When the call started (seconds since the epoch)."""
    first_token_time: float | None = None
    """When its first chunk arrived."""
    end_time: float | None = None
    """When it ended."""
    attempts: int = 1
    """How many times it was sent: 1, plus its retries."""

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.error is None

    @property
    def latency(self) -> float | None:
        """Seconds from start to end."""
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time
