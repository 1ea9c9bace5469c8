"""`FakeChatModel`: a scripted model for tests of code that uses chatstream.

It streams scripted answers token by token, optionally with delays, tool-call fragments, usage
and an error injected after some chunks, through the same paths as a real provider.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any, final

import anyio
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .._compat import override
from ..messages import AIMessageChunk, BaseMessage, ToolCall, ToolCallChunk, UsageMetadata
from ..model import BaseChatModel
from ..settings import PerCall
from ._scripted import CommonSettings, cut, split_tokens

__all__ = ["FakeChatModel", "FakeResponse", "split_tokens"]


@final
class FakeResponse(BaseModel):
    """One scripted answer."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    text: str = ""
    """The answer text, streamed with `split_tokens` unless ``chunks`` is given."""
    chunks: list[str] | None = None
    """Exactly these content pieces, instead of splitting ``text``."""
    tool_call_chunks: list[ToolCallChunk] = Field(default_factory=list)
    """Tool-call fragments, each streamed as a chunk of its own after the text."""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    """Whole tool calls, streamed after ``tool_call_chunks`` as a real model streams them:
    the name and id first, then the JSON arguments piece by piece. A scripted structured
    answer for ``method="tool_calling"`` is one such call."""
    finish_reason: str = "stop"
    """Reported in the last chunk's ``response_metadata``."""
    usage: UsageMetadata | None = None
    """Reported in the last chunk; by default input and output pieces are counted."""
    error: Exception | None = None
    """Raised after ``error_after`` chunks, instead of finishing."""
    error_after: int = 0
    """How many chunks to stream before raising ``error``."""

    def pieces(self) -> list[str]:
        """The content pieces this answer streams."""
        return list(self.chunks) if self.chunks is not None else split_tokens(self.text)

    def call_fragments(self) -> list[ToolCallChunk]:
        """The tool-call fragments this answer streams: ``tool_call_chunks``, then each call."""
        fragments = list(self.tool_call_chunks)
        start = 1 + max((f["index"] or 0 for f in fragments), default=-1)
        for index, call in enumerate(self.tool_calls, start):
            fragments.append(ToolCallChunk(name=call["name"], args="", id=call["id"], index=index))
            arguments = json.dumps(call["args"], ensure_ascii=False)
            fragments += [
                ToolCallChunk(name=None, args=piece, id=None, index=index)
                for piece in split_tokens(arguments)
            ]
        return fragments


@final
class FakeChatModel(BaseChatModel, CommonSettings):
    """Streams scripted answers in turn (cycling), with no network.

    It takes the common per-call settings (``temperature``, ``max_tokens``, ``stop``,
    ``tools``, ...) and records them in each run's ``invocation_params``; ``stop`` and
    ``max_tokens`` cut the scripted answer as a real model's would be cut.

    Example:
        >>> model = FakeChatModel(responses=["Hello there!"])
        >>> model.invoke("Hi").content
        'Hello there!'
    """

    responses: Sequence[str | FakeResponse] = ()
    """The answers, used in turn (wrapping around) when ``answers`` has none for the question."""
    answers: Mapping[str, str | FakeResponse] = Field(default_factory=dict)
    """Answers by the text of the last input message; unlike ``responses``, these do not depend
    on the order in which concurrent calls start."""
    delay: Annotated[float, PerCall(), Field(ge=0)] = 0.0
    """Seconds to sleep before each chunk."""
    model: str = "fake-chat-model"
    """Reported as ``model_name``."""

    _calls: int = PrivateAttr(default=0)

    def _next_response(self, messages: list[BaseMessage]) -> FakeResponse:
        question = messages[-1].text if messages else ""
        if question in self.answers:
            item = self.answers[question]
        elif self.responses:
            item = self.responses[self._calls % len(self.responses)]
        else:
            raise ValueError(f"FakeChatModel has no answer for {question!r} and no responses")
        self._calls += 1
        return FakeResponse(text=item) if isinstance(item, str) else item

    @override
    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **settings: Any
    ) -> AsyncIterator[AIMessageChunk]:
        response = self._next_response(messages)
        delay = settings["delay"]
        # Scripted whole calls end as a real model's calls end, unless the script says otherwise.
        reason = "tool_calls" if response.tool_calls and response.finish_reason == "stop" else None
        pieces, finish_reason = cut(
            response.pieces(), stop, settings["max_tokens"], reason or response.finish_reason
        )
        chunks = [AIMessageChunk(piece) for piece in pieces]
        chunks += [
            AIMessageChunk(tool_call_chunks=[fragment]) for fragment in response.call_fragments()
        ]
        for sent, chunk in enumerate(chunks):
            if response.error is not None and sent == response.error_after:
                raise response.error
            if delay:
                await anyio.sleep(delay)
            yield chunk
        if response.error is not None:
            raise response.error
        input_tokens = sum(len(split_tokens(message.text)) for message in messages)
        usage = response.usage or UsageMetadata(
            input_tokens=input_tokens,
            output_tokens=len(pieces),
            total_tokens=input_tokens + len(pieces),
        )
        yield AIMessageChunk(
            response_metadata={"finish_reason": finish_reason, "model_name": self.model},
            usage_metadata=usage,
        )
