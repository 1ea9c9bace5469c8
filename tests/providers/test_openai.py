"""ChatOpenAI: the conformance suite, then OpenAI's own wire details and compatible dialects."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from pydantic import BaseModel

from chatstream.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    ProviderError,
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
from chatstream.providers.openai import ChatOpenAI, _to_chunk, _to_wire
from chatstream.testing.conformance import ChatModelConformance, ReceivedRequest
from chatstream.testing.openai_server import Faults, OpenAIServer, ScriptedReply, ScriptedToolCall

from ._helpers import ModelHarness, serve_raw, stream_answer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from chatstream.testing._base import LocalServer

KEY = "test-key"
HELLO = ScriptedReply(text_chunks=["Hel", "lo"], usage={"prompt_tokens": 3, "completion_tokens": 2})


class OpenAIHarness(ModelHarness):
    model_class = ChatOpenAI

    @property
    def finish_reasons(self) -> dict[str, str]:
        return {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}

    def server(
        self, replies: Sequence[ScriptedReply] = (), faults: Faults | None = None, *, api_key: str
    ) -> LocalServer:
        return OpenAIServer(replies, faults, api_key=api_key)

    def received(self, server: LocalServer) -> list[ReceivedRequest]:
        return [
            ReceivedRequest(
                messages=[_neutral(message) for message in request.body["messages"]],
                stream=request.body.get("stream") is True,
                headers=request.headers,
                body=request.body,
                **_neutral_tools(request.body),
            )
            for request in server.requests
        ]


def _neutral_tools(body: dict[str, Any]) -> dict[str, Any]:
    """The request's tools, tool choice and answer format in the suite's neutral terms."""
    tools = [
        {
            "name": tool["function"]["name"],
            "description": tool["function"].get("description", ""),
            "parameters": tool["function"].get("parameters"),
        }
        for tool in body.get("tools") or []
    ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = choice["function"]["name"]
    output: Any = None
    match body.get("response_format"):
        case {"type": "json_schema", "json_schema": {"schema": schema}}:
            output = schema
        case {"type": "json_object"}:
            output = "json"
    return {
        "tools": tools,
        "tool_choice": choice,
        "parallel_tool_calls": body.get("parallel_tool_calls"),
        "output_format": output,
    }


def _neutral(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content)
    neutral = {"role": message["role"], "content": content or ""}
    if message.get("tool_calls"):
        neutral["tool_calls"] = [
            {
                "id": call["id"],
                "name": call["function"]["name"],
                "args": json.loads(call["function"]["arguments"]),
            }
            for call in message["tool_calls"]
        ]
    if "tool_call_id" in message:
        neutral["tool_call_id"] = message["tool_call_id"]
    return neutral


@pytest.fixture
def harness() -> OpenAIHarness:
    return OpenAIHarness()


class TestOpenAIConformance(ChatModelConformance):
    pass


# -- helpers ----------------------------------------------------------------------------------


async def _answer(
    replies: Sequence[ScriptedReply] = (HELLO,),
    faults: Faults | None = None,
    prompt: Any = "Hi",
    **settings: Any,
) -> tuple[AIMessage, list[AIMessageChunk], OpenAIServer]:
    """Stream one answer from a fresh server: the merged message, the chunks and the server."""
    server = OpenAIServer(replies, faults, api_key=KEY)
    message, chunks = await stream_answer(server, ChatOpenAI, prompt, api_key=KEY, **settings)
    return message, chunks, server


# -- dialects of compatible servers (protocols.md §1.7, §4.2) ----------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        Faults(line_ending="\r\n"),
        Faults(line_ending="\r"),
        Faults(no_space_after_colon=True),
        Faults(comments=True),
        Faults(bom=True),
        Faults(multiline_data=True),
        Faults(spaced_json=True),
        Faults(split_writes=1),
        Faults(split_writes=7, line_ending="\r\n"),
        Faults(role_every_chunk=True),
        Faults(finish_on_content_chunk=True),
        Faults(obfuscation=True),
        Faults(omit_done=True),
        Faults(usage_every_chunk=True),
    ],
    ids=lambda faults: ",".join(sorted(faults.model_dump(exclude_defaults=True))),
)
async def test_dialects_give_the_same_answer(faults: Faults) -> None:
    reply = ScriptedReply(text_chunks=["Zoë ", "и ", "日本"], finish_reason="stop")
    message, chunks, _ = await _answer([reply], faults)
    assert message.content == "Zoë и 日本"
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.response_metadata["model_name"] == "gpt-4o-mini"
    assert sum(1 for chunk in chunks if chunk.usage_metadata) == 1
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == 3


async def test_cumulative_usage_on_every_chunk_is_reported_once() -> None:
    # vLLM's continuous usage: running totals on every chunk; only the last one counts.
    message, chunks, _ = await _answer(faults=Faults(usage_every_chunk=True), stream_usage=False)
    assert [chunk.usage_metadata for chunk in chunks if chunk.usage_metadata] == [
        {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    ]
    assert message.usage_metadata == {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}


async def test_groq_usage_is_read() -> None:
    event = {"id": "x", "choices": [], "x_groq": {"usage": {"prompt_tokens": 2}}}
    from chatstream.providers.openai import _usage

    assert _usage(event) == {"input_tokens": 2, "output_tokens": 0, "total_tokens": 2}


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_reasoning_deltas(key: str) -> None:
    reply = ScriptedReply(reasoning_chunks=["Think", "ing"], text_chunks=["42"])
    message, _, _ = await _answer([reply], Faults(reasoning_key=key))
    assert message.additional_kwargs["reasoning_content"] == "Thinking"
    assert message.content == "42"


async def test_refusal_deltas() -> None:
    reply = ScriptedReply(refusal_chunks=["I'm", " sorry"])
    message, _, _ = await _answer([reply])
    assert message.additional_kwargs["refusal"] == "I'm sorry"
    assert message.content == ""


async def test_legacy_function_call() -> None:
    call = ScriptedToolCall(id="call_f", name="get_info", argument_chunks=['{"', 'city":"Paris"}'])
    reply = ScriptedReply(tool_calls=[call], finish_reason="tool_calls")
    functions = [{"name": "get_info", "parameters": {"type": "object"}}]
    message, _, server = await _answer([reply], extra_body={"functions": functions})
    assert message.additional_kwargs["function_call"] == {
        "name": "get_info",
        "arguments": '{"city":"Paris"}',
    }
    assert message.response_metadata["finish_reason"] == "function_call"
    assert server.requests[0].body["functions"] == functions


async def test_n_choices_are_told_apart() -> None:
    replies = [ScriptedReply(text_chunks=["A", "a"]), ScriptedReply(text_chunks=["B", "b", "!"])]
    async with OpenAIServer(replies, api_key=KEY) as server:
        async with ChatOpenAI(base_url=server.base_url, api_key=KEY, n=2) as model:
            chunks = [chunk async for chunk in model.astream("Hi")]
            result = await model.agenerate(["Hi"])
    marked = [chunk for chunk in chunks if not chunk.usage_metadata]
    assert {chunk.response_metadata["choice_index"] for chunk in marked} == {0, 1}
    assert sum(1 for chunk in chunks if chunk.usage_metadata) == 1
    [generations] = result.generations
    assert [g.message.content for g in generations] == ["Aa", "Bb!"]
    assert [g.generation_info for g in generations] == [{"finish_reason": "stop"}] * 2
    assert result.llm_output is not None
    assert result.llm_output["token_usage"]["completion_tokens"] == 5


# -- stream_usage -------------------------------------------------------------------------------


async def test_stream_usage_is_requested_by_default_and_can_be_off() -> None:
    _, _, on = await _answer()
    message, _, off = await _answer(stream_usage=False)
    assert on.requests[0].body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in off.requests[0].body
    assert message.usage_metadata is None


async def test_a_server_refusing_stream_options_is_asked_again_without() -> None:
    refusal = {
        "error": {
            "message": "Unrecognized request argument supplied: stream_options",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    faults = Faults(http_error=400, fail_times=1, error_body=refusal)
    async with OpenAIServer([HELLO], faults, api_key=KEY) as server:
        async with ChatOpenAI(base_url=server.base_url, api_key=KEY) as model:
            first = await model.ainvoke("Hi")
            await model.ainvoke("Again")
    assert first.content == "Hello"
    sent = ["stream_options" in request.body for request in server.requests]
    assert sent == [True, False, False]  # refused once, then remembered


async def test_other_bad_requests_are_not_retried_without_stream_options() -> None:
    async with OpenAIServer([HELLO], Faults(http_error=400), api_key=KEY) as server:
        async with ChatOpenAI(base_url=server.base_url, api_key=KEY) as model:
            with pytest.raises(BadRequestError):
                await model.ainvoke("Hi")
    assert len(server.requests) == 1


# -- errors ---------------------------------------------------------------------------------


async def test_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    async with ChatOpenAI() as model:  # OpenAI's own API: a key is needed, asked before connecting
        assert model.api_key is None
        with pytest.raises(AuthenticationError, match="OPENAI_API_KEY") as caught:
            await model.ainvoke("Hi")
    assert caught.value.status is None


async def test_a_keyless_local_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with OpenAIServer([HELLO]) as server, ChatOpenAI(base_url=server.base_url) as model:
        assert (await model.ainvoke("Hi")).text == "Hello"
    assert "authorization" not in server.requests[0].headers


async def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
    async with ChatOpenAI() as model:
        assert model.api_key is not None
        assert model.api_key.get_secret_value() == "env-key"
        assert (model.base_url, model.organization) == ("http://127.0.0.1:1/v1", "org-1")
        assert "env-key" not in repr(model)


async def test_headers_sent() -> None:
    _, _, server = await _answer(organization="org-9", default_headers={"X-Team": "blue"})
    headers = server.requests[0].headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["openai-organization"] == "org-9"
    assert headers["x-team"] == "blue"
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("status", "body", "message", "code", "error"),
    [
        (401, {"detail": "Invalid API key"}, "Invalid API key", None, AuthenticationError),
        (
            400,
            {"error": {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}},
            "bad",
            "400",
            BadRequestError,
        ),
        (401, "<html>Unauthorized</html>", "HTTP 401 Unauthorized", None, AuthenticationError),
        (404, {"error": "model 'x' not found"}, "model 'x' not found", None, NotFoundError),
    ],
)
async def test_error_body_dialects(
    status: int, body: Any, message: str, code: str | None, error: type[ProviderError]
) -> None:
    faults = Faults(http_error=status, error_body=body)
    with pytest.raises(error) as caught:
        await _answer(faults=faults)
    assert (caught.value.message, caught.value.code) == (message, code)


async def test_fastapi_detail_on_a_wrong_key() -> None:
    faults = Faults(fastapi_detail_error=True)
    async with OpenAIServer([HELLO], faults, api_key="other") as server:
        async with ChatOpenAI(base_url=server.base_url, api_key=KEY) as model:
            with pytest.raises(AuthenticationError, match="Invalid API key"):
                await model.ainvoke("Hi")


@pytest.mark.parametrize("done", [False, True])
async def test_error_event_mid_stream(done: bool) -> None:
    faults = Faults(error_event_after=2, done_after_error=done)
    with pytest.raises(ServerError) as caught:
        await _answer(faults=faults)
    assert caught.value.status is None
    assert caught.value.code == "server_error"
    assert caught.value.partial is not None
    assert caught.value.partial.content == "Hel"


async def test_error_event_with_an_int_code_maps_by_status() -> None:
    error = {"message": "context too long", "type": "invalid_request_error", "code": 400}
    with pytest.raises(BadRequestError, match="context too long") as caught:
        await _answer(faults=Faults(error_event_after=2, error_event=error))
    assert caught.value.code == "400"


async def test_old_llama_cpp_error_field_is_not_a_success() -> None:
    # The error hides in a non-standard ``error:`` field that SSE ignores; then [DONE] comes.
    with pytest.raises(StreamInterruptedError, match="without a finish_reason") as caught:
        await _answer(faults=Faults(error_event_after=2, legacy_error_field=True))
    assert caught.value.partial is not None
    assert caught.value.partial.content == "Hel"


async def test_malformed_json_is_a_protocol_error() -> None:
    with pytest.raises(StreamProtocolError) as caught:
        await _answer(faults=Faults(malformed_after=2))
    assert caught.value.line is not None
    assert caught.value.line.startswith('{"id": "broken"')


async def test_connection_dropped_mid_event_is_an_error() -> None:
    with pytest.raises(StreamInterruptedError) as caught:
        await _answer(faults=Faults(disconnect_after=2))
    assert caught.value.partial is not None


async def test_connection_refused_is_retried_then_raised() -> None:
    from chatstream.errors import APIConnectionError

    with anyio.fail_after(10):
        async with ChatOpenAI(base_url="http://127.0.0.1:9/v1", api_key=KEY, max_retries=0) as m:
            with pytest.raises(APIConnectionError, match="could not get a response"):
                await m.ainvoke("Hi")


@pytest.fixture
async def plain_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A bare aiohttp server answering with whatever body the test puts in the list."""
    async with serve_raw("/v1/chat/completions", "text/event-stream") as (url, bodies):
        yield f"{url}/v1", bodies


def _sse(*objects: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objects)


async def test_a_cut_stream_is_not_a_success(plain_server: tuple[str, list[bytes]]) -> None:
    url, bodies = plain_server
    bodies.append(_sse({"id": "c", "choices": [{"index": 0, "delta": {"content": "Half"}}]}))
    async with ChatOpenAI(base_url=url, api_key=KEY) as model:
        with pytest.raises(StreamInterruptedError, match="cut short") as caught:
            await model.ainvoke("Hi")
    assert caught.value.partial is not None
    assert caught.value.partial.content == "Half"


async def test_eof_after_the_finish_reason_is_a_normal_end(
    plain_server: tuple[str, list[bytes]],
) -> None:
    url, bodies = plain_server
    bodies.append(
        _sse({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]})
    )
    async with ChatOpenAI(base_url=url, api_key=KEY) as model:
        message = await model.ainvoke("Hi")
    assert (message.content, message.response_metadata["finish_reason"]) == ("ok", "stop")


async def test_a_json_answer_to_a_stream_request(plain_server: tuple[str, list[bytes]]) -> None:
    url, bodies = plain_server
    completion = {
        "id": "chatcmpl-1",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    bodies.append(json.dumps(completion).encode())
    async with ChatOpenAI(base_url=url, api_key=KEY) as model:
        message = await model.ainvoke("Hi")
    assert message.tool_calls == [{"name": "f", "args": {}, "id": "c1"}]
    assert message.usage_metadata == {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


# -- pure mapping -------------------------------------------------------------------------------


def test_to_wire_maps_every_message_type() -> None:
    messages = [
        SystemMessage("Be brief.", name="rules"),
        HumanMessage(
            [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": "https://x/cat.png"},
            ]
        ),
        AIMessage(
            "",
            tool_calls=[{"name": "look", "args": {"q": "cät"}, "id": "call_1"}],
            invalid_tool_calls=[{"name": "bad", "args": "{", "id": "call_2", "error": "x"}],
        ),
        ToolMessage("a cat", tool_call_id="call_1"),
        ToolMessage("?", tool_call_id="call_2"),
        AIMessage("", additional_kwargs={"function_call": {"name": "f", "arguments": "{}"}}),
        FunctionMessage("done", name="f"),
        ChatMessage("Looks fine.", role="developer"),
        AIMessageChunk("streamed"),
    ]
    settings = {
        "model": "gpt-x",
        "temperature": 0.5,
        "top_p": None,
        "stop": ["\n"],
        "n": None,
        "tools": [{"type": "function", "function": {"name": "look"}}],
        "stream_usage": True,
        "extra_body": {"parallel_tool_calls": False},
    }
    assert _to_wire(messages, settings) == {
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "Be brief.", "name": "rules"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q": "cät"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "bad", "arguments": "{"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "call_2", "content": "?"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": "{}"},
            },
            {"role": "function", "name": "f", "content": "done"},
            {"role": "developer", "content": "Looks fine."},
            {"role": "assistant", "content": "streamed"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.5,
        "stop": ["\n"],
        "tools": [{"type": "function", "function": {"name": "look"}}],
        "parallel_tool_calls": False,
    }


async def test_per_call_params_reach_the_wire() -> None:
    async with OpenAIServer([HELLO], api_key=KEY) as server:
        async with ChatOpenAI(base_url=server.base_url, api_key=KEY, temperature=1.0) as model:
            await model.ainvoke("Hi", temperature=0, max_tokens=5, stop=["x"])
            with pytest.raises(TypeError, match="temprature"):
                await model.ainvoke("Hi", temprature=0)
    body = server.requests[0].body
    assert (body["temperature"], body["max_tokens"], body["stop"]) == (0, 5, ["x"])


def test_to_chunk_ignores_unknown_and_empty_objects() -> None:
    assert _to_chunk({"object": "keep-alive"}) is None
    assert _to_chunk({"choices": []}) is None
    assert _to_chunk({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}) is None
    chunk = _to_chunk(
        {
            "id": "",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": None, "function_call": None, "new_thing": 1},
                    "finish_reason": "length",
                    "logprobs": {"content": [{"token": "a", "logprob": -1.0}]},
                }
            ],
            "model": "",
        }
    )
    assert chunk is not None
    assert chunk.id is None
    assert chunk.response_metadata == {
        "finish_reason": "length",
        "logprobs": {"content": [{"token": "a", "logprob": -1.0}]},
    }


def test_to_chunk_tool_call_fragments() -> None:
    first = {"index": 1, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
    chunk = _to_chunk({"choices": [{"index": 0, "delta": {"tool_calls": [first]}}]})
    assert chunk is not None
    assert chunk.tool_call_chunks == [{"name": "f", "args": "", "id": "c", "index": 1}]
    more = {"index": 1, "function": {"arguments": {"a": 1}}}  # an object, not JSON text
    chunk = _to_chunk({"choices": [{"index": 0, "delta": {"tool_calls": [more]}}]})
    assert chunk is not None
    assert chunk.tool_call_chunks == [{"name": None, "args": '{"a": 1}', "id": None, "index": 1}]


async def test_several_choices_in_one_object() -> None:
    from chatstream.providers.openai import _split_choices

    event = {
        "id": "x",
        "choices": [
            {"index": 0, "delta": {"content": "a"}},
            {"index": 1, "delta": {"content": "b"}},
        ],
    }
    chunks = [_to_chunk(part, n=2) for part in _split_choices(event)]
    assert [(c.content, c.response_metadata) for c in chunks if c] == [
        ("a", {"choice_index": 0}),
        ("b", {"choice_index": 1}),
    ]


def test_repr_hides_the_key() -> None:
    model = ChatOpenAI(api_key="sk-very-secret-value")
    assert "sk-very-secret-value" not in repr(model)
    assert "sk-very-secret-value" not in str(model)
    assert "sk-very-secret-value" not in model.model_dump_json()


# -- tools and structured output: what only OpenAI's wire has ----------------------------------


async def test_strict_schemas_are_closed_and_open_ones_refused() -> None:
    class City(BaseModel):
        name: str
        population: int | None = None

    reply = ScriptedReply(text_chunks=['{"name": "Paris", "population": null}'])
    async with OpenAIServer([reply], api_key=KEY) as server:
        async with ChatOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as model:
            city = await model.with_structured_output(City, strict=True).ainvoke("City?")
            open_schema = {"title": "c", "type": "object", "properties": {"n": {"type": "string"}}}
            loose = model.model_copy(
                update={
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "c", "schema": open_schema, "strict": True},
                    }
                }
            )
            with pytest.raises(BadRequestError, match="additionalProperties"):
                await loose.ainvoke("City?")
    assert city == City(name="Paris")
    sent = server.requests[0].body["response_format"]["json_schema"]
    assert sent["strict"] is True
    assert sent["schema"]["additionalProperties"] is False
    assert sent["schema"]["required"] == ["name", "population"]


async def test_json_mode_needs_the_word_json_as_the_api_does() -> None:
    async with OpenAIServer([HELLO], api_key=KEY) as server:
        async with ChatOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as model:
            structured = model.with_structured_output({"title": "x"}, method="json_mode")
            with pytest.raises(BadRequestError, match="must contain the word 'json'"):
                await structured.ainvoke("Hi")


async def test_a_named_tool_choice_is_a_function_choice_on_the_wire() -> None:
    def ping() -> str:
        """Ping."""
        return "pong"

    async with OpenAIServer([HELLO], api_key=KEY) as server:
        async with ChatOpenAI(base_url=server.base_url, api_key=KEY) as model:
            await model.bind_tools([ping], tool_choice="ping").ainvoke("Hi")
    assert server.requests[0].body["tool_choice"] == {
        "type": "function",
        "function": {"name": "ping"},
    }


async def test_usage_reported_per_choice_is_added_up() -> None:
    # Some servers send one usage-only chunk (`choices: []`) per choice when n > 1: the usage
    # of the call is their sum (the prompt counted once), not the last one.
    def event(data: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(data)}\n\n".encode()

    def choice(index: int, **fields: Any) -> dict[str, Any]:
        return {"id": "c", "choices": [{"index": index, **fields}]}

    usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    body = b"".join(
        [
            event(choice(0, delta={"content": "A"}, finish_reason="stop")),
            event(choice(1, delta={"content": "B"}, finish_reason="stop")),
            event({"id": "c", "choices": [], "usage": usage}),
            event({"id": "c", "choices": [], "usage": usage}),
            b"data: [DONE]\n\n",
        ]
    )
    async with serve_raw("/v1/chat/completions", "text/event-stream") as (url, bodies):
        bodies.append(body)
        async with ChatOpenAI(base_url=url + "/v1", api_key=KEY, n=2) as model:
            result = await model.agenerate([["Hi"]])
    assert [g.text for g in result.generations[0]] == ["A", "B"]
    assert result.llm_output is not None
    assert result.llm_output["token_usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 8,
        "total_tokens": 13,
    }
