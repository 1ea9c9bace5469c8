"""The local servers replay recorded-style transcripts (tests/fixtures) field for field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chatstream.testing.anthropic_server import AnthropicServer
from chatstream.testing.ollama_server import OllamaServer
from chatstream.testing.openai_server import OpenAIServer, ScriptedReply, ScriptedToolCall

from .test_anthropic_server import sse_blocks
from .test_ollama_server import ndjson_lines

if TYPE_CHECKING:
    import aiohttp

    from chatstream.testing._base import LocalServer

FIXTURES = Path(__file__).parent.parent / "fixtures"
# Read up front: the tests run inside an event loop that must not block on files.
RECORDED = {str(path.relative_to(FIXTURES)): path.read_bytes() for path in FIXTURES.glob("*/*.*")}
#: Values that are random per response even with fixed ids (Anthropic thinking signatures).
VOLATILE = {"signature", "created_at"}
#: Keys the OpenAI server adds that the 2024 recordings lack: the live API sends
#: ``service_tier`` and ``usage: null`` today, and fuller usage details.
OPENAI_EXTRAS = {
    "service_tier",
    "usage",
    "prompt_tokens_details",
    "cached_tokens",
    "audio_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
}
USER = [{"role": "user", "content": "hi"}]
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


def assert_same(recorded: Any, served: Any, extras: set[str], path: str = "$") -> None:
    """``served`` has every field of ``recorded`` with equal values; extra keys only from
    ``extras``; ``VOLATILE`` values need only the same JSON type."""
    if isinstance(recorded, dict):
        assert isinstance(served, dict), path
        assert set(recorded) <= set(served), (path, set(recorded) - set(served))
        assert set(served) - set(recorded) <= extras, (path, set(served) - set(recorded))
        for key, value in recorded.items():
            assert_same(value, served[key], extras, f"{path}.{key}")
    elif isinstance(recorded, list):
        assert isinstance(served, list), path
        assert len(served) == len(recorded), path
        for index, (a, b) in enumerate(zip(recorded, served, strict=True)):
            assert_same(a, b, extras, f"{path}[{index}]")
    elif path.rsplit(".", 1)[-1] in VOLATILE:
        assert type(served) is type(recorded), path
    else:
        assert served == recorded, path


def sse(raw: bytes) -> list[tuple[str | None, Any]]:
    return [
        (name, data if data == "[DONE]" else json.loads(data)) for name, data in sse_blocks(raw)
    ]


def assert_same_events(
    recorded: list[tuple[str | None, Any]], served: list[tuple[str | None, Any]], extras: set[str]
) -> None:
    assert [name for name, _ in served] == [name for name, _ in recorded]
    for index, ((_, want), (_, got)) in enumerate(zip(recorded, served, strict=True)):
        assert_same(want, got, extras, f"event {index}")


async def post(
    session: aiohttp.ClientSession,
    server: LocalServer,
    path: str,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> bytes:
    async with session.post(server.base_url + path, json=payload, headers=headers) as resp:
        assert resp.status == 200
        return await resp.read()


ANTHROPIC = [
    (
        "anthropic/text.sse",
        "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK",
        "claude-3-opus-latest",
        ScriptedReply(
            text_chunks=["Hello", " there"], usage={"prompt_tokens": 11, "completion_tokens": 6}
        ),
    ),
    (
        "anthropic/tool_use.sse",
        "msg_019Q1hrJbZG26Fb9BQhrkHEr",
        "claude-sonnet-4-20250514",
        ScriptedReply(
            text_chunks=["I'll check the current", " weather in Paris for you."],
            tool_calls=[
                ScriptedToolCall(
                    id="toolu_01NRLabsLyVHZPKxbKvkfSMn",
                    name="get_weather",
                    argument_chunks=['{"locati', 'on": "P', "ar", 'is"}'],
                )
            ],
            finish_reason="tool_calls",
            usage={"prompt_tokens": 377, "completion_tokens": 65},
        ),
    ),
    (
        "anthropic/thinking.sse",
        "msg_01XFDUDYJgAACzvnptvVoYEL",
        "claude-sonnet-4-20250514",
        ScriptedReply(
            reasoning_chunks=["The user wants 27 * 453.", " 27 * 453 = 12231.", ""],
            text_chunks=["27 * 453 = ", "12,231"],
            usage={"prompt_tokens": 42, "completion_tokens": 38},
        ),
    ),
]


@pytest.mark.parametrize(("name", "message_id", "model", "reply"), ANTHROPIC)
async def test_anthropic_matches_recording(
    session: aiohttp.ClientSession, name: str, message_id: str, model: str, reply: ScriptedReply
) -> None:
    recorded = RECORDED[name]
    payload = {"model": model, "max_tokens": 1024, "messages": USER, "stream": True}
    async with AnthropicServer([reply], message_id=message_id) as server:
        raw = await post(session, server, "/v1/messages", payload, ANTHROPIC_HEADERS)
    assert all(event == data["type"] for event, data in sse(recorded))
    assert_same_events(sse(recorded), sse(raw), set())
    if b"signature" not in recorded:
        # Nothing random remains, so the server reproduces the recording byte for byte.
        assert raw == recorded


OPENAI_HEAD = {"created": 1727346168, "system_fingerprint": "fp_5050236cbd"}
OPENAI = [
    (
        "openai/text.sse",
        {"completion_id": "chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL", **OPENAI_HEAD},
        ScriptedReply(text_chunks=["I'm"], usage={"prompt_tokens": 14, "completion_tokens": 30}),
        {"stream_options": {"include_usage": True}},
    ),
    (
        "openai/tool_calls.sse",
        {"completion_id": "chatcmpl-ABfw1e5abtU8OwGr15vOreYVb2MiF", **OPENAI_HEAD}
        | {"created": 1727346169},
        ScriptedReply(
            tool_calls=[
                ScriptedToolCall(
                    id="call_JMW1whyEaYG438VE1OIflxA2",
                    name="GetWeatherArgs",
                    argument_chunks=['{"ci', 'ty": ', '"Edinb', 'urgh", ', '"country', '": "UK"}'],
                ),
                ScriptedToolCall(
                    id="call_DNYTawLBoN8fj3KN6qU9N1Ou",
                    name="get_stock_price",
                    argument_chunks=['{"ti', 'cker": "AAPL"', "}"],
                ),
            ],
            finish_reason="tool_calls",
        ),
        {},
    ),
]


@pytest.mark.parametrize(("name", "server_kwargs", "reply", "extra"), OPENAI)
async def test_openai_matches_recording(
    session: aiohttp.ClientSession,
    name: str,
    server_kwargs: dict[str, Any],
    reply: ScriptedReply,
    extra: dict[str, Any],
) -> None:
    payload = {"model": "gpt-4o-2024-08-06", "messages": USER, "stream": True, **extra}
    async with OpenAIServer([reply], **server_kwargs) as server:
        raw = await post(session, server, "/chat/completions", payload)
    served = sse(raw)
    assert_same_events(sse(RECORDED[name]), served, OPENAI_EXTRAS)
    # ``usage`` may only be added as null; the recording simply omitted it.
    assert all(chunk.get("usage", None) is None for _, chunk in served[:-2] if chunk != "[DONE]")


OLLAMA_METRICS = {"load_duration": 1334875}
OLLAMA = [
    (
        "ollama/text.ndjson",
        ScriptedReply(
            text_chunks=["The", " sky"],
            usage={
                "prompt_tokens": 26,
                "completion_tokens": 282,
                "total_duration": 4883583458,
                "prompt_eval_duration": 342546000,
                "eval_duration": 4535599000,
            }
            | OLLAMA_METRICS,
        ),
    ),
    (
        "ollama/tool_call.ndjson",
        ScriptedReply(
            tool_calls=[
                ScriptedToolCall(
                    id="call_k3j9x0ab", name="get_weather", argument_chunks=['{"city":', '"Tokyo"}']
                )
            ],
            finish_reason="tool_calls",
            usage={
                "prompt_eval_count": 169,
                "eval_count": 15,
                "total_duration": 182242375,
                "load_duration": 41295167,
                "prompt_eval_duration": 24573166,
                "eval_duration": 115959084,
            },
        ),
    ),
]


@pytest.mark.parametrize(("name", "reply"), OLLAMA)
async def test_ollama_matches_recording(
    session: aiohttp.ClientSession, name: str, reply: ScriptedReply
) -> None:
    recorded = ndjson_lines(RECORDED[name])
    async with OllamaServer([reply]) as server:
        raw = await post(session, server, "/api/chat", {"model": "llama3.2", "messages": USER})
    served = ndjson_lines(raw)
    assert len(served) == len(recorded)
    for index, (want, got) in enumerate(zip(recorded, served, strict=True)):
        assert_same(want, got, set(), f"line {index}")


def test_every_fixture_is_replayed() -> None:
    replayed = {c[0] for c in ANTHROPIC} | {c[0] for c in OPENAI} | {c[0] for c in OLLAMA}
    assert replayed == set(RECORDED)
