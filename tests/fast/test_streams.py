"""Real streams over real sockets give the same chunks and the same errors with either decoder."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import pytest

from chatstream import _json
from chatstream.errors import StreamProtocolError
from chatstream.providers.anthropic import ChatAnthropic
from chatstream.providers.ollama import ChatOllama
from chatstream.providers.openai import ChatOpenAI
from chatstream.testing import (
    AnthropicServer,
    Faults,
    OllamaServer,
    OpenAIServer,
    ScriptedReply,
    ScriptedToolCall,
)

from ..providers._helpers import serve_raw

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from chatstream.messages import AIMessageChunk
    from chatstream.model import BaseChatModel
    from chatstream.testing._base import LocalServer

pytestmark = pytest.mark.anyio

KEY = "fast-json-key"
REPLY = ScriptedReply(
    text_chunks=["Caf\u00e9 ", "\u4f60\u597d ", "\U0001f600", ' "quoted" \\ back\nslash', "\t."],
    reasoning_chunks=["Think ", "\u00e9"],
    tool_calls=[
        ScriptedToolCall(
            id="call_1",
            name="lookup",
            argument_chunks=['{"q": "caf\\u00e9", ', '"n": 123456789012345678901234567890}'],
        )
    ],
    finish_reason="tool_calls",
)
"""Unicode raw and escaped, escapes, a tool call whose arguments hold an int past 64 bits."""


def dumped(chunks: list[AIMessageChunk]) -> list[dict[str, Any]]:
    return [chunk.model_dump() for chunk in chunks]


async def with_each_decoder(
    stream: Callable[[], Awaitable[list[dict[str, Any]]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What ``stream`` gives with the stdlib decoding, then with msgspec."""
    _json.set_decoder("stdlib")
    slow = await stream()
    _json.set_decoder("msgspec")
    fast = await stream()
    return slow, fast


def _server(provider: str, faults: Faults) -> LocalServer:
    # Fixed ids and times: the two runs must differ by nothing but the decoder.
    if provider == "openai":
        return OpenAIServer([REPLY], faults, api_key=KEY, completion_id="chatcmpl-1", created=1)
    if provider == "anthropic":
        return AnthropicServer([REPLY], faults, api_key=KEY, message_id="msg_1")
    return OllamaServer([REPLY], faults, api_key=KEY, created_at="2025-01-01T00:00:00Z")


def _model(provider: str, base_url: str) -> BaseChatModel:
    if provider == "openai":
        return ChatOpenAI(base_url=base_url, api_key=KEY)
    if provider == "anthropic":
        return ChatAnthropic(base_url=base_url, api_key=KEY)
    return ChatOllama(base_url=base_url, api_key=KEY)


@pytest.mark.parametrize("faults", [Faults(), Faults(spaced_json=True, trailing_spaces=True)])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
async def test_a_stream_gives_the_same_chunks(provider: str, faults: Faults) -> None:
    async def stream() -> list[dict[str, Any]]:
        async with _server(provider, faults) as server:
            model = _model(provider, server.base_url)
            try:
                return dumped([chunk async for chunk in model.astream("Hi")])
            finally:
                await model.aclose()

    slow, fast = await with_each_decoder(stream)
    assert fast == slow
    assert len(fast) > len(REPLY.text_chunks)
    assert "".join(chunk["content"] for chunk in fast if isinstance(chunk["content"], str)) == (
        REPLY.text
    )


async def test_a_malformed_event_is_the_same_error() -> None:
    async def stream() -> list[dict[str, Any]]:
        async with _server("openai", Faults(malformed_after=2)) as server:
            async with ChatOpenAI(base_url=server.base_url, api_key=KEY) as model:
                with pytest.raises(StreamProtocolError) as caught:
                    await model.ainvoke("Hi")
        return [_described(caught.value)]

    slow, fast = await with_each_decoder(stream)
    assert fast == slow
    assert fast[0]["line"].startswith('{"id": "broken"')


def _described(error: StreamProtocolError) -> dict[str, Any]:
    cause = error.__cause__
    assert isinstance(cause, ValueError)
    return {"message": str(error), "line": error.line, "cause": (type(cause), cause.args)}


# -- raw streams: the documents a decoder could read its own way ---------------------------------


def _sse(*data: str) -> bytes:
    return b"".join(f"data: {item}\n\n".encode() for item in data)


def _openai_chunk(delta: str, extra: str = "") -> str:
    return (
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m"'
        f'{extra},"choices":[{{"index":0,"delta":{delta},"finish_reason":null}}]}}'
    )


_OPENAI_TAIL = (
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
    "[DONE]",
)
ODD_OPENAI = _sse(
    _openai_chunk('{"content":"lone \\ud83d"}'),  # a lone surrogate, escaped
    _openai_chunk('{"content":"first","content":"last"}'),  # duplicate keys: the last wins
    "   " + _openai_chunk('{"content":" padded"}') + "\t ",  # whitespace around the document
    _openai_chunk('{"content":" big"}', ',"created":184467440737095516160'),
    _openai_chunk('{"content":" nan"}', ',"x_score":NaN,"x_inf":-Infinity'),
    *_OPENAI_TAIL,
)


async def test_odd_openai_documents_give_the_same_chunks() -> None:
    async def stream() -> list[dict[str, Any]]:
        async with serve_raw("/v1/chat/completions", "text/event-stream") as (url, bodies):
            bodies.append(ODD_OPENAI)
            async with ChatOpenAI(base_url=f"{url}/v1", api_key=KEY) as model:
                return dumped([chunk async for chunk in model.astream("Hi")])

    slow, fast = await with_each_decoder(stream)
    assert fast == slow
    text = "".join(chunk["content"] for chunk in fast)
    assert text == "lone \ud83dlast padded big nan"


def _ndjson(*lines: Any) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _ollama_line(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "created_at": "2025-01-01T00:00:00Z", "message": message, **extra}


BIG = 123456789012345678901234567890
"""Past 64 bits: orjson, for one, reads it as a float, and a float duration would be dropped."""
ODD_OLLAMA = _ndjson(
    _ollama_line({"role": "assistant", "content": "Hi \ud800 there"}, done=False),
    _ollama_line(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "function": {
                        "name": "f",
                        "arguments": {"n": BIG, "x": math.nan, "s": "\udc00"},
                    },
                }
            ],
        },
        done=False,
    ),
    _ollama_line(
        {"role": "assistant", "content": ""},
        done=True,
        done_reason="stop",
        total_duration=BIG,
        eval_count=3,
        prompt_eval_count=2,
    ),
)


async def test_odd_ollama_lines_give_the_same_chunks() -> None:
    async def stream() -> list[dict[str, Any]]:
        async with serve_raw("/api/chat", "application/x-ndjson") as (url, bodies):
            bodies.append(ODD_OLLAMA)
            async with ChatOllama(base_url=url) as model:
                return dumped([chunk async for chunk in model.astream("Hi")])

    slow, fast = await with_each_decoder(stream)
    assert fast == slow
    assert fast[0]["content"] == "Hi \ud800 there"
    arguments = fast[1]["tool_call_chunks"][0]["args"]
    assert json.loads(arguments)["n"] == BIG
    assert type(json.loads(arguments)["n"]) is int
    reported = fast[-1]["response_metadata"]["total_duration"]  # Ollama's counter, as sent
    assert reported == BIG


@pytest.mark.parametrize(
    "line",
    [b'{"message": {"content": "a"},}', b'{"done": true} x', b"NaNx", b"9" * 5000],
    ids=["trailing-comma", "extra-data", "not-a-value", "over-the-digit-limit"],
)
async def test_an_invalid_ndjson_line_is_the_same_error(line: bytes) -> None:
    async def stream() -> list[dict[str, Any]]:
        async with serve_raw("/api/chat", "application/x-ndjson") as (url, bodies):
            bodies.append(_ndjson(_ollama_line({"content": "Hi"}, done=False)) + line + b"\n")
            async with ChatOllama(base_url=url) as model:
                with pytest.raises(StreamProtocolError) as caught:
                    await model.ainvoke("Hi")
        return [_described(caught.value)]

    slow, fast = await with_each_decoder(stream)
    assert fast == slow
    assert fast[0]["message"].startswith("invalid JSON in NDJSON line: ")


@pytest.mark.parametrize(
    "data",
    [_openai_chunk('{"content":"a"}').replace("}]}", "},]}"), _openai_chunk("{}") + " x", "NaNx"],
    ids=["trailing-comma", "extra-data", "not-a-value"],
)
async def test_an_invalid_sse_event_is_the_same_error(data: str) -> None:
    async def stream() -> list[dict[str, Any]]:
        async with serve_raw("/v1/chat/completions", "text/event-stream") as (url, bodies):
            bodies.append(_sse(_openai_chunk('{"content":"Hi"}'), data, *_OPENAI_TAIL))
            async with ChatOpenAI(base_url=f"{url}/v1", api_key=KEY) as model:
                with pytest.raises(StreamProtocolError) as caught:
                    await model.ainvoke("Hi")
        return [_described(caught.value)]

    slow, fast = await with_each_decoder(stream)
    assert fast == slow
    assert fast[0]["message"].startswith("a data event of the stream is not JSON (")
    assert fast[0]["line"] == data[:200]
