from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import jsonpatch
import pytest
from aiohttp import web

from chatstream import BaseChatModel, RateLimitError
from chatstream.providers.fake import FakeChatModel, FakeResponse
from chatstream.transport.sse import Event, SSEDecoder
from chatstream.web import (
    RUN_ID_HEADER,
    ReplayStore,
    cancel_handler,
    chat_handler,
    log_handler,
    resume_handler,
)

from .conftest import Tracked


@asynccontextmanager
async def serve(model: BaseChatModel, store: ReplayStore | None = None) -> AsyncIterator[str]:
    store = store or ReplayStore()
    app = web.Application()
    store.install(app)
    app.router.add_post("/chat", chat_handler(model, max_body=2048))
    app.router.add_post("/log", log_handler(model, store))
    app.router.add_post("/unkept-log", log_handler(model))
    app.router.add_get("/log/{run_id}", resume_handler(store))
    app.router.add_delete("/log/{run_id}", cancel_handler(store))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def events_of(response: aiohttp.ClientResponse) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = []
    async for data in response.content.iter_any():
        events += decoder.feed(data)
    return events


async def post(url: str, body: Any, **kw: Any) -> tuple[int, list[Event] | Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body, **kw) as response:
        if response.content_type == "text/event-stream":
            return response.status, await events_of(response)
        return response.status, await response.json()


async def test_chat_streams_chunks_then_the_merged_message() -> None:
    async with serve(FakeChatModel(responses=["Hello there"])) as base:
        status, events = await post(f"{base}/chat", {"input": "Hi"})
    assert status == 200
    assert [e.event for e in events] == ["chunk", "chunk", "chunk", "end"]
    assert [json.loads(e.data)["content"] for e in events[:2]] == ["Hello", " there"]
    end = json.loads(events[-1].data)
    assert end["message"]["content"] == "Hello there"
    assert end["message"]["id"] == f"run-{end['run_id']}"
    assert end["usage"] == {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


async def test_chat_error_event_carries_the_partial_output() -> None:
    model = FakeChatModel(
        responses=[FakeResponse(text="a b c", error=RateLimitError("slow"), error_after=2)]
    )
    async with serve(model) as base:
        _, events = await post(f"{base}/chat", {"messages": [{"role": "user", "content": "x"}]})
    assert [e.event for e in events] == ["chunk", "chunk", "error"]
    error = json.loads(events[-1].data)
    assert error["type"] == "RateLimitError" and error["message"] == "slow"
    assert error["partial"]["content"] == "a b"


@pytest.mark.parametrize(
    ("body", "status", "fragment", "where"),
    [
        (b"not json", 400, "not JSON", None),
        ({"input": "x", "messages": []}, 400, "either 'messages' or 'input'", None),
        ({"prompt": "x"}, 400, "either 'messages' or 'input'", None),
        ({"messages": ["ok", {"content": "no role"}]}, 400, "needs a 'role'", "messages[1]"),
        ({"input": 42}, 400, "got int", "input"),
        ({"input": "x" * 5000}, 413, "over 2048 bytes", None),
    ],
)
async def test_bad_requests_get_a_json_error(
    body: Any, status: int, fragment: str, where: str | None
) -> None:
    async with serve(FakeChatModel(responses=["x"])) as base:
        kw = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base}/chat", **kw) as response,
        ):
            assert response.status == status
            error = (await response.json())["error"]
    assert fragment in error["message"]
    assert error["where"] == where


async def test_log_stream_rebuilds_the_run_state() -> None:
    async with serve(FakeChatModel(responses=["one two"])) as base:
        _, events = await post(f"{base}/log", {"input": "q"})
    patches = [e for e in events if e.event == "patch"]
    assert [e.id for e in patches] == [str(i) for i in range(1, len(patches) + 1)]
    assert events[-1].event == "end"
    assert json.loads(events[-1].data) == {"run_id": json.loads(patches[0].data)[0]["value"]["id"]}
    state: Any = {}
    for event in patches:
        state = jsonpatch.apply_patch(state, json.loads(event.data))
    assert state["final_output"]["generations"][0][0]["text"] == "one two"
    assert [c["content"] for c in state["streamed_output"]] == ["one", " two", ""]


async def resume(base: str, run_id: str, last: str) -> list[Event]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/log/{run_id}", headers={"Last-Event-ID": last}) as response,
    ):
        return await events_of(response)


async def test_resume_replays_the_patches_after_last_event_id() -> None:
    store = ReplayStore(max_patches=4)
    async with serve(FakeChatModel(responses=["a b c d e f"]), store) as base:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base}/log", json={"input": "q"}) as response,
        ):
            run_id = response.headers[RUN_ID_HEADER]
            await events_of(response)  # all of it, or an error if it fell behind the 4 kept
        with anyio.fail_after(5):
            while (replay := store.get(run_id)) is None or replay.final is None:
                await anyio.sleep(0.01)
        last_seq = replay.patches[-1][0]
        replayed = await resume(base, run_id, str(last_seq - 2))
        assert [e.id for e in replayed[:-1]] == [str(last_seq - 1), str(last_seq)]
        assert replayed[-1].event == "end"
        assert json.loads(replayed[-1].data) == {"run_id": run_id}
        forgotten = await resume(base, run_id, "1")  # only the last 4 patches are kept
        unknown = await resume(base, "no-such-run", "1")
        not_a_number = await resume(base, run_id, "abc")
    for result, fragment in [
        (forgotten, "no longer kept"),
        (unknown, "unknown or has expired"),
        (not_a_number, "not a patch number"),
    ]:
        [event] = result
        assert event.event == "error" and fragment in json.loads(event.data)["message"]


async def test_expired_runs_are_forgotten() -> None:
    store = ReplayStore(ttl=0.0)
    async with serve(FakeChatModel(responses=["x"]), store) as base:
        _, events = await post(f"{base}/log", {"input": "q"})
        run_id = json.loads(events[0].data)[0]["value"]["id"]
        await anyio.sleep(0.01)
        [event] = await resume(base, run_id, "1")
    assert "expired" in json.loads(event.data)["message"]


@pytest.mark.parametrize("path", ["/chat", "/unkept-log"])
async def test_a_client_that_leaves_cancels_the_model_stream(tracked: Tracked, path: str) -> None:
    tracked.pieces = ["first", " second"]
    tracked.pause = 0.05
    async with serve(tracked) as base:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}{path}", json={"input": "q"}) as response:
                decoder = SSEDecoder()
                while not any(
                    e.event in ("chunk", "patch") and "first" in e.data
                    for e in decoder.feed(await response.content.readany())
                ):
                    pass
                tracked.pause = 30  # the next chunk would take 30 s: only cancelling ends it
        with anyio.fail_after(5):
            while tracked.closed == 0:
                await anyio.sleep(0.01)
    assert tracked.finished == 0 and tracked.active == 0
