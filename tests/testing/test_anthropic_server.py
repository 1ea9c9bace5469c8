"""The local Anthropic Messages server itself, checked with a raw aiohttp client."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from chatstream.testing.anthropic_server import (
    AnthropicServer,
    Faults,
    ScriptedReply,
    ScriptedToolCall,
)

USER: list[dict[str, Any]] = [{"role": "user", "content": "Say hi"}]
VERSION = {"anthropic-version": "2023-06-01"}
HI = ScriptedReply(text_chunks=["Hi", " thére"])
FULL = ScriptedReply(
    reasoning_chunks=["Let me", " think."],
    text_chunks=["Checking", " both."],
    tool_calls=[
        ScriptedToolCall(
            id="toolu_01A", name="get_weather", argument_chunks=['{"ci', 'ty": "Paris"}']
        ),
        ScriptedToolCall(id="call_b", name="get_time", argument_chunks=["{}"]),
    ],
    finish_reason="tool_calls",
)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-test", "max_tokens": 1024, "messages": USER, **extra}


async def post(
    session: aiohttp.ClientSession,
    server: AnthropicServer,
    payload: Any,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, bytes]:
    url = server.base_url + "/v1/messages"
    sent = VERSION if headers is None else headers
    async with session.post(url, json=payload, headers=sent, **kwargs) as resp:
        return resp.status, resp.headers, await resp.read()


def sse_blocks(raw: bytes, eol: str = "\n") -> list[tuple[str | None, str]]:
    """``(event, data)`` per event of a stream framed with ``eol``; comments are skipped."""
    text = raw.decode()
    assert text.endswith(eol * 2), text[-40:]
    out: list[tuple[str | None, str]] = []
    for block in text.split(eol * 2)[:-1]:
        fields = [line.partition(": ") for line in block.split(eol) if not line.startswith(":")]
        if not fields:
            continue
        assert all(sep for _, sep, _ in fields), block
        event = [value for name, _, value in fields if name == "event"]
        assert len(event) <= 1, block
        data = "\n".join(value for name, _, value in fields if name == "data")
        out.append((event[0] if event else None, data))
    return out


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Anthropic events: every ``event:`` name must equal its data's ``type``."""
    out = []
    for name, data in sse_blocks(raw):
        payload = json.loads(data)
        assert name is not None, data
        assert name == payload["type"], (name, data)
        out.append((name, payload))
    return out


def names(raw: bytes) -> list[str]:
    return [name for name, _ in events(raw)]


async def stream(
    session: aiohttp.ClientSession, replies: list[ScriptedReply], **server_kwargs: Any
) -> bytes:
    async with AnthropicServer(replies, **server_kwargs) as server:
        status, headers, raw = await post(session, server, body(stream=True))
    assert status == 200, raw
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    return raw


# --- stream shape ---------------------------------------------------------------------------


async def test_event_order_block_indexes_and_usage(session: aiohttp.ClientSession) -> None:
    raw = await stream(session, [FULL])
    got = events(raw)
    kinds = [name for name, _ in got]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    start = got[0][1]["message"]
    assert start["id"].startswith("msg_01")
    assert (start["content"], start["stop_reason"], start["model"]) == ([], None, "claude-test")
    assert start["usage"]["output_tokens"] == 1
    # Blocks are strictly sequential: start(i), deltas(i)*, stop(i), then i + 1.
    block_events = [(n, p["index"]) for n, p in got if n.startswith("content_block")]
    expected: list[tuple[str, int]] = []
    for index, deltas in enumerate([3, 2, 3, 2]):
        expected += [("content_block_start", index)]
        expected += [("content_block_delta", index)] * deltas
        expected += [("content_block_stop", index)]
    assert block_events == expected
    types = [p["content_block"]["type"] for n, p in got if n == "content_block_start"]
    assert types == ["thinking", "text", "tool_use", "tool_use"]
    delta = got[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    # Cumulative: every streamed piece, not an increment on message_start's 1.
    assert delta["usage"] == {"output_tokens": 7}


async def test_thinking_block_ends_with_one_signature(session: aiohttp.ClientSession) -> None:
    raw = await stream(session, [FULL])
    got = [p for _, p in events(raw) if p.get("index") == 0]
    assert got[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    deltas = [p["delta"] for p in got[1:-1]]
    assert [d["type"] for d in deltas] == ["thinking_delta", "thinking_delta", "signature_delta"]
    assert "".join(d.get("thinking", "") for d in deltas) == "Let me think."
    assert deltas[-1]["signature"]
    assert got[-1] == {"type": "content_block_stop", "index": 0}


async def test_tool_use_blocks(session: aiohttp.ClientSession) -> None:
    first = await stream(session, [FULL])
    second = await stream(session, [FULL])

    def tool_blocks(raw: bytes) -> list[dict[str, Any]]:
        return [p["content_block"] for n, p in events(raw) if n == "content_block_start"][2:]

    starts = tool_blocks(first)
    assert starts[0] == {
        "type": "tool_use",
        "id": "toolu_01A",
        "name": "get_weather",
        "caller": {"type": "direct"},
        "input": {},
    }
    # A scripted id without Anthropic's prefix becomes a stable toolu_ id.
    assert starts[1]["id"].startswith("toolu_01")
    assert len(starts[1]["id"]) == len("toolu_01") + 22
    assert starts[1]["id"] == tool_blocks(second)[1]["id"]
    fragments = [p["delta"] for n, p in events(first) if n == "content_block_delta"]
    weather = [d["partial_json"] for d in fragments if d["type"] == "input_json_delta"][:3]
    assert weather[0] == ""
    assert json.loads("".join(weather)) == {"city": "Paris"}


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("pause_turn", "pause_turn"),
    ],
)
async def test_stop_reason_mapping(
    session: aiohttp.ClientSession, finish: str, stop_reason: str
) -> None:
    raw = await stream(session, [ScriptedReply(text_chunks=["x"], finish_reason=finish)])
    assert events(raw)[-2][1]["delta"]["stop_reason"] == stop_reason


async def test_stop_sequence_is_reported(session: aiohttp.ClientSession) -> None:
    reply = ScriptedReply(text_chunks=["x"], finish_reason="stop_sequence")
    async with AnthropicServer([reply]) as server:
        _, _, raw = await post(session, server, body(stream=True, stop_sequences=["END", "X"]))
        _, _, plain = await post(session, server, body(stop_sequences=["END"]))
    assert events(raw)[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert json.loads(plain)["stop_sequence"] == "END"


async def test_scripted_usage_and_empty_reply(session: aiohttp.ClientSession) -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 6, "cache_read_input_tokens": 4}
    raw = await stream(session, [ScriptedReply(text_chunks=["x"], usage=usage)])
    got = events(raw)
    assert got[0][1]["message"]["usage"] == {
        "input_tokens": 11,
        "output_tokens": 1,
        "cache_read_input_tokens": 4,
    }
    assert got[-2][1]["usage"] == {"output_tokens": 6}
    empty = await stream(session, [ScriptedReply()])
    # No blocks at all, yet the API never reports 0 output tokens and still pings.
    assert names(empty) == ["message_start", "ping", "message_delta", "message_stop"]
    assert events(empty)[2][1]["usage"] == {"output_tokens": 1}


async def test_non_stream_message(session: aiohttp.ClientSession) -> None:
    async with AnthropicServer([FULL], message_id="msg_fixed", model="claude-x") as server:
        status, headers, raw = await post(session, server, body())
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert headers["request-id"].startswith("req_")
    message = json.loads(raw)
    assert (message["id"], message["type"], message["role"]) == (
        "msg_fixed",
        "message",
        "assistant",
    )
    assert message["model"] == "claude-x"
    thinking, text, weather, clock = message["content"]
    assert thinking["type"] == "thinking"
    assert thinking["thinking"] == "Let me think."
    assert thinking["signature"]
    assert text == {"type": "text", "text": "Checking both."}
    assert weather == {
        "type": "tool_use",
        "id": "toolu_01A",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert clock["input"] == {}
    assert (message["stop_reason"], message["stop_sequence"]) == ("tool_use", None)
    assert message["usage"]["output_tokens"] == 7
    assert message["usage"]["service_tier"] == "standard"


async def test_stream_and_message_agree(session: aiohttp.ClientSession) -> None:
    async with AnthropicServer([FULL], message_id="msg_fixed") as server:
        _, _, raw = await post(session, server, body(stream=True))
        _, _, plain = await post(session, server, body())
    # Rebuild the message the way the Anthropic SDK accumulates a stream.
    content: list[dict[str, Any]] = []
    buffers: dict[int, str] = {}
    for name, p in events(raw):
        if name == "content_block_start":
            content.append({k: v for k, v in p["content_block"].items() if k != "caller"})
        elif name == "content_block_delta":
            block, delta = content[p["index"]], p["delta"]
            if delta["type"] == "input_json_delta":
                buffers[p["index"]] = buffers.get(p["index"], "") + delta["partial_json"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                key = delta["type"].removesuffix("_delta")
                block[key] += delta[key]
    for index, text in buffers.items():
        content[index]["input"] = json.loads(text)
    assert content == json.loads(plain)["content"]


# --- validation and auth --------------------------------------------------------------------


def error_of(status: int, headers: Any, raw: bytes) -> dict[str, Any]:
    payload = json.loads(raw)
    assert set(payload) == {"type", "error", "request_id"}
    assert payload["type"] == "error"
    assert set(payload["error"]) == {"type", "message"}
    assert payload["request_id"].startswith("req_")
    assert headers["request-id"] == payload["request_id"]
    return dict(payload["error"])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"max_tokens": 5, "messages": USER}, "model: Field required"),
        ({"model": "m", "messages": USER}, "max_tokens: Field required"),
        ({"model": "m", "max_tokens": 5}, "messages: Field required"),
        ({"model": "m", "max_tokens": "5", "messages": USER}, "max_tokens: Input should be"),
        ({"model": "m", "max_tokens": -1, "messages": USER}, "max_tokens: Input should be"),
        ({"model": 3, "max_tokens": 5, "messages": USER}, "model: Input should be"),
        ({"model": "m", "max_tokens": 5, "messages": "hi"}, "messages: Input should be"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            'Unexpected role "system"',
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user"}]}, "messages.0.content"),
        (
            body(thinking={"type": "enabled", "budget_tokens": 2048}),
            "`max_tokens` must be greater than `thinking.budget_tokens`",
        ),
        (body(thinking={"type": "enabled", "budget_tokens": 100}), "greater than or equal to 1024"),
        ([1, 2], "error parsing the body"),
    ],
)
async def test_validation_errors(
    session: aiohttp.ClientSession, payload: Any, message: str
) -> None:
    async with AnthropicServer() as server:
        status, headers, raw = await post(session, server, payload)
    assert status == 400
    error = error_of(status, headers, raw)
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


def tool_history(answer: bool) -> list[dict[str, Any]]:
    call: dict[str, Any] = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}
    history = [*USER, {"role": "assistant", "content": [call]}]
    return [*history, {"role": "user", "content": [result] if answer else "next"}]


async def test_tool_history_pairing(session: aiohttp.ClientSession) -> None:
    stray = [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}]
    async with AnthropicServer() as server:
        ok, _, _ = await post(session, server, body(messages=tool_history(True)))
        missing = await post(session, server, body(messages=tool_history(False)))
        trailing = await post(session, server, body(messages=tool_history(True)[:-1]))
        unexpected = await post(
            session, server, body(messages=[{"role": "user", "content": stray}])
        )
    assert ok == 200
    assert "messages.1: `tool_use` ids were found without" in error_of(*missing)["message"]
    assert "toolu_1" in error_of(*trailing)["message"]
    assert "unexpected `tool_use_id`" in error_of(*unexpected)["message"]


async def test_anthropic_version_is_required(session: aiohttp.ClientSession) -> None:
    async with AnthropicServer() as server:
        status, headers, raw = await post(session, server, body(), headers={})
    assert status == 400
    assert error_of(status, headers, raw)["message"] == "anthropic-version: header is required"


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "x-api-key header is required"),
        ({"x-api-key": "wrong"}, 401, "invalid x-api-key"),
        ({"Authorization": "Bearer wrong"}, 401, "invalid x-api-key"),
        ({"x-api-key": "sk-ant-good"}, 200, None),
        ({"Authorization": "Bearer sk-ant-good"}, 200, None),
    ],
)
async def test_auth(
    session: aiohttp.ClientSession, headers: dict[str, str], status: int, message: str | None
) -> None:
    async with AnthropicServer(api_key="sk-ant-good") as server:
        got, resp_headers, raw = await post(session, server, body(), headers=VERSION | headers)
    assert got == status
    if message is not None:
        error = error_of(got, resp_headers, raw)
        assert (error["type"], error["message"]) == ("authentication_error", message)


async def test_requests_recorded_and_unknown_path(session: aiohttp.ClientSession) -> None:
    headers = VERSION | {"x-api-key": "k", "anthropic-beta": "a,b"}
    async with AnthropicServer() as server:
        await post(session, server, body(temperature=0.5), headers=headers)
        async with session.get(server.base_url + "/v1/nope") as resp:
            status, resp_headers, raw = resp.status, resp.headers, await resp.read()
    first, second = server.requests
    assert (first.method, first.path, first.body) == ("POST", "/v1/messages", body(temperature=0.5))
    assert (first.headers["x-api-key"], first.headers["anthropic-beta"]) == ("k", "a,b")
    assert (second.method, second.path) == ("GET", "/v1/nope")
    assert status == 404
    assert error_of(status, resp_headers, raw)["type"] == "not_found_error"
    assert "x-request-id" not in resp_headers


async def test_replies_cycle_and_script_replaces(session: aiohttp.ClientSession) -> None:
    def text(raw: bytes) -> str:
        return str(json.loads(raw)["content"][0]["text"])

    one, two = ScriptedReply.from_text("one"), ScriptedReply.from_text("two")
    async with AnthropicServer([one, two]) as server:
        got = [text((await post(session, server, body()))[2]) for _ in range(3)]
        server.script([ScriptedReply.from_text("three")])
        got.append(text((await post(session, server, body()))[2]))
    assert got == ["one", "two", "one", "three"]


# --- stream faults --------------------------------------------------------------------------


async def test_ping_switch_and_comments(session: aiohttp.ClientSession) -> None:
    plain = await stream(session, [HI])
    quiet = await stream(session, [HI], ping=False)
    assert names(plain).count("ping") == 1
    assert "ping" not in names(quiet)
    commented = await stream(session, [HI], faults=Faults(comments=True))
    assert commented.startswith(b": ping\n\n")
    assert b": keep-alive\n\n" in commented
    assert names(commented) == names(plain)


async def test_trailing_spaces(session: aiohttp.ClientSession) -> None:
    raw = await stream(session, [HI], faults=Faults(trailing_spaces=True))
    data_lines = [line for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert all(line.endswith("}      ") for line in data_lines)
    assert names(raw) == names(await stream(session, [HI]))


async def test_unclosed_last_block_on_max_tokens(session: aiohttp.ClientSession) -> None:
    cut = ScriptedReply(
        text_chunks=["Sure"],
        tool_calls=[ScriptedToolCall(id="toolu_x", name="f", argument_chunks=['{"a": "tru'])],
        finish_reason="length",
    )
    raw = await stream(session, [cut], faults=Faults(unclosed_last_block=True))
    got = events(raw)
    stops = [p["index"] for n, p in got if n == "content_block_stop"]
    assert stops == [0]
    assert [n for n, _ in got[-4:]] == [
        "content_block_delta",
        "content_block_delta",
        "message_delta",
        "message_stop",
    ]
    assert got[-2][1]["delta"]["stop_reason"] == "max_tokens"


async def test_error_event_mid_stream(session: aiohttp.ClientSession) -> None:
    raw = await stream(session, [HI], faults=Faults(error_event_after=3))
    assert names(raw) == ["message_start", "content_block_start", "ping", "error"]
    assert b'data: {"type": "error", "error": {"type": "overloaded_error"' in raw
    custom = {"type": "api_error", "message": "Internal server error"}
    raw = await stream(session, [HI], faults=Faults(error_event_after=0, error_event=custom))
    assert events(raw) == [("error", {"type": "error", "error": custom})]


async def test_omit_done_drops_message_stop(session: aiohttp.ClientSession) -> None:
    raw = await stream(session, [HI], faults=Faults(omit_done=True))
    assert names(raw)[-1] == "message_delta"


async def test_malformed_after(session: aiohttp.ClientSession) -> None:
    raw = await stream(session, [HI], faults=Faults(malformed_after=1))
    blocks = sse_blocks(raw)
    assert blocks[1][0] is None
    with pytest.raises(json.JSONDecodeError):
        json.loads(blocks[1][1])


@pytest.mark.parametrize("size", [1, 5])
async def test_split_writes_and_line_endings(session: aiohttp.ClientSession, size: int) -> None:
    baseline = await stream(session, [HI], message_id="msg_x")
    faults = Faults(split_writes=size, line_ending="\r\n")
    reads = 0
    received = b""
    async with AnthropicServer([HI], faults, message_id="msg_x") as server:
        url = server.base_url + "/v1/messages"
        async with session.post(url, json=body(stream=True), headers=VERSION) as resp:
            async for piece in resp.content.iter_any():
                reads += 1
                received += piece
    assert received == baseline.replace(b"\n", b"\r\n")
    if size == 1:
        assert reads > len(names(baseline))


async def test_textual_framing_faults(session: aiohttp.ClientSession) -> None:
    baseline = events(await stream(session, [HI], message_id="m"))
    raw = await stream(
        session,
        [HI],
        message_id="m",
        faults=Faults(bom=True, no_space_after_colon=True, spaced_json=True),
    )
    assert raw.startswith(b'\xef\xbb\xbfevent:message_start\ndata:{"type": "message_start"')
    fixed = raw[3:].replace(b"event:", b"event: ").replace(b"data:", b"data: ")
    assert events(fixed) == baseline
    multi = await stream(session, [HI], message_id="m", faults=Faults(multiline_data=True))
    assert multi.count(b"\ndata: ") > multi.count(b"event: ")
    assert events(multi) == baseline


# --- HTTP error faults ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (409, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
async def test_http_error_table(session: aiohttp.ClientSession, status: int, type_: str) -> None:
    async with AnthropicServer(faults=Faults(http_error=status)) as server:
        got, headers, raw = await post(session, server, body(stream=True))
    assert got == status
    assert error_of(got, headers, raw)["type"] == type_
    if status == 404:
        assert error_of(got, headers, raw)["message"] == "model: claude-test"


async def test_fail_times_headers_and_verbatim_body(session: aiohttp.ClientSession) -> None:
    faults = Faults(http_error=529, fail_times=1, headers={"retry-after": "1"})
    async with AnthropicServer([HI], faults) as server:
        first = await post(session, server, body(stream=True))
        second = await post(session, server, body(stream=True))
        server.script(faults=Faults(http_error=413, error_body="<html>413 Too Large</html>"))
        status, headers, page = await post(session, server, body())
    assert (first[0], second[0]) == (529, 200)
    assert first[1]["retry-after"] == "1"
    assert names(second[2])[-1] == "message_stop"
    assert (status, page) == (413, b"<html>413 Too Large</html>")
    assert headers["Content-Type"].startswith("text/html")
