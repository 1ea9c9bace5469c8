"""The three HTTP providers of the fault suite: each one's local server and model, built alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatstream.providers.anthropic import ChatAnthropic
from chatstream.providers.ollama import ChatOllama
from chatstream.providers.openai import ChatOpenAI, Timeout
from chatstream.testing.anthropic_server import AnthropicServer
from chatstream.testing.ollama_server import OllamaServer
from chatstream.testing.openai_server import Faults, OpenAIServer, ScriptedReply

from ..providers._helpers import HTTPModel

if TYPE_CHECKING:
    from collections.abc import Sequence

    from chatstream.testing._base import LocalServer

KEY = "fault-suite-key"

LONG = ScriptedReply(text_chunks=[f"tick{n} " for n in range(200)])
"""Long enough that a stream cut or cancelled early is never complete by accident."""


@dataclass(frozen=True)
class Provider:
    """One HTTP provider: its local protocol server and its model, configured for faults."""

    name: str
    model_class: type[HTTPModel]

    def server(
        self, replies: Sequence[ScriptedReply] = (), faults: Faults | None = None
    ) -> LocalServer:
        """A not yet started server; Anthropic's without pings, so event counts match."""
        if self.model_class is ChatAnthropic:
            return AnthropicServer(replies, faults, api_key=KEY, ping=False)
        if self.model_class is ChatOllama:
            return OllamaServer(replies, faults, api_key=KEY)
        return OpenAIServer(replies, faults, api_key=KEY)

    def model(
        self,
        base_url: str,
        *,
        max_retries: int = 0,
        connect: float = 10.0,
        idle: float | None = 30.0,
        total: float | None = None,
        **settings: Any,
    ) -> HTTPModel:
        """The model pointed at ``base_url`` (idle limit on, so no test can hang forever)."""
        return self.model_class(
            base_url=base_url,
            api_key=KEY,
            max_retries=max_retries,
            timeout=Timeout(connect=connect, idle=idle, total=total),
            **settings,
        )


PROVIDERS = {
    "openai": Provider("openai", ChatOpenAI),
    "anthropic": Provider("anthropic", ChatAnthropic),
    "ollama": Provider("ollama", ChatOllama),
}


def text_of(chunks: Sequence[Any]) -> str:
    """The streamed text of a list of chunks."""
    return "".join(str(chunk.content) for chunk in chunks)
