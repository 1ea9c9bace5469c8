"""The local Ollama ``/api/chat`` server itself, checked with a raw aiohttp client."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from chatstream.testing.ollama_server import (
    Faults,
    OllamaServer,
    ScriptedReply,
    ScriptedToolCall,
)

USER: list[dict[str, Any]] = [{"role": "user", "content": "Say hi"}]
HI = ScriptedReply(text_chunks=["Hi", " thére"])
FULL = ScriptedReply(
    reasoning_chunks=["Let me", " think."],
    text_chunks=["Checking", " both."],
    tool_calls=[
        ScriptedToolCall(
            id="call_k3j9x0ab", name="get_weather", argument_chunks=['{"ci', 'ty": "Tokyo"}']
        ),
        ScriptedToolCall(id="b", name="get_time"),
    ],
    finish_reason="tool_calls",
)
RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
METRICS = {f"{stage}_duration" for stage in ("total", "load", "prompt_eval", "eval")}
METRICS |= {"prompt_eval_count", "eval_count"}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": USER, **extra}


async def post(
    session: aiohttp.ClientSession, server: OllamaServer, payload: Any, **kwargs: Any
) -> tuple[int, Any, bytes]:
    async with session.post(server.base_url + "/api/chat", json=payload, **kwargs) as resp:
        return resp.status, resp.headers, await resp.read()


def ndjson_lines(raw: bytes, eol: bytes = b"\n") -> list[dict[str, Any]]:
    """Every line of an NDJSON body, each terminated by ``eol`` and holding one JSON object."""
    assert raw.endswith(eol), raw[-40:]
    return [json.loads(line) for line in raw.split(eol)[:-1]]


async def stream(
    session: aiohttp.ClientSession, replies: list[ScriptedReply], **server_kwargs: Any
) -> bytes:
    async with OllamaServer(replies, **server_kwargs) as server:
        status, headers, raw = await post(session, server, body())
    assert status == 200, raw
    assert headers["Content-Type"] == "application/x-ndjson"
    return raw


def content(lines: list[dict[str, Any]]) -> str:
    return "".join(line["message"]["content"] for line in lines)


# --- stream shape ---------------------------------------------------------------------------


async def test_streams_by_default_with_a_done_line(session: aiohttp.ClientSession) -> None:
    lines = ndjson_lines(await stream(session, [HI]))
    *pieces, done = lines
    assert [set(line) for line in pieces] == [{"model", "created_at", "message", "done"}] * 2
    assert [line["message"] for line in pieces] == [
        {"role": "assistant", "content": "Hi"},
        {"role": "assistant", "content": " thére"},
    ]
    assert all(line["done"] is False and line["model"] == "llama3.2" for line in pieces)
    assert done["done"] is True
    assert done["message"] == {"role": "assistant", "content": ""}
    assert done["done_reason"] == "stop"
    assert set(done) == {"model", "created_at", "message", "done", "done_reason"} | METRICS
    assert (done["prompt_eval_count"], done["eval_count"]) == (6, 2)
    assert all(isinstance(done[name], int) and done[name] > 0 for name in METRICS)
    total, generating = done["total_duration"], done["eval_duration"]  # as the server reports
    assert total > generating


async def test_created_at_is_rfc3339_with_nanoseconds(session: aiohttp.ClientSession) -> None:
    lines = ndjson_lines(await stream(session, [HI]))
    stamps = [line["created_at"] for line in lines]
    assert all(RFC3339_NANO.fullmatch(stamp) for stamp in stamps), stamps
    # Go trims trailing zeros; the digits beyond microseconds are real nanoseconds.
    assert all(not stamp.split(".")[-1].rstrip("Z").endswith("0") for stamp in stamps)
    parsed = [
        datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", s[:-1]) + "+00:00") for s in stamps
    ]
    assert parsed == sorted(parsed)
    fixed = ndjson_lines(await stream(session, [HI], created_at="2023-08-04T19:22:45.499127Z"))
    assert {line["created_at"] for line in fixed} == {"2023-08-04T19:22:45.499127Z"}


async def test_thinking_then_content_then_whole_tool_calls(session: aiohttp.ClientSession) -> None:
    *lines, done = ndjson_lines(await stream(session, [FULL]))
    messages = [line["message"] for line in lines]
    assert messages[:2] == [
        {"role": "assistant", "content": "", "thinking": "Let me"},
        {"role": "assistant", "content": "", "thinking": " think."},
    ]
    assert content(lines) == "Checking both."
    calls = [m["tool_calls"] for m in messages if "tool_calls" in m]
    assert calls == [
        [
            {
                "id": "call_k3j9x0ab",
                "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}},
            }
        ],
        [{"id": calls[1][0]["id"], "function": {"index": 1, "name": "get_time", "arguments": {}}}],
    ]
    # A scripted id without Ollama's shape becomes a stable call_ + 8 lowercase alnum id.
    assert re.fullmatch(r"call_[a-z0-9]{8}", calls[1][0]["id"])
    again = ndjson_lines(await stream(session, [FULL]))
    assert again[-2]["message"]["tool_calls"][0]["id"] == calls[1][0]["id"]
    assert messages[-2]["content"] == messages[-1]["content"] == ""
    # There is no tool-call reason in the native API.
    assert done["done_reason"] == "stop"


async def test_omit_tool_call_ids(session: aiohttp.ClientSession) -> None:
    raw = await stream(session, [FULL], faults=Faults(omit_tool_call_ids=True))
    calls = [c for line in ndjson_lines(raw) for c in line["message"].get("tool_calls", [])]
    assert calls == [
        {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}},
        {"function": {"name": "get_time", "arguments": {}}},
    ]


@pytest.mark.parametrize(("finish", "reason"), [("length", "length"), ("stop", "stop")])
async def test_done_reason(session: aiohttp.ClientSession, finish: str, reason: str) -> None:
    raw = await stream(session, [ScriptedReply(text_chunks=["x"], finish_reason=finish)])
    assert ndjson_lines(raw)[-1]["done_reason"] == reason


async def test_zero_metrics_are_omitted(session: aiohttp.ClientSession) -> None:
    scripted = ScriptedReply(
        usage={"prompt_tokens": 26, "load_duration": 0, "eval_duration": 4535599000}
    )
    [done] = ndjson_lines(await stream(session, [scripted]))
    # No output at all: eval_count is 0 and absent; load_duration was scripted to 0.
    assert set(done) & METRICS == {
        "total_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_duration",
    }
    reported = (done["prompt_eval_count"], done["eval_duration"])  # the recorded reply's
    assert reported == (26, 4535599000)


async def test_non_stream_object(session: aiohttp.ClientSession) -> None:
    async with OllamaServer([FULL]) as server:
        status, headers, raw = await post(session, server, body(stream=False))
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    reply = json.loads(raw)
    assert reply["done"] is True
    assert reply["done_reason"] == "stop"
    assert set(reply) >= METRICS
    message = reply["message"]
    assert (message["content"], message["thinking"]) == ("Checking both.", "Let me think.")
    assert [c["function"]["arguments"] for c in message["tool_calls"]] == [{"city": "Tokyo"}, {}]


async def test_load_and_unload(session: aiohttp.ClientSession) -> None:
    async with OllamaServer([HI]) as server:
        _, headers, load = await post(session, server, body(messages=[]))
        _, _, unload = await post(session, server, body(messages=[], keep_alive=0))
        _, _, after = await post(session, server, body(stream=False))
    assert headers["Content-Type"].startswith("application/json")
    assert (json.loads(load)["done_reason"], json.loads(unload)["done_reason"]) == (
        "load",
        "unload",
    )
    # Loading does not use up a scripted reply.
    assert json.loads(after)["message"]["content"] == "Hi thére"


# --- errors before streaming ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (b"", 400, "missing request body"),
        (b"{nope", 400, "invalid character '{' looking for beginning of value"),
        (b"[1]", 400, "json: cannot unmarshal array into Go value of type api.ChatRequest"),
        (b'{"messages": []}', 400, "model is required"),
        (b'{"model": ""}', 400, "model is required"),
        (b'{"model": "m", "messages": "hi"}', 400, "cannot unmarshal str"),
        (b'{"model": "m", "top_logprobs": 21}', 400, "top_logprobs must be between 0 and 20"),
        (b'{"model": "qwen3"}', 404, "model 'qwen3' not found"),
    ],
)
async def test_errors_before_streaming(
    session: aiohttp.ClientSession, data: bytes, status: int, error: str
) -> None:
    async with OllamaServer(models=["llama3.2:latest", "m"]) as server:
        url = server.base_url + "/api/chat"
        async with session.post(url, data=data) as resp:
            got, headers, raw = resp.status, resp.headers, await resp.read()
    assert got == status
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    payload = json.loads(raw)
    assert set(payload) == {"error"}
    assert error in payload["error"]


async def test_model_tags_resolve_to_latest(session: aiohttp.ClientSession) -> None:
    async with OllamaServer(models=["llama3.2"]) as server:
        statuses = [
            (await post(session, server, body(model=name, stream=False)))[0]
            for name in ("llama3.2", "llama3.2:latest", "llama3.2:1b")
        ]
    assert statuses == [200, 200, 404]


async def test_auth_and_plain_paths(session: aiohttp.ClientSession) -> None:
    async with OllamaServer(api_key="secret") as server:
        denied, _, raw = await post(session, server, body())
        allowed, _, _ = await post(
            session, server, body(), headers={"Authorization": "Bearer secret"}
        )
        async with session.get(server.base_url + "/") as resp:
            root = (resp.status, await resp.text())
        async with session.get(server.base_url + "/api/nope") as resp:
            missing = (resp.status, resp.headers["Content-Type"], await resp.text())
    assert (denied, json.loads(raw), allowed) == (401, {"error": "unauthorized"}, 200)
    assert root == (200, "Ollama is running")
    assert missing == (404, "text/plain; charset=utf-8", "404 page not found")
    assert [r.path for r in server.requests] == ["/api/chat", "/api/chat", "/", "/api/nope"]
    assert server.requests[1].headers["authorization"] == "Bearer secret"
    assert server.requests[0].body == body()


async def test_replies_cycle_and_script_replaces(session: aiohttp.ClientSession) -> None:
    def text(raw: bytes) -> str:
        return str(json.loads(raw)["message"]["content"])

    one, two = ScriptedReply.from_text("one"), ScriptedReply.from_text("two")
    async with OllamaServer([one, two]) as server:
        got = [text((await post(session, server, body(stream=False)))[2]) for _ in range(3)]
        server.script([ScriptedReply.from_text("three")])
        got.append(text((await post(session, server, body(stream=False)))[2]))
    assert got == ["one", "two", "one", "three"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, "too many requests"),
        (500, "llama runner process has terminated: exit status 2"),
        (502, "bad gateway"),
        (503, "server busy, please try again.  maximum pending requests exceeded"),
        (404, "model 'llama3.2' not found"),
    ],
)
async def test_http_error_faults(session: aiohttp.ClientSession, status: int, error: str) -> None:
    faults = Faults(http_error=status, fail_times=1, headers={"retry-after": "1"})
    async with OllamaServer([HI], faults) as server:
        first = await post(session, server, body())
        second = await post(session, server, body())
    assert (first[0], json.loads(first[2])) == (status, {"error": error})
    assert first[1]["retry-after"] == "1"
    assert second[0] == 200
    assert content(ndjson_lines(second[2])) == "Hi thére"


async def test_verbatim_error_body(session: aiohttp.ClientSession) -> None:
    cloud = {"error": "unauthorized", "signin_url": "https://ollama.com/connect?x"}
    async with OllamaServer(faults=Faults(http_error=401, error_body=cloud)) as server:
        status, _, raw = await post(session, server, body())
    assert (status, json.loads(raw)) == (401, cloud)


# --- stream faults --------------------------------------------------------------------------


async def test_error_after_streaming_started(session: aiohttp.ClientSession) -> None:
    raw = await stream(session, [HI], faults=Faults(error_event_after=1))
    first, last = ndjson_lines(raw)
    assert first["message"]["content"] == "Hi"
    assert last == {"error": "an error was encountered while running the model"}
    custom = Faults(error_event_after=0, error_event={"message": "out of memory"})
    assert ndjson_lines(await stream(session, [HI], faults=custom)) == [{"error": "out of memory"}]


async def test_omit_done(session: aiohttp.ClientSession) -> None:
    lines = ndjson_lines(await stream(session, [HI], faults=Faults(omit_done=True)))
    assert [line["done"] for line in lines] == [False, False]


async def test_malformed_after(session: aiohttp.ClientSession) -> None:
    raw = await stream(session, [HI], faults=Faults(malformed_after=1))
    first, broken, *rest = raw.split(b"\n")
    json.loads(first)
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)
    assert len(rest) == 3


async def test_line_framing_faults(session: aiohttp.ClientSession) -> None:
    baseline = ndjson_lines(await stream(session, [HI], created_at="t"))
    crlf = await stream(
        session, [HI], created_at="t", faults=Faults(line_ending="\r\n", trailing_spaces=True)
    )
    assert crlf.count(b"}      \r\n") == len(baseline)
    assert ndjson_lines(crlf, b"\r\n") == baseline
    blank = await stream(session, [HI], created_at="t", faults=Faults(comments=True))
    assert blank.startswith(b"\n{")
    assert blank.count(b"\n\n") == len(baseline) - 1
    assert [json.loads(line) for line in blank.split(b"\n") if line] == baseline
    spaced = await stream(session, [HI], created_at="t", faults=Faults(spaced_json=True, bom=True))
    assert spaced.startswith(b'\xef\xbb\xbf{"model": "llama3.2", ')
    assert ndjson_lines(spaced[3:]) == baseline


@pytest.mark.parametrize("size", [1, 7])
async def test_split_writes(session: aiohttp.ClientSession, size: int) -> None:
    baseline = await stream(session, [HI], created_at="t")
    reads = 0
    received = b""
    async with OllamaServer([HI], Faults(split_writes=size), created_at="t") as server:
        async with session.post(server.base_url + "/api/chat", json=body()) as resp:
            async for piece in resp.content.iter_any():
                reads += 1
                received += piece
    assert received == baseline
    if size == 1:
        assert reads > len(ndjson_lines(baseline))
