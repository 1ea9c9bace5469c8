"""HTTPClient over real sockets: pooling, per-loop sessions, deadlines and error mapping."""

from __future__ import annotations

from functools import partial
from typing import Any

import aiohttp
import anyio
import pytest

from chatstream import sync
from chatstream.errors import (
    APITimeoutError,
    ClosedError,
    InvalidInputError,
    NotFoundError,
    StreamInterruptedError,
)
from chatstream.testing.openai_server import Faults, OpenAIServer, ScriptedReply
from chatstream.transport.http import HTTPClient, PoolStats, Timeout
from chatstream.transport.sse import Event, SSEDecoder

BODY = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
STREAM = {**BODY, "stream": True}
HI = ScriptedReply(text_chunks=["Hi", "!"])


def url(server: OpenAIServer) -> str:
    return server.base_url + "/chat/completions"


async def read_all(client: HTTPClient, server: OpenAIServer) -> list[Event]:
    async with client.open_stream(url(server), json=STREAM, headers={}, decoder=SSEDecoder()) as s:
        return [event async for event in s]


async def test_request_json() -> None:
    async with OpenAIServer([HI]) as server:
        client = HTTPClient(provider="test")
        try:
            answer = await client.request_json("POST", url(server), json=BODY)
            with pytest.raises(NotFoundError) as caught:
                await client.request_json("GET", server.base_url + "/nothing")
        finally:
            await client.aclose()
    assert answer["choices"][0]["message"]["content"] == "Hi!"
    assert caught.value.message == "Invalid URL (GET /v1/nothing)"
    assert caught.value.provider == "test"


async def test_a_body_read_to_its_end_returns_the_connection_to_the_pool() -> None:
    async with OpenAIServer([HI]) as server:
        client = HTTPClient(provider="test")
        try:
            first = await read_all(client, server)
            assert client.stats() == PoolStats(in_use=0, idle=1)
            await read_all(client, server)
            assert client.stats() == PoolStats(in_use=0, idle=1)  # reused, not a second one
        finally:
            await client.aclose()
        assert client.stats() == PoolStats(0, 0)
    assert first[-1].data == "[DONE]"


async def test_the_stream_reports_a_cut_inside_an_event() -> None:
    async with OpenAIServer([HI], Faults(disconnect_after=1)) as server:
        client = HTTPClient(provider="test")
        try:
            with pytest.raises(StreamInterruptedError, match="broke"):
                await read_all(client, server)
            assert client.stats().in_use == 0
        finally:
            await client.aclose()


async def test_total_deadline_covers_the_body() -> None:
    async with OpenAIServer([HI], Faults(stall_after=1)) as server:
        client = HTTPClient(provider="test", timeout=Timeout(idle=None, total=0.2))
        try:
            with pytest.raises(APITimeoutError):
                await read_all(client, server)
            await server.wait_for_disconnects(1)
        finally:
            await client.aclose()


async def test_idle_timeout_covers_the_headers() -> None:
    async with OpenAIServer([HI], Faults(first_byte_delay=30)) as server:
        client = HTTPClient(provider="test", timeout=Timeout(idle=0.1), max_retries=1)
        try:
            with pytest.raises(APITimeoutError, match="waiting for the server"):
                await read_all(client, server)
        finally:
            await client.aclose()
    assert len(server.requests) == 2  # a timeout before any answer is retried


async def test_a_bad_url_is_an_input_error() -> None:
    client = HTTPClient(provider="test", max_retries=2)
    try:
        with pytest.raises(InvalidInputError, match="base_url"):
            await client.request_json("GET", "http://[not-a-host/")
    finally:
        await client.aclose()


async def test_use_after_close_is_refused() -> None:
    client = HTTPClient(provider="test")
    await client.aclose()
    await client.aclose()  # idempotent
    with pytest.raises(ClosedError):
        await client.request_json("GET", "http://127.0.0.1:9/")


async def test_each_loop_gets_its_own_session_closed_at_loop_shutdown() -> None:
    async with OpenAIServer([HI]) as server:
        client = HTTPClient(provider="test")
        sessions: list[aiohttp.ClientSession] = []

        async def elsewhere() -> Any:
            sessions.append(await client._pool.session())
            return await client.request_json("POST", url(server), json=BODY)

        try:
            mine = await client._pool.session()
            # A second event loop in a worker thread, never closed explicitly.
            answer = await anyio.to_thread.run_sync(anyio.run, elsewhere)
        finally:
            await client.aclose()
    assert answer["choices"][0]["message"]["content"] == "Hi!"
    [theirs] = sessions
    assert theirs is not mine
    assert theirs.closed  # closed by that loop's shutdown
    assert mine.closed


async def test_aclose_closes_the_sync_bridge_loops_session() -> None:
    async with OpenAIServer([HI]) as server:
        client = HTTPClient(provider="test")
        call = partial(client.request_json, "POST", url(server), json=BODY)
        try:
            await anyio.to_thread.run_sync(sync.run, call)
            bridge = await anyio.to_thread.run_sync(sync.run, client._pool.session)
            assert not bridge.closed
        finally:
            await client.aclose()  # from this loop, while the bridge loop keeps running
        assert bridge.closed
