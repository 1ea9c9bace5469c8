"""The local OpenAI server itself, checked with a raw aiohttp client (no chatstream code)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import pytest

from chatstream.testing.openai_server import (
    Faults,
    OpenAIServer,
    ScriptedReply,
    ScriptedToolCall,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

USER = [{"role": "user", "content": "Say hi"}]
HI = ScriptedReply(text_chunks=["Hi", " thére"])
WEATHER = ScriptedReply(
    tool_calls=[
        ScriptedToolCall(
            id="call_a", name="get_weather", argument_chunks=['{"ci', 'ty": "Paris"}']
        ),
        ScriptedToolCall(id="call_b", name="get_time", argument_chunks=["{}"]),
    ],
    finish_reason="tool_calls",
)


@pytest.fixture
def anyio_backend() -> str:
    # The server is an aiohttp app, which needs asyncio.
    return "asyncio"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def fixed(replies: list[ScriptedReply] | None = None, **kwargs: Any) -> OpenAIServer:
    """A server with deterministic ids so transcripts can be compared byte for byte."""
    return OpenAIServer(
        replies or [HI],
        completion_id="chatcmpl-test",
        created=1727346168,
        system_fingerprint="fp_test",
        **kwargs,
    )


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": USER, **extra}


async def post(
    session: aiohttp.ClientSession, server: OpenAIServer, payload: Any, **kwargs: Any
) -> tuple[int, Any, bytes]:
    url = server.base_url + "/chat/completions"
    async with session.post(url, json=payload, **kwargs) as resp:
        return resp.status, resp.headers, await resp.read()


async def collect(resp: aiohttp.ClientResponse, into: list[bytes]) -> None:
    """Read a body piece by piece, keeping what arrived even if reading fails."""
    async for piece in resp.content.iter_any():
        into.append(piece)


def events(raw: bytes) -> list[str]:
    """Data payloads of an LF-framed stream (the default framing)."""
    assert raw.endswith(b"\n\n"), raw[-40:]
    out = []
    for block in raw.decode().split("\n\n")[:-1]:
        lines = block.split("\n")
        assert all(line.startswith("data: ") for line in lines), block
        out.append("\n".join(line[6:] for line in lines))
    return out


def chunks(raw: bytes) -> list[dict[str, Any]]:
    payloads = events(raw)
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


def deltas(raw: bytes) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks(raw) if c["choices"]]


HEAD = (
    '{"id":"chatcmpl-test","object":"chat.completion.chunk","created":1727346168,'
    '"model":"gpt-test","system_fingerprint":"fp_test","service_tier":"default","choices":'
)
EXPECTED_TRANSCRIPT = (
    "data: " + HEAD + '[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
    '"logprobs":null,"finish_reason":null}]}\n\n'
    "data: " + HEAD + '[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}'
    "\n\n"
    "data: " + HEAD + '[{"index":0,"delta":{"content":" thére"},"logprobs":null,'
    '"finish_reason":null}]}\n\n'
    "data: " + HEAD + '[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    "data: [DONE]\n\n"
).encode()


async def test_stream_transcript_is_byte_exact(session: aiohttp.ClientSession) -> None:
    async with fixed() as server:
        status, headers, raw = await post(session, server, body(stream=True))
    assert status == 200
    assert raw == EXPECTED_TRANSCRIPT
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["x-request-id"].startswith("req_")


async def test_random_ids_are_stable_within_a_response(session: aiohttp.ClientSession) -> None:
    async with OpenAIServer([HI]) as server:
        _, _, first = await post(session, server, body(stream=True))
        _, _, second = await post(session, server, body(stream=True))
    ids = {c["id"] for c in chunks(first)}
    assert len(ids) == 1
    assert next(iter(ids)).startswith("chatcmpl-")
    assert len({(c["created"], c["model"], c["system_fingerprint"]) for c in chunks(first)}) == 1
    assert ids != {c["id"] for c in chunks(second)}


@pytest.mark.parametrize("include_usage", [True, False, None])
async def test_usage_chunk_only_with_include_usage(
    session: aiohttp.ClientSession, include_usage: bool | None
) -> None:
    extra: dict[str, Any] = {"stream": True}
    if include_usage is not None:
        extra["stream_options"] = {"include_usage": include_usage}
    async with fixed() as server:
        _, _, raw = await post(session, server, body(**extra))
    got = chunks(raw)
    if include_usage:
        last = got[-1]
        assert last["choices"] == []
        assert last["usage"]["completion_tokens"] == 2
        assert last["usage"]["total_tokens"] == (
            last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
        )
        assert all(c["usage"] is None for c in got[:-1])
    else:
        assert all("usage" not in c and c["choices"] for c in got)


async def test_scripted_usage_wins(session: aiohttp.ClientSession) -> None:
    reply = ScriptedReply(text_chunks=["x"], usage={"prompt_tokens": 19, "completion_tokens": 10})
    async with fixed([reply]) as server:
        _, _, raw = await post(
            session, server, body(stream=True, stream_options={"include_usage": True})
        )
    usage = chunks(raw)[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        19,
        10,
        29,
    )


async def test_tool_call_fragments(session: aiohttp.ClientSession) -> None:
    async with fixed([WEATHER]) as server:
        _, _, raw = await post(session, server, body(stream=True))
    got = deltas(raw)
    assert got[0] == {"role": "assistant", "content": None}
    assert got[1] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    assert got[2] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}
    assert got[3] == {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}
    assert got[4]["tool_calls"][0]["index"] == 1
    assert got[4]["tool_calls"][0]["id"] == "call_b"
    assert got[-1] == {}
    assert chunks(raw)[-1]["choices"][0]["finish_reason"] == "tool_calls"
    args = "".join(
        tc["function"]["arguments"]
        for d in got
        for tc in d.get("tool_calls", [])
        if tc["index"] == 0
    )
    assert json.loads(args) == {"city": "Paris"}


async def test_refusal_stream(session: aiohttp.ClientSession) -> None:
    reply = ScriptedReply(refusal_chunks=["I'm", " sorry"])
    async with fixed([reply]) as server:
        _, _, raw = await post(session, server, body(stream=True))
    assert deltas(raw) == [
        {"role": "assistant", "content": None, "refusal": ""},
        {"refusal": "I'm"},
        {"refusal": " sorry"},
        {},
    ]


async def test_n2_interleaves_choices(session: aiohttp.ClientSession) -> None:
    second = ScriptedReply(text_chunks=["B1", "B2", "B3"], finish_reason="length")
    async with fixed([HI, second]) as server:
        _, _, raw = await post(session, server, body(stream=True, n=2))
    got = chunks(raw)
    assert all(len(c["choices"]) == 1 for c in got)
    indexes = [c["choices"][0]["index"] for c in got]
    assert indexes[:6] == [0, 1, 0, 1, 0, 1]
    for index, text, finish in ((0, "Hi thére", "stop"), (1, "B1B2B3", "length")):
        mine = [c["choices"][0] for c in got if c["choices"][0]["index"] == index]
        assert sum("role" in ch["delta"] for ch in mine) == 1
        assert [ch["finish_reason"] for ch in mine if ch["finish_reason"]] == [finish]
        assert "".join(ch["delta"].get("content") or "" for ch in mine) == text


async def test_non_stream_shapes(session: aiohttp.ClientSession) -> None:
    async with fixed([HI, WEATHER]) as server:
        status, headers, raw = await post(session, server, body())
        _, _, raw_tools = await post(session, server, body())
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    completion = json.loads(raw)
    assert completion["object"] == "chat.completion"
    assert completion["id"] == "chatcmpl-test"
    choice = completion["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Hi thére",
        "refusal": None,
        "annotations": [],
    }
    assert choice["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] == 2
    message = json.loads(raw_tools)["choices"][0]["message"]
    assert message["content"] is None
    call = message["tool_calls"][0]
    assert call == {
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert json.loads(raw_tools)["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("auth", "code"),
    [(None, None), ("Bearer wrong-key-1234", "invalid_api_key"), ("Basic sk-good", None)],
)
async def test_auth_rejected(session: aiohttp.ClientSession, auth: str | None, code: str | None):
    headers = {"Authorization": auth} if auth else {}
    async with OpenAIServer(api_key="sk-good") as server:
        status, resp_headers, raw = await post(session, server, body(), headers=headers)
    assert status == 401
    assert resp_headers["x-request-id"]
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert "sk-good" not in error["message"]


async def test_auth_accepted_and_recorded(session: aiohttp.ClientSession) -> None:
    headers = {"Authorization": "Bearer sk-good", "X-Stainless-Retry-Count": "0"}
    async with OpenAIServer(api_key="sk-good") as server:
        status, _, _ = await post(session, server, body(temperature=0.2), headers=headers)
    assert status == 200
    [recorded] = server.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == "Bearer sk-good"
    assert recorded.headers["x-stainless-retry-count"] == "0"
    assert recorded.body == body(temperature=0.2)


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"messages": USER}, None),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        (
            {"model": "m", "messages": USER, "stream_options": {"include_usage": True}},
            "stream_options",
        ),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (
            {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        (
            {
                "model": "m",
                "messages": [*USER, {"role": "tool", "tool_call_id": "c", "content": "x"}],
            },
            "messages.[1].role",
        ),
        (
            {
                "model": "m",
                "messages": [
                    *USER,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c", "type": "function"}],
                    },
                    *USER,
                ],
            },
            "messages.[1].role",
        ),
        ({"model": "m", "messages": USER, "n": 0}, "n"),
        ({"model": "m", "messages": USER, "tool_choice": "auto"}, "tool_choice"),
        (
            {
                "model": "m",
                "messages": USER,
                "tools": [{"type": "function", "function": {"name": "get weather"}}],
            },
            "tools[0].function.name",
        ),
        ([1, 2], None),
    ],
)
async def test_validation_errors(
    session: aiohttp.ClientSession, payload: Any, param: str | None
) -> None:
    async with OpenAIServer() as server:
        status, headers, raw = await post(session, server, payload)
    assert status == 400
    assert headers["x-request-id"]
    error = json.loads(raw)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_valid_tool_history_and_unknown_fields_accepted(
    session: aiohttp.ClientSession,
) -> None:
    history = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
    ]
    payload = {"model": "m", "messages": history, "frobnicate": True, "metadata": {"a": "b"}}
    async with OpenAIServer() as server:
        status, _, _ = await post(session, server, payload)
    assert status == 200


async def test_unknown_path_is_openai_404(session: aiohttp.ClientSession) -> None:
    async with OpenAIServer() as server:
        async with session.get(server.base_url + "/nope") as resp:
            assert resp.status == 404
            error = (await resp.json())["error"]
    assert error["message"] == "Invalid URL (GET /v1/nope)"
    assert server.requests[0].path == "/v1/nope"


async def test_replies_cycle_and_script_replaces(session: aiohttp.ClientSession) -> None:
    def text(raw: bytes) -> str:
        return str(json.loads(raw)["choices"][0]["message"]["content"])

    one, two = ScriptedReply.from_text("one"), ScriptedReply.from_text("two")
    async with OpenAIServer([one, two]) as server:
        got = [text((await post(session, server, body()))[2]) for _ in range(3)]
        server.script([ScriptedReply.from_text("three")])
        got.append(text((await post(session, server, body()))[2]))
    assert got == ["one", "two", "one", "three"]
    assert len(server.requests) == 4


async def test_legacy_function_call_stream(session: aiohttp.ClientSession) -> None:
    functions = [{"name": "get_weather", "parameters": {"type": "object"}}]
    async with fixed([WEATHER]) as server:
        _, _, raw = await post(session, server, body(stream=True, functions=functions))
    got = deltas(raw)
    assert got[0] == {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "get_weather", "arguments": ""},
    }
    assert got[1] == {"function_call": {"arguments": '{"ci'}}
    assert chunks(raw)[-1]["choices"][0]["finish_reason"] == "function_call"


# --- framing faults -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 7, 4096])
async def test_split_writes_reassemble_to_the_same_bytes(
    session: aiohttp.ClientSession, size: int
) -> None:
    reads = 0
    received = b""
    async with fixed(faults=Faults(split_writes=size, line_ending="\r\n")) as server:
        _, _, whole = await post(session, server, body(stream=True))
        url = server.base_url + "/chat/completions"
        async with session.post(url, json=body(stream=True)) as resp:
            async for piece in resp.content.iter_any():
                reads += 1
                received += piece
    assert received == whole
    assert whole == EXPECTED_TRANSCRIPT.replace(b"\n", b"\r\n")
    if size == 1:
        # One-byte writes cannot all arrive in one read per event.
        assert reads > len(EXPECTED_TRANSCRIPT.split(b"\n\n"))


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
async def test_line_endings(session: aiohttp.ClientSession, eol: str) -> None:
    async with fixed(faults=Faults(line_ending=eol)) as server:
        _, _, raw = await post(session, server, body(stream=True))
    assert raw == EXPECTED_TRANSCRIPT.replace(b"\n", eol.encode())
    assert raw.endswith(b"data: [DONE]" + (eol * 2).encode())


async def test_textual_framing_faults(session: aiohttp.ClientSession) -> None:
    async with fixed(faults=Faults(no_space_after_colon=True)) as server:
        _, _, raw = await post(session, server, body(stream=True))
    assert raw == EXPECTED_TRANSCRIPT.replace(b"data: ", b"data:")

    async with fixed(faults=Faults(bom=True, spaced_json=True)) as server:
        _, _, raw = await post(session, server, body(stream=True))
    assert raw.startswith(b'\xef\xbb\xbfdata: {"id": "chatcmpl-test", ')
    assert b"th\\u00e9re" in raw
    assert [json.loads(p) for p in events(raw[3:])[:-1]] == chunks(EXPECTED_TRANSCRIPT)

    async with fixed(faults=Faults(multiline_data=True)) as server:
        _, _, raw = await post(session, server, body(stream=True))
    blocks = raw.split(b"\n\n")[:-2]
    assert all(block.count(b"\ndata: ") == 1 for block in blocks)
    assert chunks(raw) == chunks(EXPECTED_TRANSCRIPT)


async def test_comments_between_events(session: aiohttp.ClientSession) -> None:
    async with fixed(faults=Faults(comments=True)) as server:
        _, _, raw = await post(session, server, body(stream=True))
        _, _, plain = await post(session, server, body())
    assert raw.startswith(b": ping\n\n")
    assert b": keep-alive\n\n" in raw
    stripped = b"".join(
        block + b"\n\n" for block in raw.split(b"\n\n")[:-1] if not block.startswith(b":")
    )
    assert stripped == EXPECTED_TRANSCRIPT
    assert plain.startswith(b"\n\n{")
    assert json.loads(plain)["object"] == "chat.completion"


# --- stream-content faults ------------------------------------------------------------------


async def test_malformed_after(session: aiohttp.ClientSession) -> None:
    async with fixed(faults=Faults(malformed_after=2)) as server:
        _, _, raw = await post(session, server, body(stream=True))
    payloads = events(raw)
    with pytest.raises(json.JSONDecodeError):
        json.loads(payloads[2])
    assert payloads[:2] + payloads[3:] == events(EXPECTED_TRANSCRIPT)


@pytest.mark.parametrize("done_after_error", [False, True])
async def test_error_event_after(session: aiohttp.ClientSession, done_after_error: bool) -> None:
    faults = Faults(error_event_after=2, done_after_error=done_after_error)
    async with fixed(faults=faults) as server:
        _, _, raw = await post(session, server, body(stream=True))
    payloads = events(raw)
    assert payloads[:2] == events(EXPECTED_TRANSCRIPT)[:2]
    assert json.loads(payloads[2])["error"]["type"] == "server_error"
    assert payloads[3:] == (["[DONE]"] if done_after_error else [])


async def test_legacy_error_field(session: aiohttp.ClientSession) -> None:
    error = {"code": 500, "message": "boom", "type": "server_error"}
    async with fixed(
        faults=Faults(error_event_after=1, legacy_error_field=True, error_event=error)
    ) as server:
        _, _, raw = await post(session, server, body(stream=True))
    blocks = raw.decode().split("\n\n")
    assert json.loads(blocks[1].removeprefix("error: ")) == error
    assert blocks[2:] == ["data: [DONE]", ""]


async def test_omit_done(session: aiohttp.ClientSession) -> None:
    async with fixed(faults=Faults(omit_done=True)) as server:
        _, _, raw = await post(session, server, body(stream=True))
    assert raw == EXPECTED_TRANSCRIPT.removesuffix(b"data: [DONE]\n\n")


async def test_dialect_faults(session: aiohttp.ClientSession) -> None:
    reply = ScriptedReply(text_chunks=["a", "b"], reasoning_chunks=["think"])
    faults = Faults(
        usage_every_chunk=True,
        role_every_chunk=True,
        finish_on_content_chunk=True,
        reasoning_key="reasoning",
    )
    async with fixed([reply], faults=faults) as server:
        _, _, raw = await post(session, server, body(stream=True))
    got = chunks(raw)
    completion = [c["usage"]["completion_tokens"] for c in got]
    assert completion == sorted(completion)
    assert completion[-1] == 3
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in got)
    assert got[1]["choices"][0]["delta"]["reasoning"] == "think"
    last = got[-1]["choices"][0]
    assert (last["delta"]["content"], last["finish_reason"]) == ("b", "stop")


async def test_obfuscation(session: aiohttp.ClientSession) -> None:
    async with fixed(faults=Faults(obfuscation=True)) as server:
        _, _, raw = await post(session, server, body(stream=True))
        _, _, off = await post(
            session, server, body(stream=True, stream_options={"include_obfuscation": False})
        )
    assert all(c["obfuscation"] for c in chunks(raw))
    assert all("obfuscation" not in c for c in chunks(off))


# --- connection faults ----------------------------------------------------------------------


async def test_disconnect_after_is_a_payload_error(session: aiohttp.ClientSession) -> None:
    pieces: list[bytes] = []
    async with fixed(faults=Faults(disconnect_after=2)) as server:
        url = server.base_url + "/chat/completions"
        async with session.post(url, json=body(stream=True)) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await collect(resp, pieces)
    received = b"".join(pieces)
    complete = b"".join(block + b"\n\n" for block in EXPECTED_TRANSCRIPT.split(b"\n\n")[:2])
    assert received.startswith(complete)
    assert len(received) > len(complete)
    assert not received.endswith(b"\n\n")
    # A drop the server initiated is not a client disconnect.
    assert server.disconnects == 0


async def test_stall_then_client_close_counts_a_disconnect(
    session: aiohttp.ClientSession,
) -> None:
    async with fixed(faults=Faults(stall_after=2)) as server:
        url = server.base_url + "/chat/completions"
        resp = await session.post(url, json=body(stream=True))
        received = b""
        while received.count(b"\n\n") < 2:
            received += await resp.content.readany()
        with anyio.move_on_after(0.1):
            received += await resp.content.readany()
        assert received.count(b"\n\n") == 2
        assert server.active_streams == 1
        assert server.disconnects == 0
        resp.close()
        await server.wait_for_disconnects(1)
        assert server.disconnects == 1
        assert server.active_streams == 0


async def test_stall_after_the_last_event_keeps_the_connection_open(
    session: aiohttp.ClientSession,
) -> None:
    n_events = len(events(EXPECTED_TRANSCRIPT))
    async with fixed(faults=Faults(stall_after=n_events)) as server:
        url = server.base_url + "/chat/completions"
        async with session.post(url, json=body(stream=True)) as resp:
            received = b""
            while not received.endswith(b"data: [DONE]\n\n"):
                received += await resp.content.readany()
            assert received == EXPECTED_TRANSCRIPT
            assert not resp.content.at_eof()
            assert server.active_streams == 1
        await server.wait_for_disconnects(1)


async def test_client_leaving_mid_stream_counts_a_disconnect(
    session: aiohttp.ClientSession,
) -> None:
    reply = ScriptedReply(text_chunks=["tick"] * 200)
    async with fixed([reply], faults=Faults(chunk_delay=0.01)) as server:
        url = server.base_url + "/chat/completions"
        async with session.post(url, json=body(stream=True)) as resp:
            await resp.content.readuntil(b"\n\n")
            assert server.active_streams == 1
        await server.wait_for_disconnects(1)
    assert server.active_streams == 0


async def test_completed_stream_is_not_a_disconnect(session: aiohttp.ClientSession) -> None:
    async with fixed() as server:
        await post(session, server, body(stream=True))
        with pytest.raises(TimeoutError):
            await server.wait_for_disconnects(1, timeout=0.05)
    assert server.disconnects == 0


async def test_first_byte_delay_holds_the_headers(session: aiohttp.ClientSession) -> None:
    async with fixed(faults=Faults(first_byte_delay=30)) as server:
        timeout = aiohttp.ClientTimeout(sock_read=0.05)
        with pytest.raises(aiohttp.ServerTimeoutError):
            await post(session, server, body(stream=True), timeout=timeout)
        await server.wait_for_requests(1)


async def test_chunk_delay_keeps_the_stream_open(session: aiohttp.ClientSession) -> None:
    async with fixed(faults=Faults(chunk_delay=0.05)) as server:
        url = server.base_url + "/chat/completions"
        async with session.post(url, json=body(stream=True)) as resp:
            first = await resp.content.readuntil(b"\n\n")
            assert server.active_streams == 1
            rest = await resp.read()
    assert first + rest == EXPECTED_TRANSCRIPT


# --- HTTP error faults ----------------------------------------------------------------------


async def test_fail_times_then_success(session: aiohttp.ClientSession) -> None:
    faults = Faults(
        http_error=429, fail_times=2, headers={"retry-after-ms": "10", "x-should-retry": "true"}
    )
    async with fixed(faults=faults) as server:
        results = [await post(session, server, body(stream=True)) for _ in range(3)]
    assert [status for status, _, _ in results] == [429, 429, 200]
    _, headers, raw = results[0]
    assert headers["retry-after-ms"] == "10"
    assert headers["x-should-retry"] == "true"
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(raw)["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert results[2][2] == EXPECTED_TRANSCRIPT
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "invalid_request_error"),
        (403, "request_forbidden"),
        (404, "invalid_request_error"),
        (409, "conflict"),
        (422, "invalid_request_error"),
        (500, "server_error"),
        (503, "service_unavailable_error"),
        (502, "server_error"),
    ],
)
async def test_http_error_table(session: aiohttp.ClientSession, status: int, type_: str) -> None:
    async with OpenAIServer(faults=Faults(http_error=status)) as server:
        got, headers, raw = await post(session, server, body())
        again, _, _ = await post(session, server, body())
    assert (got, again) == (status, status)
    assert headers["x-request-id"]
    error = json.loads(raw)["error"]
    assert error["type"] == type_
    assert set(error) == {"message", "type", "param", "code"}


async def test_error_body_variants(session: aiohttp.ClientSession) -> None:
    vllm = {"error": {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}}
    async with OpenAIServer(faults=Faults(http_error=400, error_body=vllm)) as server:
        _, _, raw = await post(session, server, body())
        server.script(faults=Faults(http_error=502, error_body="<html>Bad Gateway</html>"))
        status, headers, page = await post(session, server, body())
        server.script(faults=Faults(http_error=500, fastapi_detail_error=True))
        _, _, detail = await post(session, server, body())
    assert json.loads(raw) == vllm
    assert (status, page) == (502, b"<html>Bad Gateway</html>")
    assert headers["Content-Type"].startswith("text/html")
    assert set(json.loads(detail)) == {"detail"}


async def test_fastapi_detail_on_auth(session: aiohttp.ClientSession) -> None:
    async with OpenAIServer(api_key="k", faults=Faults(fastapi_detail_error=True)) as server:
        status, _, raw = await post(session, server, body())
    assert (status, json.loads(raw)) == (401, {"detail": "Invalid API key"})


async def test_base_url_needs_a_running_server() -> None:
    server = OpenAIServer()
    with pytest.raises(RuntimeError):
        _ = server.base_url
    async with server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/v1")
    with pytest.raises(RuntimeError):
        _ = server.base_url
