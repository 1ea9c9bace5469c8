"""OpenAI, Anthropic and Ollama report the same situation the same way: finish reasons, errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from chatstream.errors import ChatStreamError, ProviderError
from chatstream.testing._script import Faults, ScriptedReply, ScriptedToolCall

from .test_anthropic import AnthropicHarness
from .test_ollama import OllamaHarness
from .test_openai import OpenAIHarness

if TYPE_CHECKING:
    from chatstream.testing.conformance import ProviderHarness

pytestmark = pytest.mark.anyio

KEY = "consistency-key"
HARNESSES: dict[str, ProviderHarness] = {
    "openai": OpenAIHarness(),
    "anthropic": AnthropicHarness(),
    "ollama": OllamaHarness(),
}
CALL = ScriptedToolCall(id="call_w", name="get_weather", argument_chunks=['{"city": "Oslo"}'])
# The same server-side failure mid-stream, as each provider writes it.
SERVER_FAILURE = {
    "openai": {"message": "boom", "type": "server_error", "param": None, "code": None},
    "anthropic": {"type": "api_error", "message": "boom"},
    "ollama": {"message": "boom"},
}


@dataclass(frozen=True)
class Case:
    """One situation, scripted for every provider; ``finish`` is the neutral finish reason."""

    finish: str = "stop"
    tool_calls: bool = False
    faults: Faults = field(default_factory=Faults)
    server_failure_after: int | None = None
    max_retries: int = 0


CASES = {
    "finish-stop": Case(),
    "finish-length": Case(finish="length"),
    "finish-tool_calls": Case(finish="tool_calls", tool_calls=True),
    **{
        f"http-{status}": Case(faults=Faults(http_error=status))
        for status in (400, 401, 403, 404, 413, 429, 500, 503, 504, 529)
    },
    "http-529-retried": Case(
        faults=Faults(http_error=529, fail_times=1, headers={"retry-after-ms": "1"}), max_retries=1
    ),
    "server-failure-mid-stream": Case(server_failure_after=3),
    "cut-mid-stream": Case(faults=Faults(disconnect_after=3)),
}


async def _outcome(provider: str, case: Case) -> tuple[Any, ...]:
    """What a caller sees: the finish reason and parsed calls, or the error's class and status."""
    harness = HARNESSES[provider]
    reply = ScriptedReply(
        text_chunks=["Hel", "lo", "!"],
        tool_calls=[CALL] if case.tool_calls else [],
        finish_reason=harness.finish_reasons[case.finish],
    )
    faults = case.faults
    if case.server_failure_after is not None:
        faults = Faults(
            error_event_after=case.server_failure_after, error_event=SERVER_FAILURE[provider]
        )
    async with harness.server([reply], faults, api_key=KEY) as server:
        async with harness.model(server.base_url, KEY, max_retries=case.max_retries) as model:
            try:
                message = await model.ainvoke("Hi")
            except ChatStreamError as exc:
                status = exc.status if isinstance(exc, ProviderError) else None
                partial = exc.partial.content if exc.partial is not None else None
                return type(exc).__name__, status, bool(partial)
    calls = [(call["name"], call["args"]) for call in message.tool_calls]
    return message.response_metadata["finish_reason"], calls, message.text


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_providers_agree(case: Case) -> None:
    outcomes = {provider: await _outcome(provider, case) for provider in HARNESSES}
    assert len(set(map(repr, outcomes.values()))) == 1, outcomes
