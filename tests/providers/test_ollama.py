"""ChatOllama: the conformance suite, then the native ``/api/chat`` wire details."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chatstream.errors import (
    AuthenticationError,
    InputTypeError,
    InvalidInputError,
    NotFoundError,
    ServerError,
    StreamInterruptedError,
    StreamProtocolError,
)
from chatstream.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from chatstream.providers.ollama import ChatOllama, _host_url, _to_chunk, _to_wire
from chatstream.testing.conformance import Capabilities, ChatModelConformance, ReceivedRequest
from chatstream.testing.ollama_server import Faults, OllamaServer, ScriptedReply, ScriptedToolCall

from ._helpers import ModelHarness, serve_raw, stream_answer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from chatstream.testing._base import LocalServer

HELLO = ScriptedReply(text_chunks=["Hel", "lo"], usage={"prompt_tokens": 3, "completion_tokens": 2})
FIXTURES = Path(__file__).parent.parent / "fixtures" / "ollama"
# Read up front: the tests run inside an event loop that must not block on files.
RECORDED = {path.stem: path.read_bytes() for path in FIXTURES.glob("*.ndjson")}


class OllamaHarness(ModelHarness):
    model_class = ChatOllama
    capabilities = Capabilities(
        request_ids=False,
        streamed_tool_arguments=False,
        raw_tool_arguments=False,
        tool_choices=frozenset({"auto"}),  # the API has no tool_choice
        parallel_tool_switch=False,
        interleaved_tool_arguments=False,
        structured_methods=frozenset({"json_schema", "json_mode"}),
        rejects_non_object_tool_parameters=False,
    )

    @property
    def finish_reasons(self) -> dict[str, str]:
        # The server sends "stop" after tool calls; the client must still say tool_calls.
        return {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}

    def server(
        self, replies: Sequence[ScriptedReply] = (), faults: Faults | None = None, *, api_key: str
    ) -> LocalServer:
        # As behind an authenticating proxy, so that the suite's 401 and secret checks apply.
        return OllamaServer(replies, faults, api_key=api_key)

    def received(self, server: LocalServer) -> list[ReceivedRequest]:
        return [
            ReceivedRequest(
                messages=[_neutral(message) for message in request.body["messages"]],
                stream=request.body.get("stream", True) is True,
                headers=request.headers,
                body=request.body,
                tools=[
                    {
                        "name": tool["function"]["name"],
                        "description": tool["function"].get("description", ""),
                        "parameters": tool["function"].get("parameters"),
                    }
                    for tool in request.body.get("tools") or []
                ],
                output_format=request.body.get("format"),
            )
            for request in server.requests
        ]


def _neutral(message: dict[str, Any]) -> dict[str, Any]:
    neutral = {"role": message["role"], "content": message.get("content", "")}
    if message.get("tool_calls"):
        neutral["tool_calls"] = [
            {
                "id": call.get("id"),
                "name": call["function"]["name"],
                "args": call["function"]["arguments"],
            }
            for call in message["tool_calls"]
        ]
    if "tool_call_id" in message:
        neutral["tool_call_id"] = message["tool_call_id"]
    return neutral


@pytest.fixture
def harness() -> OllamaHarness:
    return OllamaHarness()


class TestOllamaConformance(ChatModelConformance):
    pass


# -- helpers ----------------------------------------------------------------------------------


async def _answer(
    replies: Sequence[ScriptedReply] = (HELLO,),
    faults: Faults | None = None,
    prompt: Any = "Hi",
    **settings: Any,
) -> tuple[AIMessage, list[AIMessageChunk], OllamaServer]:
    """Stream one answer from a fresh server: the merged message, the chunks and the server."""
    server = OllamaServer(replies, faults)
    message, chunks = await stream_answer(server, ChatOllama, prompt, **settings)
    return message, chunks, server


@pytest.fixture
async def raw_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A bare server answering ``/api/chat`` with whatever NDJSON body the test queues."""
    async with serve_raw("/api/chat", "application/x-ndjson") as served:
        yield served


async def _replay(url: str, bodies: list[bytes], *lines: Any) -> AIMessage:
    bodies.append(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    async with ChatOllama(base_url=url) as model:
        return await model.ainvoke("Hi")


def _line(**message: Any) -> dict[str, Any]:
    return {"model": "m", "created_at": "2025-01-01T00:00:00Z", "message": message, "done": False}


DONE = {
    "model": "m",
    "created_at": "2025-01-01T00:00:01Z",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "stop",
}


# -- recorded streams (protocols.md §3.2, §3.3) ------------------------------------------------


async def test_recorded_text_stream(raw_server: tuple[str, list[bytes]]) -> None:
    url, bodies = raw_server
    lines = [json.loads(line) for line in RECORDED["text"].splitlines()]
    message = await _replay(url, bodies, *lines)
    assert message.content == "The sky"
    assert message.usage_metadata == {"input_tokens": 26, "output_tokens": 282, "total_tokens": 308}
    assert message.response_metadata == {
        "finish_reason": "stop",
        "done_reason": "stop",
        "model_name": "llama3.2",
        "created_at": "2023-08-04T19:22:45.499127Z",
        "total_duration": 4883583458,
        "load_duration": 1334875,
        "prompt_eval_duration": 342546000,
        "eval_duration": 4535599000,
    }


async def test_recorded_tool_call_stream(raw_server: tuple[str, list[bytes]]) -> None:
    url, bodies = raw_server
    lines = [json.loads(line) for line in RECORDED["tool_call"].splitlines()]
    message = await _replay(url, bodies, *lines)
    assert message.tool_calls == [
        {"name": "get_weather", "args": {"city": "Tokyo"}, "id": "call_k3j9x0ab"}
    ]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert message.response_metadata["done_reason"] == "stop"


@pytest.mark.parametrize(
    "faults",
    [
        Faults(split_writes=1),
        Faults(split_writes=7, line_ending="\r\n"),
        Faults(comments=True),
        Faults(trailing_spaces=True),
        Faults(spaced_json=True),
        Faults(bom=True),
    ],
    ids=lambda faults: ",".join(sorted(faults.model_dump(exclude_defaults=True))),
)
async def test_framing_faults_give_the_same_answer(faults: Faults) -> None:
    reply = ScriptedReply(text_chunks=["Zoë ", "и ", "日本"])
    message, chunks, _ = await _answer([reply], faults)
    assert message.content == "Zoë и 日本"
    assert message.response_metadata["finish_reason"] == "stop"
    assert sum(1 for chunk in chunks if chunk.usage_metadata) == 1


# -- thinking and tool calls ------------------------------------------------------------------


async def test_thinking_streams_as_blocks_like_anthropic() -> None:
    reply = ScriptedReply(reasoning_chunks=["Let me", " think."], text_chunks=["4", "2"])
    message, chunks, server = await _answer([reply], think=True)
    assert server.requests[0].body["think"] is True
    assert [chunk.content for chunk in chunks if chunk.content] == [
        [{"type": "thinking", "thinking": "Let me", "index": 0}],
        [{"type": "thinking", "thinking": " think.", "index": 0}],
        "4",
        "2",
    ]
    assert message.content == [
        {"type": "thinking", "thinking": "Let me think.", "index": 0},
        {"type": "text", "text": "42"},
    ]
    assert message.text == "42"
    _, _, server = await _answer(prompt=[HumanMessage("Q?"), message, HumanMessage("Why?")])
    assert server.requests[0].body["messages"][1] == {
        "role": "assistant",
        "content": "42",
        "thinking": "Let me think.",
    }


async def test_tool_calls_without_ids_get_one() -> None:
    calls = [
        ScriptedToolCall(id="a", name="get_weather", argument_chunks=['{"city": "Oslo"}']),
        ScriptedToolCall(id="b", name="get_time"),
    ]
    reply = ScriptedReply(tool_calls=calls, finish_reason="tool_calls")
    message, chunks, _ = await _answer([reply], Faults(omit_tool_call_ids=True))
    fragments = [f for chunk in chunks for f in chunk.tool_call_chunks]
    assert [(f["index"], f["args"]) for f in fragments] == [(0, '{"city": "Oslo"}'), (1, "{}")]
    [weather, time] = message.tool_calls
    assert (weather["name"], weather["args"], time["name"], time["args"]) == (
        "get_weather",
        {"city": "Oslo"},
        "get_time",
        {},
    )
    assert weather["id"] and time["id"] and weather["id"] != time["id"]
    assert str(weather["id"]).startswith("call_")
    assert message.response_metadata["finish_reason"] == "tool_calls"


def test_to_chunk_makes_ids_with_the_given_factory() -> None:
    line = _line(role="assistant", content="", tool_calls=[{"function": {"name": "f"}}])
    chunk = _to_chunk(line, calls_before=2, new_id=lambda: "call_fixed")
    assert chunk is not None
    assert chunk.tool_call_chunks == [{"name": "f", "args": "{}", "id": "call_fixed", "index": 2}]


async def test_tool_results_go_back_with_the_tool_name() -> None:
    prompt = [
        HumanMessage("Weather?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}]),
        ToolMessage("-3C", tool_call_id="c1"),
    ]
    _, _, server = await _answer(prompt=prompt)
    assert server.requests[0].body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}, "id": "c1"}
            ],
        },
        {"role": "tool", "content": "-3C", "tool_call_id": "c1", "tool_name": "get_weather"},
    ]


# -- the done line ----------------------------------------------------------------------------


async def test_absent_metrics_are_zero(raw_server: tuple[str, list[bytes]]) -> None:
    url, bodies = raw_server
    done = {key: value for key, value in DONE.items() if key != "done_reason"}
    message = await _replay(url, bodies, _line(role="assistant", content="ok"), done)
    assert message.usage_metadata == {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    assert message.response_metadata["finish_reason"] == "stop"  # done_reason omitted: stop
    timings = [name for name in message.response_metadata if name.endswith("_duration")]
    assert timings == []


async def test_length_and_usage_from_the_server() -> None:
    reply = ScriptedReply(
        text_chunks=["a", "b"], finish_reason="length", usage={"prompt_tokens": 9}
    )
    message, chunks, _ = await _answer([reply], max_tokens=2)
    assert message.response_metadata["finish_reason"] == "length"
    assert message.usage_metadata == {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}
    assert sum(1 for chunk in chunks if chunk.usage_metadata) == 1


# -- errors -----------------------------------------------------------------------------------


async def test_error_after_output_keeps_the_partial() -> None:
    with pytest.raises(ServerError, match="error was encountered") as caught:
        await _answer(faults=Faults(error_event_after=1))
    assert caught.value.status is None
    assert caught.value.partial is not None
    assert caught.value.partial.content == "Hel"


async def test_unknown_model_is_not_found() -> None:
    async with OllamaServer([HELLO], models=["llama3.2"]) as server:
        async with ChatOllama(base_url=server.base_url, model="nope") as model:
            with pytest.raises(NotFoundError) as caught:
                await model.ainvoke("Hi")
    assert caught.value.message == "model 'nope' not found"
    assert (caught.value.status, caught.value.partial) == (404, None)


@pytest.mark.parametrize("faults", [Faults(omit_done=True), Faults(disconnect_after=2)])
async def test_a_truncated_stream_is_not_a_success(faults: Faults) -> None:
    with pytest.raises(StreamInterruptedError) as caught:
        await _answer(faults=faults)
    assert caught.value.partial is not None
    assert caught.value.partial.content == "Hello"[: len(str(caught.value.partial.content))]


async def test_malformed_line_is_a_protocol_error() -> None:
    with pytest.raises(StreamProtocolError):
        await _answer(faults=Faults(malformed_after=1))


async def test_proxy_key_is_sent_as_bearer() -> None:
    async with OllamaServer([HELLO], api_key="proxy-key") as server:
        async with ChatOllama(base_url=server.base_url) as model:
            with pytest.raises(AuthenticationError):
                await model.ainvoke("Hi")
        async with ChatOllama(base_url=server.base_url, api_key="proxy-key") as model:
            assert (await model.ainvoke("Hi")).content == "Hello"
    assert "authorization" not in server.requests[0].headers
    assert server.requests[1].headers["authorization"] == "Bearer proxy-key"


# -- base URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("gpu-box", "http://gpu-box:11434"),
        ("gpu-box:8080", "http://gpu-box:8080"),
        (":8080", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("::1", "http://[::1]:11434"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        ("http://example.com/ollama/", "http://example.com:80/ollama"),
        ("  box:99999 ", "http://box:11434"),  # a bad port falls back, as Ollama does
    ],
)
def test_ollama_host_values(host: str, url: str) -> None:
    assert _host_url(host) == url


async def test_ollama_host_without_a_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    async with OllamaServer([HELLO]) as server:
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.port}")
        async with ChatOllama() as model:
            assert model.base_url == f"http://127.0.0.1:{server.port}"
            assert (await model.ainvoke("Hi")).content == "Hello"
    monkeypatch.delenv("OLLAMA_HOST")
    assert ChatOllama().base_url == "http://localhost:11434"


# -- request ----------------------------------------------------------------------------------


async def test_settings_and_per_call_params_reach_the_wire() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    settings = {
        "options": {"num_ctx": 4096, "temperature": 1.0},
        "temperature": 0.2,
        "keep_alive": "10m",
        "format": schema,
        "default_headers": {"X-Team": "blue"},
    }
    async with OllamaServer([HELLO]) as server:
        async with ChatOllama(base_url=server.base_url, **settings) as model:
            await model.ainvoke("Hi", max_tokens=5, stop=["x"], seed=7)
            with pytest.raises(TypeError, match="temprature"):
                await model.ainvoke("Hi", temprature=0)
    request = server.requests[0]
    assert request.path == "/api/chat"
    assert request.headers["x-team"] == "blue"
    assert request.body["options"] == {
        "num_ctx": 4096,
        "temperature": 0.2,  # the convenience field wins over the same option
        "seed": 7,
        "num_predict": 5,
        "stop": ["x"],
    }
    assert (request.body["keep_alive"], request.body["format"]) == ("10m", schema)


def test_to_wire_maps_every_message_type() -> None:
    messages = [
        SystemMessage("Be brief."),
        HumanMessage(
            [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]
        ),
        AIMessage(
            "Looking.",
            tool_calls=[{"name": "look", "args": {"q": "cät"}, "id": None}],
            invalid_tool_calls=[{"name": "bad", "args": "{", "id": "c2", "error": "x"}],
        ),
        ToolMessage("a cat", tool_call_id="c1", name="look"),
        ChatMessage("Fine.", role="User"),
        AIMessageChunk("streamed"),
    ]
    settings = {"model": "llama3.2", "tools": [{"type": "function", "function": {"name": "look"}}]}
    assert _to_wire(messages, settings) == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is this?", "images": ["iVBORw0KGgo="]},
            {
                "role": "assistant",
                "content": "Looking.",
                "tool_calls": [
                    {"function": {"name": "look", "arguments": {"q": "cät"}}},
                    {"function": {"name": "bad", "arguments": {}}, "id": "c2"},
                ],
            },
            {"role": "tool", "content": "a cat", "tool_call_id": "c1", "tool_name": "look"},
            {"role": "user", "content": "Fine."},
            {"role": "assistant", "content": "streamed"},
        ],
        "stream": True,
        "tools": [{"type": "function", "function": {"name": "look"}}],
    }


@pytest.mark.parametrize(
    ("messages", "error", "where"),
    [
        ([HumanMessage("Hi"), ChatMessage("Meh", role="critic")], InvalidInputError, "messages[1]"),
        (
            [HumanMessage([{"type": "image_url", "image_url": "https://x/cat.png"}])],
            InvalidInputError,
            "messages[0]",
        ),
        ([FunctionMessage("18C", name="f")], InputTypeError, "messages[0]"),
    ],
)
def test_messages_ollama_cannot_take(
    messages: list[Any], error: type[Exception], where: str
) -> None:
    with pytest.raises(error, match=r"messages\[\d\]") as caught:
        _to_wire(messages, {"model": "m"})
    assert caught.value.where == where  # type: ignore[attr-defined]


def test_to_chunk_ignores_empty_and_unknown_lines() -> None:
    assert _to_chunk(_line(role="assistant", content="")) is None
    assert _to_chunk({"status": "pulling"}) is None
    assert _to_chunk([1, 2]) is None


# -- structured output ------------------------------------------------------------------------


async def test_structured_output_is_sent_as_format() -> None:
    schema = {"title": "city", "type": "object", "properties": {"name": {"type": "string"}}}
    reply = ScriptedReply(text_chunks=['{"name": ', '"Paris"}'])
    async with OllamaServer([reply]) as server:
        async with ChatOllama(base_url=server.base_url) as model:
            answer = await model.with_structured_output(schema).ainvoke("City?")
            json_mode = model.with_structured_output(schema, method="json_mode")
            assert await json_mode.ainvoke("City?") == {"name": "Paris"}
    assert answer == {"name": "Paris"}
    assert [request.body["format"] for request in server.requests] == [schema, "json"]


async def test_a_format_schema_the_server_cannot_compile_is_refused() -> None:
    schema = {"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}
    async with OllamaServer([ScriptedReply(text_chunks=["{}"])]) as server:
        async with ChatOllama(base_url=server.base_url, max_retries=0) as model:
            with pytest.raises(ServerError, match="invalid JSON schema in format"):
                await model.with_structured_output(schema).ainvoke("x")
