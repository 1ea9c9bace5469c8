"""HTTPClient over real sockets: pooling, per-loop sessions, deadlines and error mapping."""

from __future__ import annotations

import json
import logging
from functools import partial

import aiohttp
import anyio
import pytest

from chatstream import sync
from chatstream.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClosedError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    ProviderError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from chatstream.testing.openai_server import Faults, OpenAIServer, ScriptedReply
from chatstream.transport.http import HTTPClient, PoolStats, RetryPolicy, Timeout
from chatstream.transport.sse import Event, SSEDecoder

STREAM = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
HI = ScriptedReply(text_chunks=["Hi", "!"])


def url(server: OpenAIServer) -> str:
    return server.base_url + "/chat/completions"


async def read_all(client: HTTPClient, server: OpenAIServer, to: str | None = None) -> list[Event]:
    target = url(server) if to is None else to
    async with client.open_stream(target, json=STREAM, headers={}, decoder=SSEDecoder()) as s:
        return [event async for event in s]


def text_of(events: list[Event]) -> str:
    """The streamed completion text, from OpenAI chunk events."""
    chunks = [json.loads(event.data) for event in events if event.data != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def fast_retries(max_retries: int = 2) -> RetryPolicy:
    # Backoff is the retry policy's business (tested in test_retry.py); here it only slows.
    return RetryPolicy(max_retries=max_retries, initial=0.001, maximum=0.001)


async def test_a_stream_is_decoded_to_its_end() -> None:
    async with OpenAIServer([HI]) as server:
        client = HTTPClient(provider="test")
        try:
            async with client.open_stream(
                url(server), json=STREAM, headers={"x-extra": "1"}, decoder=SSEDecoder()
            ) as stream:
                assert stream.content_type == "text/event-stream"
                events = [event async for event in stream]
        finally:
            await client.aclose()
    assert text_of(events) == "Hi!"
    assert events[-1].data == "[DONE]"
    [request] = server.requests
    assert request.body == STREAM
    assert request.headers["x-extra"] == "1"


async def test_an_error_status_is_mapped_with_its_message() -> None:
    async with OpenAIServer([HI]) as server:
        client = HTTPClient(provider="test")
        try:
            with pytest.raises(NotFoundError) as caught:
                await read_all(client, server, server.base_url + "/nothing")
            assert client.stats().in_use == 0  # the error body was read and released
        finally:
            await client.aclose()
    assert caught.value.message == "Invalid URL (POST /v1/nothing)"
    assert caught.value.provider == "test"
    assert caught.value.status == 404
    assert len(server.requests) == 1  # a 404 is not retried


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequestError), (401, AuthenticationError), (429, RateLimitError)],
)
async def test_statuses_map_to_their_errors(status: int, error: type[ProviderError]) -> None:
    async with OpenAIServer([HI], Faults(http_error=status)) as server:
        client = HTTPClient(provider="test", retry=fast_retries(0))
        try:
            with pytest.raises(error) as caught:
                await read_all(client, server)
        finally:
            await client.aclose()
    assert caught.value.status == status
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_")


async def test_a_retryable_status_is_retried_until_it_succeeds() -> None:
    async with OpenAIServer([HI], Faults(http_error=503, fail_times=2)) as server:
        client = HTTPClient(provider="test", retry=fast_retries(2))
        try:
            events = await read_all(client, server)
        finally:
            await client.aclose()
    assert text_of(events) == "Hi!"
    assert len(server.requests) == 3


async def test_retries_give_up_with_the_last_error() -> None:
    async with OpenAIServer([HI], Faults(http_error=500)) as server:
        client = HTTPClient(provider="test", retry=fast_retries(2))
        try:
            with pytest.raises(ServerError) as caught:
                await read_all(client, server)
        finally:
            await client.aclose()
    assert caught.value.status == 500
    assert len(server.requests) == 3  # the first attempt and two retries


async def test_a_status_the_server_says_not_to_retry_is_not_retried() -> None:
    faults = Faults(http_error=503, headers={"x-should-retry": "false"})
    async with OpenAIServer([HI], faults) as server:
        client = HTTPClient(provider="test", retry=fast_retries(2))
        try:
            with pytest.raises(OverloadedError):
                await read_all(client, server)
        finally:
            await client.aclose()
    assert len(server.requests) == 1


async def test_a_refused_connection_is_a_connection_error_after_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with OpenAIServer([HI]) as server:
        closed_url = url(server)
    # The server has stopped: its port now refuses connections.
    client = HTTPClient(provider="test", retry=fast_retries(2))
    try:
        with (
            caplog.at_level(logging.INFO, logger="chatstream.transport"),
            pytest.raises(APIConnectionError, match="could not get a response") as caught,
        ):
            async with client.open_stream(
                closed_url, json=STREAM, headers={}, decoder=SSEDecoder()
            ):
                pass
    finally:
        await client.aclose()
    assert not isinstance(caught.value, APITimeoutError)
    retries = [r for r in caplog.records if hasattr(r, "retry_number")]
    assert [r.retry_number for r in retries] == [1, 2]


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
    stream = client.open_stream(
        "http://[not-a-host/", json=STREAM, headers={}, decoder=SSEDecoder()
    )
    try:
        with pytest.raises(InvalidInputError, match="base_url"):
            async with stream:
                pass
    finally:
        await client.aclose()


async def test_use_after_close_is_refused() -> None:
    client = HTTPClient(provider="test")
    await client.aclose()
    await client.aclose()  # idempotent
    stream = client.open_stream(
        "http://127.0.0.1:9/", json=STREAM, headers={}, decoder=SSEDecoder()
    )
    with pytest.raises(ClosedError):
        async with stream:
            pass


async def test_each_loop_gets_its_own_session_closed_at_loop_shutdown() -> None:
    async with OpenAIServer([HI]) as server:
        client = HTTPClient(provider="test")
        sessions: list[aiohttp.ClientSession] = []

        async def elsewhere() -> list[Event]:
            sessions.append(await client._pool.session())
            return await read_all(client, server)

        try:
            mine = await client._pool.session()
            # A second event loop in a worker thread, never closed explicitly.
            answer = await anyio.to_thread.run_sync(anyio.run, elsewhere)
        finally:
            await client.aclose()
    assert text_of(answer) == "Hi!"
    [theirs] = sessions
    assert theirs is not mine
    assert theirs.closed  # closed by that loop's shutdown
    assert mine.closed


async def test_aclose_closes_the_sync_bridge_loops_session() -> None:
    async with OpenAIServer([HI]) as server:
        client = HTTPClient(provider="test")
        call = partial(read_all, client, server)
        try:
            events = await anyio.to_thread.run_sync(sync.run, call)
            assert text_of(events) == "Hi!"
            bridge = await anyio.to_thread.run_sync(sync.run, client._pool.session)
            assert not bridge.closed
        finally:
            await client.aclose()  # from this loop, while the bridge loop keeps running
        assert bridge.closed


async def test_a_silence_in_the_body_longer_than_idle_times_out() -> None:
    # The body's silences are timed by the stream's own watchdog (not aiohttp's per-read timer).
    async with OpenAIServer([HI], Faults(stall_after=2)) as server:
        client = HTTPClient(provider="test", timeout=Timeout(idle=0.2), max_retries=0)
        try:
            with anyio.fail_after(10):  # a hang guard only: the limit is 0.2 s
                with pytest.raises(APITimeoutError, match="waiting for the next chunk"):
                    await read_all(client, server)
            assert client.stats().in_use == 0  # the timed-out connection is given up
        finally:
            await client.aclose()
        await server.wait_for_disconnects(1)


async def test_a_slow_consumer_is_not_a_silent_server() -> None:
    # Only time spent waiting for the server counts: a consumer that pauses longer than the
    # idle limit between reads, while the server has sent everything, is not timed out.
    reply = ScriptedReply(text_chunks=["a", "b", "c"])
    async with OpenAIServer([reply]) as server:
        client = HTTPClient(provider="test", timeout=Timeout(idle=0.1), max_retries=0)
        try:
            async with client.open_stream(
                url(server), json=STREAM, headers={}, decoder=SSEDecoder()
            ) as stream:
                events = []
                async for event in stream:
                    events.append(event)
                    await anyio.sleep(0.15)
        finally:
            await client.aclose()
    assert text_of(events) == "abc"


async def test_a_body_left_open_after_the_end_marker_costs_only_its_connection() -> None:
    # [DONE] came but the server holds the body open: drain waits a moment, then closes the
    # connection instead of pooling it, and the stream ends normally.
    events_in_reply = 5  # the role chunk, "Hi", "!", the finish chunk and [DONE]
    async with OpenAIServer([HI], Faults(stall_after=events_in_reply)) as server:
        client = HTTPClient(provider="test")
        try:
            with anyio.fail_after(10):  # a hang guard only: drain gives up after 0.25 s
                async with client.open_stream(
                    url(server), json=STREAM, headers={}, decoder=SSEDecoder()
                ) as stream:
                    events = []
                    async for event in stream:
                        events.append(event)
                        if event.data == "[DONE]":
                            break
                    await stream.drain()
            assert client.stats() == PoolStats(in_use=0, idle=0)
            await server.wait_for_disconnects(1)
        finally:
            await client.aclose()
    assert text_of(events) == "Hi!"


async def test_the_idle_watchdog_stops_once_the_body_is_in() -> None:
    # A stream read to its end but never closed must not keep re-arming its timer forever.
    async with OpenAIServer([HI], Faults(chunk_delay=0.01)) as server:  # the body comes late
        client = HTTPClient(provider="test", timeout=Timeout(idle=0.05), max_retries=0)
        try:
            stream = client.open_stream(url(server), json=STREAM, headers={}, decoder=SSEDecoder())
            await stream.__aenter__()
            assert stream._watch is not None  # watched while the body streams
            events = [event async for event in stream]
            with anyio.fail_after(5):  # a hang guard only
                while stream._watch is not None:  # polling: the timer has no event
                    await anyio.sleep(0.02)
            stream.close()
        finally:
            await client.aclose()
    assert text_of(events) == "Hi!"
