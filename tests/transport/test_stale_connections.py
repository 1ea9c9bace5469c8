"""Pooled connections the server closed while they sat idle: resent once, at once, for free.

Some OpenAI-compatible servers close the connection right after a streamed response that
advertised keep-alive; the next request on the pooled connection then meets a closed socket.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio
import pytest

from chatstream.errors import APIConnectionError, APITimeoutError
from chatstream.testing.openai_server import Faults, OpenAIServer, ScriptedReply
from chatstream.transport.http import HTTPClient, PoolStats, RetryPolicy, Timeout
from chatstream.transport.sse import Event, SSEDecoder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import SocketStream

STREAM = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
HI = ScriptedReply(text_chunks=["Hi", "!"])
CALLS = 10


async def read_all(client: HTTPClient, url: str) -> list[Event]:
    async with client.open_stream(url, json=STREAM, headers={}, decoder=SSEDecoder()) as s:
        return [event async for event in s]


def resends(caplog: pytest.LogCaptureFixture) -> int:
    return sum("the pooled connection was closed" in r.getMessage() for r in caplog.records)


def skipped(caplog: pytest.LogCaptureFixture) -> int:
    """Pooled connections seen closed (their socket readable) before a request was sent."""
    return sum("not reusing a pooled connection" in r.getMessage() for r in caplog.records)


def retries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if hasattr(record, "retry_delay")]


@pytest.fixture
async def closing_server() -> AsyncIterator[OpenAIServer]:
    async with OpenAIServer([HI]) as server:
        server.close_after_stream = True
        yield server


async def test_back_to_back_streams_succeed_without_retries(
    closing_server: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = HTTPClient(provider="test", max_retries=0)
    caplog.set_level(logging.DEBUG, logger="chatstream.transport")
    try:
        for _ in range(CALLS):
            events = await read_all(client, closing_server.base_url + "/chat/completions")
            assert events[-1].data == "[DONE]"
    finally:
        await client.aclose()
    # The resent requests never reached the handler: the server had closed those sockets.
    assert len(closing_server.requests) == CALLS
    # Every call after the first found its pooled connection closed: seen on its socket
    # before sending, or met by the request and resent (unless the loop noticed the close
    # first, in which case aiohttp skipped that connection itself).
    assert 1 <= skipped(caplog) + resends(caplog) <= CALLS - 1


async def test_a_connection_seen_closed_while_idle_is_not_sent_a_request(
    closing_server: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = HTTPClient(provider="test", max_retries=0)
    caplog.set_level(logging.DEBUG, logger="chatstream.transport")
    url = closing_server.base_url + "/chat/completions"
    try:
        await read_all(client, url)
        assert client.stats().idle == 1
        # Blocking, so that the loop cannot process the server's close: only the socket says.
        time.sleep(0.2)  # noqa: ASYNC251
        events = await read_all(client, url)
    finally:
        await client.aclose()
    assert events[-1].data == "[DONE]"
    assert (skipped(caplog), resends(caplog)) == (1, 0)
    assert len(closing_server.requests) == 2


async def test_default_retries_spend_no_backoff_on_a_closed_connection(
    closing_server: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = HTTPClient(provider="test")
    caplog.set_level(logging.DEBUG, logger="chatstream.transport")
    try:
        for _ in range(CALLS):
            await read_all(client, closing_server.base_url + "/chat/completions")
    finally:
        await client.aclose()
    assert retries(caplog) == []  # no budgeted retry, hence no backoff sleep
    assert skipped(caplog) + resends(caplog) >= 1
    assert len(closing_server.requests) == CALLS


async def test_a_connection_close_header_keeps_the_connection_out_of_the_pool() -> None:
    async with OpenAIServer([HI], Faults(headers={"Connection": "close"})) as server:
        client = HTTPClient(provider="test")
        try:
            events = await read_all(client, server.base_url + "/chat/completions")
            assert client.stats() == PoolStats(in_use=0, idle=0)
        finally:
            await client.aclose()
    assert events[-1].data == "[DONE]"


async def test_a_timeout_on_a_reused_connection_is_not_resent() -> None:
    async with OpenAIServer([HI]) as server:
        client = HTTPClient(provider="test", timeout=Timeout(idle=0.1), max_retries=0)
        try:
            await read_all(client, server.base_url + "/chat/completions")
            assert client.stats().idle == 1
            server.script(faults=Faults(first_byte_delay=30))
            with pytest.raises(APITimeoutError):
                await read_all(client, server.base_url + "/chat/completions")
        finally:
            await client.aclose()
    assert len(server.requests) == 2  # a slow server is not a closed connection


# -- a raw server, for what an aiohttp server cannot be made to do --------------------------

_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 14\r\n\r\n"
    b"data: [DONE]\n\n"
)


class OneShotServer:
    """Answers the first request of every connection, closes it on the second without answering.

    Unlike a server that closes at once, the idle connection looks alive to the client until it
    is used, so several of them can wait in the pool, each failing only when reused.

    Attributes:
        requests: Requests received, answered or not.
        connections: TCP connections accepted.
        answering: Whether the first request of a connection is answered (else none is).
        hold_for: Hold every answer until this many connections sent their first request.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.answering = True
        self.hold_for = 0
        self._first_requests = 0
        self._all_arrived = anyio.Event()

    async def handle(self, stream: SocketStream) -> None:
        self.connections += 1
        async with stream:
            buffer = b""
            answered = False
            while True:
                try:
                    buffer += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                head, found, rest = buffer.partition(b"\r\n\r\n")
                length = _content_length(head)
                if not found or len(rest) < length:
                    continue
                buffer = rest[length:]
                self.requests += 1
                if answered or not self.answering:
                    return  # closing without an answer: the connection was spent
                answered = True
                self._first_requests += 1
                if self._first_requests >= self.hold_for:
                    self._all_arrived.set()
                await self._all_arrived.wait()
                await stream.send(_ANSWER)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.fixture
async def one_shot() -> AsyncIterator[tuple[OneShotServer, str]]:
    server = OneShotServer()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        yield server, f"http://127.0.0.1:{port}/v1/chat/completions"
        tg.cancel_scope.cancel()


async def fill_pool(client: HTTPClient, server: OneShotServer, url: str, n: int) -> None:
    """Leave ``n`` idle connections in the pool: ``n`` streams answered at the same time.

    A short answer is complete, and its connection back in the pool, before it is even read:
    the server holds the answers until every request arrived, each on its own connection.
    """
    server.hold_for = n
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(read_all, client, url)
    assert client.stats() == PoolStats(in_use=0, idle=n)
    assert (server.requests, server.connections) == (n, n)


async def test_the_resend_happens_once_then_the_budget_applies(
    one_shot: tuple[OneShotServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, url = one_shot
    client = HTTPClient(provider="test", max_retries=0)
    caplog.set_level(logging.DEBUG, logger="chatstream.transport")
    try:
        await fill_pool(client, server, url, 3)
        # The first pooled connection fails, the resend takes the second, which fails too:
        # no third immediate attempt, and no retry budget left.
        with pytest.raises(APIConnectionError, match="could not get a response"):
            await read_all(client, url)
        assert (server.requests, server.connections) == (3 + 2, 3)
        assert resends(caplog) == 1
    finally:
        await client.aclose()


async def test_a_budgeted_retry_follows_a_failed_resend(
    one_shot: tuple[OneShotServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, url = one_shot
    policy = RetryPolicy(max_retries=1, initial=0.001, maximum=0.001)
    client = HTTPClient(provider="test", retry=policy)
    caplog.set_level(logging.DEBUG, logger="chatstream.transport")
    try:
        await fill_pool(client, server, url, 2)
        [event] = await read_all(client, url)  # stale, resent, stale, retried on a new one
        assert event.data == "[DONE]"
        assert (server.requests, server.connections) == (2 + 3, 3)
        assert [r.__dict__["retry_number"] for r in retries(caplog)] == [1]
    finally:
        await client.aclose()


async def test_a_spent_connection_is_resent_on_a_new_one(
    one_shot: tuple[OneShotServer, str],
) -> None:
    server, url = one_shot
    client = HTTPClient(provider="test", max_retries=0)
    try:
        await read_all(client, url)
        assert client.stats().idle == 1
        [event] = await read_all(client, url)  # reused and closed, then resent on a new one
        assert event.data == "[DONE]"
        assert (server.requests, server.connections) == (3, 2)
    finally:
        await client.aclose()


async def test_a_failure_on_a_new_connection_is_not_resent(
    one_shot: tuple[OneShotServer, str],
) -> None:
    server, url = one_shot
    server.answering = False
    client = HTTPClient(provider="test", max_retries=0)
    try:
        with pytest.raises(APIConnectionError, match="ServerDisconnectedError"):
            await read_all(client, url)
    finally:
        await client.aclose()
    # The same error as on a stale connection, but on a new one: the server is broken.
    assert (server.requests, server.connections) == (1, 1)
