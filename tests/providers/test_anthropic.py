"""ChatAnthropic: the conformance suite, then the Messages API's own wire details."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chatstream.errors import (
    AuthenticationError,
    InputTypeError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    ProviderError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from chatstream.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from chatstream.providers.anthropic import ChatAnthropic, _to_chunk, _to_wire
from chatstream.testing._script import derived_id
from chatstream.testing.anthropic_server import (
    AnthropicServer,
    Faults,
    ScriptedReply,
    ScriptedToolCall,
)
from chatstream.testing.conformance import Capabilities, ChatModelConformance, ReceivedRequest

from ._helpers import ModelHarness, serve_raw, stream_answer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from chatstream.testing._base import LocalServer

KEY = "test-key"
HELLO = ScriptedReply(text_chunks=["Hel", "lo"], usage={"prompt_tokens": 3, "completion_tokens": 2})
FIXTURES = Path(__file__).parent.parent / "fixtures" / "anthropic"
# Read up front: the tests run inside an event loop that must not block on files.
RECORDED = {path.stem: path.read_bytes() for path in FIXTURES.glob("*.sse")}


def _served_id(scripted: str) -> str:
    """The ``toolu_`` id the local server gives a scripted tool-call id."""
    if scripted.startswith("toolu_"):
        return scripted
    return derived_id(scripted, "toolu_01", 22, string.ascii_letters + string.digits)


class AnthropicHarness(ModelHarness):
    model_class = ChatAnthropic
    capabilities = Capabilities(
        credential_header="x-api-key",
        tool_call_id=_served_id,
        interleaved_tool_arguments=False,  # content blocks stream one after the other
        structured_methods=frozenset({"tool_calling"}),
    )

    @property
    def finish_reasons(self) -> dict[str, str]:
        return {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

    def server(
        self, replies: Sequence[ScriptedReply] = (), faults: Faults | None = None, *, api_key: str
    ) -> LocalServer:
        # No ping: the suite's event counts (error after 3, stall after 3, ...) then fall on
        # text deltas, as for the other providers. Pings are covered by the tests below.
        return AnthropicServer(replies, faults, api_key=api_key, ping=False)

    def received(self, server: LocalServer) -> list[ReceivedRequest]:
        return [
            ReceivedRequest(
                messages=_neutral(request.body),
                stream=request.body.get("stream") is True,
                headers=request.headers,
                body=request.body,
                **_neutral_tools(request.body),
            )
            for request in server.requests
        ]


def _neutral_tools(body: dict[str, Any]) -> dict[str, Any]:
    """The request's tools and tool choice in the suite's neutral terms."""
    tools = [
        {
            "name": tool["name"],
            "description": tool.get("description", ""),
            "parameters": tool.get("input_schema"),
        }
        for tool in body.get("tools") or []
    ]
    choice = body.get("tool_choice") or {}
    kinds = {"auto": "auto", "any": "required", "none": "none", "tool": choice.get("name")}
    return {
        "tools": tools,
        "tool_choice": kinds.get(str(choice.get("type"))) if choice else None,
        "parallel_tool_calls": False if choice.get("disable_parallel_tool_use") else None,
    }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if block.get("type") == "text")


def _neutral(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's conversation in the suite's neutral terms."""
    neutral: list[dict[str, Any]] = []
    if body.get("system"):
        neutral.append({"role": "system", "content": _text(body["system"])})
    for message in body["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if message["role"] == "user":
            neutral += [
                {"role": "tool", "content": _text(b["content"]), "tool_call_id": b["tool_use_id"]}
                for b in blocks
                if b["type"] == "tool_result"
            ]
            if any(b["type"] == "text" for b in blocks):
                neutral.append({"role": "user", "content": _text(blocks)})
            continue
        turn: dict[str, Any] = {"role": "assistant", "content": _text(blocks)}
        calls = [
            {"id": b["id"], "name": b["name"], "args": b["input"]}
            for b in blocks
            if b["type"] == "tool_use"
        ]
        if calls:
            turn["tool_calls"] = calls
        neutral.append(turn)
    return neutral


@pytest.fixture
def harness() -> AnthropicHarness:
    return AnthropicHarness()


class TestAnthropicConformance(ChatModelConformance):
    pass


# -- helpers ----------------------------------------------------------------------------------


async def _answer(
    replies: Sequence[ScriptedReply] = (HELLO,),
    faults: Faults | None = None,
    prompt: Any = "Hi",
    **settings: Any,
) -> tuple[AIMessage, list[AIMessageChunk], AnthropicServer]:
    """Stream one answer from a fresh server: the merged message, the chunks and the server."""
    server = AnthropicServer(replies, faults, api_key=KEY)
    message, chunks = await stream_answer(server, ChatAnthropic, prompt, api_key=KEY, **settings)
    return message, chunks, server


@pytest.fixture
async def raw_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A bare server answering ``/v1/messages`` with whatever SSE body the test queues."""
    async with serve_raw("/v1/messages", "text/event-stream", {"request-id": "req_raw"}) as served:
        yield served


async def _replay(url: str, bodies: list[bytes], body: bytes) -> list[AIMessageChunk]:
    bodies.append(body)
    async with ChatAnthropic(base_url=url, api_key=KEY) as model:
        return [chunk async for chunk in model.astream("Hi")]


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events
    )


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-test",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    },
}
STOP = {"type": "message_stop"}


def _blocks(message: AIMessage) -> list[dict[str, Any]]:
    assert isinstance(message.content, list), message.content
    return message.content


def _delta(index: int, **delta: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _end(reason: str, output_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


# -- recorded streams (protocols.md §2.4) ------------------------------------------------------


async def test_recorded_text_stream(raw_server: tuple[str, list[bytes]]) -> None:
    chunks = await _replay(*raw_server, RECORDED["text"])
    message = sum(chunks[1:], chunks[0]).to_message()
    assert [chunk.content for chunk in chunks if chunk.content] == ["Hello", " there"]
    assert message.content == "Hello there"
    assert message.id == "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"
    assert message.response_metadata == {
        "model_name": "claude-3-opus-latest",
        "id": "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK",
        "finish_reason": "stop",
        "stop_reason": "end_turn",
    }
    assert message.usage_metadata == {"input_tokens": 11, "output_tokens": 6, "total_tokens": 17}
    assert [chunk.usage_metadata is not None for chunk in chunks].count(True) == 1


async def test_recorded_thinking_stream(raw_server: tuple[str, list[bytes]]) -> None:
    chunks = await _replay(*raw_server, RECORDED["thinking"])
    # Thinking streams as indexed blocks, text as plain strings.
    assert [chunk.content for chunk in chunks if chunk.content][:2] == [
        [{"type": "thinking", "thinking": "The user wants 27 * 453.", "index": 0}],
        [{"type": "thinking", "thinking": " 27 * 453 = 12231.", "index": 0}],
    ]
    assert [c.content for c in chunks if isinstance(c.content, str) and c.content] == [
        "27 * 453 = ",
        "12,231",
    ]
    message = sum(chunks[1:], chunks[0]).to_message()
    [thinking, text] = _blocks(message)
    assert thinking["type"] == "thinking"
    assert thinking["thinking"] == "The user wants 27 * 453. 27 * 453 = 12231."
    assert thinking["signature"].startswith("EqQBCgIYAhIM")
    assert text == {"type": "text", "text": "27 * 453 = 12,231"}
    assert message.text == "27 * 453 = 12,231"
    assert message.response_metadata["finish_reason"] == "stop"


async def test_recorded_tool_use_stream(raw_server: tuple[str, list[bytes]]) -> None:
    chunks = await _replay(*raw_server, RECORDED["tool_use"])
    message = sum(chunks[1:], chunks[0]).to_message()
    assert message.content == "I'll check the current weather in Paris for you."
    assert message.tool_calls == [
        {
            "name": "get_weather",
            "args": {"location": "Paris"},
            "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
        }
    ]
    assert {f["index"] for c in chunks for f in c.tool_call_chunks} == {1}  # the block index
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert message.response_metadata["stop_reason"] == "tool_use"
    assert message.usage_metadata == {"input_tokens": 377, "output_tokens": 65, "total_tokens": 442}


@pytest.mark.parametrize(
    "faults",
    [
        Faults(split_writes=1),
        Faults(split_writes=5, line_ending="\r\n"),
        Faults(trailing_spaces=True),
        Faults(spaced_json=True),
        Faults(omit_done=True),
    ],
    ids=lambda faults: ",".join(sorted(faults.model_dump(exclude_defaults=True))),
)
async def test_framing_faults_give_the_same_answer(faults: Faults) -> None:
    reply = ScriptedReply(text_chunks=["Zoë ", "и ", "日本"], reasoning_chunks=["hm"])
    message, chunks, _ = await _answer([reply], faults)
    assert message.text == "Zoë и 日本"
    assert _blocks(message)[0]["thinking"] == "hm"
    assert message.response_metadata["finish_reason"] == "stop"
    assert sum(1 for chunk in chunks if chunk.usage_metadata) == 1


# -- thinking ---------------------------------------------------------------------------------


async def test_thinking_goes_back_unchanged() -> None:
    reply = ScriptedReply(reasoning_chunks=["Let me", " think."], text_chunks=["42"])
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message, _, _ = await _answer([reply], thinking=thinking, max_tokens=2048)
    [block, text] = _blocks(message)
    assert (block["thinking"], block["index"], text) == (
        "Let me think.",
        0,
        {"type": "text", "text": "42"},
    )
    _, _, server = await _answer(prompt=[HumanMessage("Q?"), message, HumanMessage("Why?")])
    [_, assistant, _] = server.requests[0].body["messages"]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": block["signature"]},
            {"type": "text", "text": "42"},
        ],
    }


def test_redacted_thinking_is_kept_whole() -> None:
    event = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "redacted_thinking", "data": "opaque"},
    }
    chunk = _to_chunk(event)
    assert chunk is not None
    assert chunk.content == [{"type": "redacted_thinking", "data": "opaque", "index": 0}]


# -- tool use ---------------------------------------------------------------------------------


async def test_tool_use_with_empty_input_parses_as_an_empty_object() -> None:
    call = ScriptedToolCall(id="toolu_01Now", name="get_time")  # only the leading "" fragment
    reply = ScriptedReply(tool_calls=[call], finish_reason="tool_calls")
    message, chunks, _ = await _answer([reply])
    assert message.tool_calls == [{"name": "get_time", "args": {}, "id": "toolu_01Now"}]
    assert "".join(f["args"] or "" for c in chunks for f in c.tool_call_chunks) == "{}"


async def test_tool_use_without_any_fragment(raw_server: tuple[str, list[bytes]]) -> None:
    start = {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}
    body = _sse(
        START,
        {"type": "content_block_start", "index": 0, "content_block": start},
        {"type": "content_block_stop", "index": 0},
        _end("tool_use", 3),
        STOP,
    )
    chunks = await _replay(*raw_server, body)
    message = sum(chunks[1:], chunks[0]).to_message()
    assert message.tool_calls == [{"name": "now", "args": {}, "id": "toolu_1"}]


async def test_max_tokens_inside_a_tool_call() -> None:
    # The API ends the stream with no content_block_stop for the cut block (§2.4 gotcha).
    cut = ScriptedToolCall(id="toolu_01Cut", name="get_weather", argument_chunks=['{"city": "Pa'])
    empty = ScriptedToolCall(id="toolu_01Empty", name="get_time")
    for calls, invalid in (([cut], 1), ([empty], 0)):
        reply = ScriptedReply(text_chunks=["Checking"], tool_calls=calls, finish_reason="length")
        message, _, _ = await _answer([reply], Faults(unclosed_last_block=True))
        assert message.response_metadata["finish_reason"] == "length"
        assert message.response_metadata["stop_reason"] == "max_tokens"
        assert len(message.invalid_tool_calls) == invalid
        if invalid:
            assert message.invalid_tool_calls[0]["args"] == '{"city": "Pa'
        else:
            assert message.tool_calls == [{"name": "get_time", "args": {}, "id": "toolu_01Empty"}]


async def test_tool_calls_and_results_go_back() -> None:
    call = ToolCall(name="get_weather", args={"city": "Paris"}, id="toolu_1")
    prompt = [
        HumanMessage("Weather?"),
        AIMessage("Checking.", tool_calls=[call]),
        ToolMessage("18C", tool_call_id="toolu_1"),
        HumanMessage("And tomorrow?"),
    ]
    _, _, server = await _answer(prompt=prompt)
    assert server.requests[0].body["messages"] == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": call["args"]},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


# -- usage ------------------------------------------------------------------------------------


async def test_cumulative_usage_is_replaced_not_added(raw_server: tuple[str, list[bytes]]) -> None:
    start = json.loads(json.dumps(START))
    start["message"]["usage"] = {
        "input_tokens": 10,
        "output_tokens": 1,
        "cache_creation_input_tokens": 4,
        "cache_read_input_tokens": 6,
    }
    body = _sse(
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        _delta(0, type="text_delta", text="Hi"),
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 5}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9, "input_tokens": 12},
        },
        STOP,
    )
    chunks = await _replay(*raw_server, body)
    [usage] = [chunk.usage_metadata for chunk in chunks if chunk.usage_metadata]
    assert usage == {
        "input_tokens": 22,  # 12 (the later report wins) + 4 cache writes + 6 cache reads
        "output_tokens": 9,
        "total_tokens": 31,
        "input_token_details": {"cache_read": 6, "cache_creation": 4},
    }


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, OverloadedError),
        ({"type": "api_error", "message": "Internal server error"}, ServerError),
        ({"type": "rate_limit_error", "message": "Slow down"}, RateLimitError),
        ({"type": "brand_new_error", "message": "?"}, ServerError),
    ],
)
async def test_error_event_mid_stream(error: dict[str, Any], cls: type[ProviderError]) -> None:
    faults = Faults(error_event_after=4, error_event=error)  # after "Hel"
    with pytest.raises(cls) as caught:
        await _answer(faults=faults)
    assert type(caught.value) is cls
    assert caught.value.code == error["type"]
    assert caught.value.status is None
    assert caught.value.partial is not None
    assert caught.value.partial.content == "Hel"


async def test_529_is_retried_as_overloaded() -> None:
    faults = Faults(http_error=529, fail_times=1, headers={"retry-after-ms": "1"})
    message, _, server = await _answer(faults=faults, max_retries=1)
    assert message.content == "Hello"
    assert len(server.requests) == 2
    with pytest.raises(OverloadedError) as caught:
        await _answer(faults=Faults(http_error=529), max_retries=0)
    assert (caught.value.status, caught.value.code) == (529, "overloaded_error")
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_01")


async def test_http_error_body_is_read() -> None:
    with pytest.raises(NotFoundError) as caught:
        await _answer(faults=Faults(http_error=404), model="claude-x")
    assert (caught.value.message, caught.value.code) == ("model: claude-x", "not_found_error")


async def test_a_cut_stream_is_not_a_success(raw_server: tuple[str, list[bytes]]) -> None:
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
    body = _sse(START, block, _delta(0, type="text_delta", text="Half"))
    with pytest.raises(StreamInterruptedError, match="cut short") as caught:
        await _replay(*raw_server, body)
    assert caught.value.partial is not None
    assert caught.value.partial.content == "Half"


async def test_pings_and_unknown_events_are_ignored(raw_server: tuple[str, list[bytes]]) -> None:
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    body = _sse(
        START,
        {"type": "ping"},
        {"type": "future_event", "index": 0, "anything": [1]},
        block,
        _delta(0, type="future_delta", value="?"),
        _delta(0, type="text_delta", text="ok"),
        {"type": "content_block_stop", "index": 0},
        _end("pause_turn", 2),
        STOP,
    )
    chunks = await _replay(*raw_server, body)
    message = sum(chunks[1:], chunks[0]).to_message()
    assert message.content == "ok"
    assert message.response_metadata["finish_reason"] == "pause_turn"  # no neutral name: as sent


async def test_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    async with ChatAnthropic(base_url="http://127.0.0.1:9") as model:
        assert model.api_key is None
        with pytest.raises(AuthenticationError, match="ANTHROPIC_API_KEY") as caught:
            await model.ainvoke("Hi")
    assert caught.value.status is None


async def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
    async with ChatAnthropic() as model:
        assert model.api_key is not None
        assert model.api_key.get_secret_value() == "env-key"
        assert model.base_url == "http://127.0.0.1:1"
        assert "env-key" not in repr(model)


# -- request ----------------------------------------------------------------------------------


async def test_headers_and_per_call_params_reach_the_wire() -> None:
    async with AnthropicServer([HELLO], api_key=KEY) as server:
        settings = {"default_headers": {"anthropic-beta": "x-1"}, "temperature": 1.0}
        async with ChatAnthropic(base_url=server.base_url, api_key=KEY, **settings) as model:
            await model.ainvoke("Hi", temperature=0, max_tokens=5, stop=["x"], top_k=3)
            with pytest.raises(TypeError, match="temprature"):
                await model.ainvoke("Hi", temprature=0)
    request = server.requests[0]
    assert request.path == "/v1/messages"
    assert (request.headers["x-api-key"], request.headers["anthropic-version"]) == (
        KEY,
        "2023-06-01",
    )
    assert request.headers["anthropic-beta"] == "x-1"
    assert "authorization" not in request.headers
    body = request.body
    assert (body["temperature"], body["max_tokens"], body["top_k"]) == (0, 5, 3)
    assert body["stop_sequences"] == ["x"]


async def test_stop_sequence_finish() -> None:
    reply = ScriptedReply(text_chunks=["a"], finish_reason="stop_sequence")
    message, _, _ = await _answer([reply], stop="END")
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.response_metadata["stop_reason"] == "stop_sequence"
    assert message.response_metadata["stop_sequence"] == "END"


def test_to_wire_maps_every_message_type() -> None:
    messages = [
        SystemMessage("Be brief."),
        ChatMessage("Use metric units.", role="system"),
        HumanMessage(
            [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
            ]
        ),
        HumanMessage("Quick, please."),
        AIMessage(
            "",
            tool_calls=[{"name": "look", "args": {"q": "cät"}, "id": "toolu_1"}],
            invalid_tool_calls=[{"name": "bad", "args": "{", "id": "toolu_2", "error": "x"}],
        ),
        ToolMessage("a cat", tool_call_id="toolu_1"),
        ToolMessage([{"type": "text", "text": "failed"}], tool_call_id="toolu_2", status="error"),
        ChatMessage("Looks fine.", role="user"),
        AIMessageChunk("streamed"),
        ChatMessage("more", role="assistant"),
    ]
    settings = {
        "model": "claude-x",
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": None,
        "stop": ["\n\n"],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [
            {
                "type": "function",
                "function": {"name": "look", "description": "Look", "parameters": {}},
            },
            {"name": "native", "input_schema": {"type": "object"}},
        ],
        "tool_choice": "required",
        "extra_body": {"metadata": {"user_id": "u1"}},
    }
    assert _to_wire(messages, settings) == {
        "model": "claude-x",
        "max_tokens": 100,
        "system": "Be brief.\n\nUse metric units.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": "iVBORw0KGgo=",
                        },
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}},
                    {"type": "text", "text": "Quick, please."},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": "cät"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "bad", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "failed"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "Looks fine."},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "streamed"}, {"type": "text", "text": "more"}],
            },
        ],
        "stream": True,
        "stop_sequences": ["\n\n"],
        "temperature": 0.5,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [
            {
                "name": "look",
                "input_schema": {"type": "object", "properties": {}},
                "description": "Look",
            },
            {"name": "native", "input_schema": {"type": "object"}},
        ],
        "tool_choice": {"type": "any"},
        "metadata": {"user_id": "u1"},
    }


def test_system_blocks_keep_cache_control() -> None:
    block = {"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}
    wire = _to_wire([SystemMessage([block]), HumanMessage("Hi")], {"model": "m", "max_tokens": 1})
    assert wire["system"] == [block]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
    ],
)
def test_tool_choice(choice: Any, wire: dict[str, Any]) -> None:
    body = _to_wire([HumanMessage("Hi")], {"model": "m", "max_tokens": 1, "tool_choice": choice})
    assert body["tool_choice"] == wire


@pytest.mark.parametrize(
    ("messages", "error", "where"),
    [
        ([HumanMessage("Hi"), SystemMessage("Late rules")], InvalidInputError, "messages[1]"),
        ([HumanMessage("Hi"), ChatMessage("Meh", role="critic")], InvalidInputError, "messages[1]"),
        ([FunctionMessage("18C", name="f")], InputTypeError, "messages[0]"),
    ],
)
def test_messages_the_api_cannot_take(
    messages: list[Any], error: type[Exception], where: str
) -> None:
    with pytest.raises(error, match=r"messages\[\d\]") as caught:
        _to_wire(messages, {"model": "m", "max_tokens": 1})
    assert caught.value.where == where  # type: ignore[attr-defined]


async def test_input_errors_are_raised_from_the_call() -> None:
    async with AnthropicServer([HELLO], api_key=KEY) as server:
        async with ChatAnthropic(base_url=server.base_url, api_key=KEY) as model:
            with pytest.raises(ValueError, match=r"messages\[1\].*critic"):
                await model.ainvoke([HumanMessage("Hi"), ChatMessage("?", role="critic")])
    assert server.requests == []


def test_to_chunk_ignores_what_it_does_not_know() -> None:
    assert _to_chunk({"type": "ping"}) is None
    assert _to_chunk({"type": "content_block_stop", "index": 0}) is None
    assert _to_chunk({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 3}}) is None
    assert (
        _to_chunk({"type": "content_block_start", "index": 0, "content_block": {"type": "x"}})
        is None
    )
    assert _to_chunk(_delta(0, type="text_delta", text="")) is None
    assert _to_chunk(_delta(0, type="input_json_delta", partial_json="")) is None
    citation = {"type": "char_location", "cited_text": "x"}
    chunk = _to_chunk(_delta(0, type="citations_delta", citation=citation))
    assert chunk is not None
    assert chunk.additional_kwargs == {"citations": [citation]}


def test_repr_hides_the_key() -> None:
    model = ChatAnthropic(api_key="sk-ant-very-secret-value")
    assert "sk-ant-very-secret-value" not in repr(model)
    assert "sk-ant-very-secret-value" not in model.model_dump_json()


async def test_an_error_event_is_an_error_whatever_its_data_looks_like(
    raw_server: tuple[str, list[bytes]],
) -> None:
    # A real Anthropic-compatible server sends its own error shape under `event: error`
    # (no "type": "error" in the data): the event's name decides, and nothing is lost.
    url, bodies = raw_server
    oddly_shaped = {
        "code": 500,
        "message": "Context size has been exceeded.",
        "type": "server_error",
    }
    body = (
        _sse(
            START,
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            _delta(0, type="text_delta", text="Par"),
        )
        + f"event: error\ndata: {json.dumps(oddly_shaped)}\n\n".encode()
    )
    with pytest.raises(ServerError, match="Context size has been exceeded") as caught:
        await _replay(url, bodies, body)
    assert caught.value.partial is not None
    assert caught.value.partial.text == "Par"
