"""`ChatOffline`: the labelled placeholder that answers when no model is configured.

It is not a language model and says so in every answer and in its ``model_name``; it exists so
that code and examples run on a machine with no API key and no local model installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from .._compat import override
from ..messages import AIMessageChunk, BaseMessage, UsageMetadata
from ..model import BaseChatModel
from ._scripted import CommonSettings, cut, split_tokens

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["OFFLINE_MODEL_NAME", "ChatOffline"]

OFFLINE_MODEL_NAME = "offline-placeholder (not a language model)"

_HOW_TO = (
    "For real answers, set OPENAI_API_KEY or ANTHROPIC_API_KEY, point OLLAMA_HOST at an "
    "Ollama server, or install the local model."
)


@final
class ChatOffline(BaseChatModel, CommonSettings):
    """A placeholder that streams a fixed, clearly labelled reply naming the question.

    It takes the common per-call settings like every provider (``stop`` and ``max_tokens``
    cut the reply). Usage counts words, not model tokens, since there is no model.
    """

    @property
    @override
    def model_name(self) -> str:
        """Says plainly that this is not a language model."""
        return OFFLINE_MODEL_NAME

    @override
    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **settings: Any
    ) -> AsyncIterator[AIMessageChunk]:
        question = messages[-1].text if messages else ""
        reply = (
            f"[offline placeholder, not a language model] No model is configured, so nothing "
            f"can answer {question!r}. {_HOW_TO}"
        )
        pieces, finish_reason = cut(split_tokens(reply), stop, settings["max_tokens"], "stop")
        for piece in pieces:
            yield AIMessageChunk(piece)
        input_words = sum(len(split_tokens(message.text)) for message in messages)
        yield AIMessageChunk(
            response_metadata={"finish_reason": finish_reason, "model_name": OFFLINE_MODEL_NAME},
            usage_metadata=UsageMetadata(
                input_tokens=input_words,
                output_tokens=len(pieces),
                total_tokens=input_words + len(pieces),
            ),
        )
