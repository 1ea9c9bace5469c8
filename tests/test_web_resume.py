"""The resumable run log: runs that outlive their client, followers, grace, bounds, shutdown."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import jsonpatch
import pytest
from aiohttp import web
from pydantic import Field, PrivateAttr

from chatstream import AIMessageChunk, BaseChatModel, BaseMessage
from chatstream._compat import override
from chatstream.providers.fake import FakeChatModel
from chatstream.transport.sse import Event, SSEDecoder
from chatstream.web import RUN_ID_HEADER, ReplayStore, log_handler

from .conftest import Tracked
from .test_web import events_of, post, resume, serve

ANSWER = "one two three four five six seven eight nine ten"


class Gated(BaseChatModel):
    """Streams ``pieces`` but holds back those from ``hold_at`` on until `release`."""

    pieces: list[str] = Field(default_factory=lambda: ["a", " b", " c", " d", " e"])
    hold_at: int = 2
    finished: bool = False
    closed: bool = False
    _gate: anyio.Event = PrivateAttr(default_factory=anyio.Event)

    def release(self) -> None:
        self._gate.set()

    @override
    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        try:
            for index, piece in enumerate(self.pieces):
                if index == self.hold_at:
                    await self._gate.wait()
                yield AIMessageChunk(piece)
            self.finished = True
        finally:
            self.closed = True


async def read_until(response: aiohttp.ClientResponse, seq: int) -> list[Event]:
    """Events until (at least) the patch numbered ``seq`` has arrived."""
    decoder = SSEDecoder()
    events: list[Event] = []
    while not any(e.event == "patch" and int(e.id or 0) >= seq for e in events):
        data = await response.content.readany()
        assert data, f"the stream ended before patch {seq}: {events}"
        events += decoder.feed(data)
    return events


def patch_ids(events: list[Event]) -> list[str | None]:
    return [e.id for e in events if e.event == "patch"]


def final_state(events: list[Event], run_id: str) -> Any:
    """The state the patches build, with the run's own id (which differs per run) masked."""
    state: Any = {}
    for event in (e for e in events if e.event == "patch"):
        state = jsonpatch.apply_patch(state, json.loads(event.data))
    return json.loads(json.dumps(state).replace(run_id, "<run id>"))


def error_of(event: Event) -> dict[str, Any]:
    assert event.event == "error", event
    data: dict[str, Any] = json.loads(event.data)
    return data


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` under a deadline (a failure names ``what`` it waited for)."""
    with anyio.move_on_after(5):
        while not condition():
            await anyio.sleep(0.01)
        return
    pytest.fail(f"gave up waiting for {what}")


async def test_a_client_that_drops_resumes_and_gets_the_rest_exactly_once() -> None:
    model = FakeChatModel(responses=[ANSWER], delay=0.05)
    store = ReplayStore(grace=30)
    async with serve(model, store) as base:
        _, whole = await post(f"{base}/log", {"input": "q"})  # uninterrupted, to compare with
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base}/log", json={"input": "q"}) as response,
        ):
            run_id = response.headers[RUN_ID_HEADER]
            before = await read_until(response, 3)
        replay = store.get(run_id)
        await until(lambda: replay is not None and replay.followers == 0, "the drop to be seen")
        # No client follows the run now, yet it goes on, and the client picks up where it was.
        last = patch_ids(before)[-1] or ""
        after = await resume(base, run_id, last)
    received = patch_ids(before) + patch_ids(after)
    assert received == [str(seq) for seq in range(1, len(received) + 1)]  # each exactly once
    assert len(received) == len(patch_ids(whole))
    assert after[-1].event == "end" and json.loads(after[-1].data) == {"run_id": run_id}
    whole_id = json.loads(whole[0].data)[0]["value"]["id"]
    assert final_state(before + after, run_id) == final_state(whole, whole_id)
    assert final_state(whole, whole_id)["final_output"]["generations"][0][0]["text"] == ANSWER


async def test_a_resume_during_the_run_follows_it_to_the_end() -> None:
    model = Gated()
    async with serve(model, ReplayStore(grace=30)) as base, aiohttp.ClientSession() as session:
        async with session.post(f"{base}/log", json={"input": "q"}) as first:
            run_id = first.headers[RUN_ID_HEADER]
            before = await read_until(first, 2)  # the model now waits for `release`
            headers = {"Last-Event-ID": "1"}
            async with session.get(f"{base}/log/{run_id}", headers=headers) as resumed:
                assert not model.finished
                model.release()
                followed = await events_of(resumed)
            rest = await events_of(first)
    assert model.finished
    everything = before + rest
    assert patch_ids(followed) == patch_ids(everything)[1:]
    assert [e.data for e in followed] == [e.data for e in everything[1:]]
    assert followed[-1].event == "end" and json.loads(followed[-1].data) == {"run_id": run_id}


async def test_a_dropped_run_nobody_resumes_is_cancelled_after_the_grace_period(
    tracked: Tracked,
) -> None:
    tracked.pieces = ["first", " second", " third"]
    tracked.pause = 0.05
    store = ReplayStore(grace=0.05)
    async with serve(tracked, store) as base:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base}/log", json={"input": "q"}) as response,
        ):
            run_id = response.headers[RUN_ID_HEADER]
            decoder = SSEDecoder()
            while not any(
                e.event == "patch" and "first" in e.data
                for e in decoder.feed(await response.content.readany())
            ):
                pass
            tracked.pause = 30  # the third chunk would take 30 s: only cancelling ends it
        await until(lambda: tracked.closed == 1, "the run to be cancelled")
        events = await resume(base, run_id, "0")
    assert tracked.finished == 0 and tracked.active == 0
    error = error_of(events[-1])
    assert error["type"] == "Cancelled" and "no client followed the run" in error["message"]
    assert patch_ids(events) == [str(seq) for seq in range(1, len(events))]


async def test_two_followers_of_one_run_both_get_everything() -> None:
    model = FakeChatModel(responses=[ANSWER], delay=0.01)
    got: dict[str, list[Event]] = {}
    async with serve(model, ReplayStore(grace=30)) as base, aiohttp.ClientSession() as session:
        async with session.post(f"{base}/log", json={"input": "q"}) as first:
            run_id = first.headers[RUN_ID_HEADER]

            async def second() -> None:
                headers = {"Last-Event-ID": "0"}
                async with session.get(f"{base}/log/{run_id}", headers=headers) as response:
                    got["second"] = await events_of(response)

            async with anyio.create_task_group() as group:
                group.start_soon(second)
                got["first"] = await events_of(first)
    assert got["first"][-1].event == "end"
    assert [(e.event, e.id, e.data) for e in got["second"]] == [
        (e.event, e.id, e.data) for e in got["first"]
    ]
    ids = patch_ids(got["first"])
    assert ids == [str(seq) for seq in range(1, len(ids) + 1)] and len(ids) > 3


async def test_the_store_keeps_at_most_max_runs_and_refuses_new_runs_when_all_are_live() -> None:
    model = FakeChatModel(responses=["x"])
    store = ReplayStore(max_runs=1)
    async with serve(model, store) as base:
        _, run_1 = await post(f"{base}/log", {"input": "q"})
        _, run_2 = await post(f"{base}/log", {"input": "q"})
        id_1, id_2 = (json.loads(run[-1].data)["run_id"] for run in (run_1, run_2))
        [gone] = await resume(base, id_1, "0")  # the newer run displaced the ended one
        kept = await resume(base, id_2, "0")
    assert "unknown or has expired" in error_of(gone)["message"]
    assert [(e.event, e.data) for e in kept] == [(e.event, e.data) for e in run_2]

    gated = Gated()
    async with serve(gated, ReplayStore(max_runs=1)) as base, aiohttp.ClientSession() as session:
        async with session.post(f"{base}/log", json={"input": "q"}) as live:
            await read_until(live, 1)
            status, body = await post(f"{base}/log", {"input": "q"})
            gated.release()
            assert (await events_of(live))[-1].event == "end"
    assert status == 503 and isinstance(body, dict)
    assert "too many live runs" in body["error"]["message"]


async def test_the_ttl_counts_from_the_end_of_the_run() -> None:
    model = Gated()
    store = ReplayStore(ttl=0.0)
    async with serve(model, store) as base, aiohttp.ClientSession() as session:
        async with session.post(f"{base}/log", json={"input": "q"}) as first:
            run_id = first.headers[RUN_ID_HEADER]
            await read_until(first, 1)
            async with session.get(f"{base}/log/{run_id}") as live:  # live: kept despite ttl 0
                model.release()
                followed = await events_of(live)
        await until(lambda: store.get(run_id) is None, "the ended run to expire")
        [expired] = await resume(base, run_id, "0")
    assert followed[-1].event == "end"
    assert "unknown or has expired" in error_of(expired)["message"]


async def test_a_delete_cancels_the_run_for_every_follower() -> None:
    model = Gated()
    async with serve(model, ReplayStore(grace=30)) as base, aiohttp.ClientSession() as session:
        async with session.post(f"{base}/log", json={"input": "q"}) as first:
            run_id = first.headers[RUN_ID_HEADER]
            await read_until(first, 1)
            async with session.delete(f"{base}/log/{run_id}") as response:
                assert response.status == 202
            events = await events_of(first)
        async with session.delete(f"{base}/log/no-such-run") as response:
            assert response.status == 404
    assert model.closed and not model.finished
    error = error_of(events[-1])
    assert error["type"] == "Cancelled" and "a client cancelled" in error["message"]


async def test_shutting_the_app_down_cancels_live_runs_and_ends_their_streams() -> None:
    model = Gated()
    store = ReplayStore(grace=30)
    async with aiohttp.ClientSession() as session:
        async with serve(model, store) as base:
            response = await session.post(f"{base}/log", json={"input": "q"})
            await read_until(response, 1)
            assert store.is_running
        # The app is gone: its store cancelled the run, and the follower was told so.
        rest = await events_of(response)
        response.release()
    assert model.closed and not model.finished and not store.is_running
    error = error_of(rest[-1])
    assert error["type"] == "Cancelled" and "shutting down" in error["message"]


async def test_a_store_that_is_not_installed_refuses_to_start_runs() -> None:
    app = web.Application()
    app.router.add_post("/log", log_handler(FakeChatModel(responses=["x"]), ReplayStore()))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/log", json={"input": "q"}) as r:
                assert r.status == 500
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("argument", "value"),
    [("ttl", -1.0), ("grace", -0.5), ("max_patches", 0), ("max_runs", 0)],
)
def test_store_bounds_are_checked(argument: str, value: float) -> None:
    settings: dict[str, Any] = {argument: value}
    with pytest.raises(ValueError, match=argument):
        ReplayStore(**settings)
