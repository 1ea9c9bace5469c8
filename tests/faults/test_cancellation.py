"""Cancelling a stream at every phase of an HTTP call leaves nothing behind, for every provider.

Phases: TCP connect, awaiting the headers, before the first body byte, mid-body, the sleep
between retries, closing a sync iterator, and a web client disconnecting from `chat_handler` /
`log_handler`. After each: the server holds 0 connections (its own count, or the kernel's
socket table), no task of the loop is left over, and no thread was added (the sync bridge's
thread excepted). The conformance suite checks the pool and the server's disconnect count for
four of these phases; this adds the server- and process-side counts and the other phases.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING

import aiohttp
import anyio
import pytest
from aiohttp import web

from chatstream import sync
from chatstream.testing import serve_in_thread
from chatstream.testing.openai_server import Faults
from chatstream.transport.http import PoolStats
from chatstream.web import chat_handler, log_handler

from ._leaks import (
    SETTLE,
    Baseline,
    extra_threads,
    has_kernel_table,
    kernel_connections,
    server_connections,
)
from ._providers import LONG, Provider

if TYPE_CHECKING:
    from chatstream.messages import AIMessageChunk

    from ..providers._helpers import HTTPModel


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds (the counters have no event of their own)."""
    with anyio.fail_after(SETTLE):
        while not condition():
            await anyio.sleep(0.005)


async def cancel_when(
    model: HTTPModel, received: list[AIMessageChunk], reached: Callable[[], Awaitable[None]]
) -> None:
    """Stream from ``model`` into ``received`` in a task; cancel it once ``reached()`` returns."""

    async def consume() -> None:
        async for chunk in model.astream("Hi"):
            received.append(chunk)

    with anyio.fail_after(SETTLE * 2):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await reached()
            await anyio.wait_all_tasks_blocked()  # parked in that phase, not passing through
            group.cancel_scope.cancel()


PHASES = {
    # phase: (server faults, max_retries)
    "awaiting-headers": (Faults(first_byte_delay=30), 0),
    "before-first-byte": (Faults(stall_after=0), 0),
    "mid-body": (Faults(stall_after=3), 0),
    "retry-sleep": (Faults(http_error=503, headers={"retry-after": "30"}), 2),
}


@pytest.mark.parametrize("phase", list(PHASES))
async def test_cancel_leaves_no_connection_task_or_thread(
    provider: Provider, phase: str, caplog: pytest.LogCaptureFixture
) -> None:
    faults, max_retries = PHASES[phase]
    caplog.set_level(logging.INFO, logger="chatstream.transport")
    baseline = Baseline()
    async with provider.server([LONG], faults) as server:
        connections = ("server connections", lambda: server_connections(server))
        async with provider.model(server.base_url, max_retries=max_retries) as model:
            received: list[AIMessageChunk] = []

            async def reached() -> None:
                if phase == "awaiting-headers":
                    await server.wait_for_requests(1)
                elif phase == "before-first-byte":
                    await until(lambda: server.active_streams == 1)
                elif phase == "mid-body":
                    await until(lambda: bool(received))
                else:  # the first attempt failed: the client logged its delay and sleeps it
                    await until(lambda: any(hasattr(r, "retry_delay") for r in caplog.records))

            await cancel_when(model, received, reached)
            assert model.pool_stats().in_use == 0
            if phase == "retry-sleep":
                [delay] = [r.retry_delay for r in caplog.records if hasattr(r, "retry_delay")]
                assert delay == 30  # cancelled in the server's 30 s, not between requests
                assert len(server.requests) == 1
                # The 503's connection was read to its end, so it may wait in the pool.
                assert model.pool_stats().idle <= 1
            else:
                # Closed, not parked in the pool: the server sees its connection go at once.
                assert model.pool_stats() == PoolStats(0, 0)
                await until(lambda: server_connections(server) == 0)
                assert server.disconnects == 1
        assert await baseline.settle(connections) == {}
    assert await baseline.settle() == {}


@pytest.mark.skipif(not has_kernel_table(), reason="counts sockets in /proc/net/tcp (Linux)")
async def test_cancel_during_tcp_connect_leaves_no_socket(provider: Provider) -> None:
    baseline = Baseline()
    # A listener whose accept queue is full: Linux drops further SYNs, so a connect hangs in
    # SYN_SENT (retransmitting) until it is cancelled.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # takes the only queue slot
            before = kernel_connections(port)  # the filler's two ends
            async with provider.model(f"http://127.0.0.1:{port}", connect=60) as model:

                async def connecting() -> None:
                    await until(lambda: kernel_connections(port) > before)

                await cancel_when(model, [], connecting)
                assert model.pool_stats() == PoolStats(0, 0)
                await until(lambda: kernel_connections(port) == before)
            listener.setblocking(False)
            listener.accept()[0].close()  # the filler
            with pytest.raises(BlockingIOError):  # and nothing else ever got through
                listener.accept()
    assert await baseline.settle() == {}


async def _bridge_tasks() -> int:
    return len(anyio.get_running_tasks()) - 1  # minus this one


def test_closing_a_sync_stream_leaves_nothing(provider: Provider) -> None:
    threads = {thread.ident or 0 for thread in threading.enumerate()}
    with serve_in_thread(provider.server([LONG], Faults(chunk_delay=0.01))) as server:
        model = provider.model(server.base_url)
        tasks = sync.run(_bridge_tasks)
        stream = model.stream("Hi")
        assert isinstance(stream, Generator)  # typed an Iterator; closing it is the contract
        assert next(stream).content is not None
        stream.close()  # returns once the bridge task has closed the async stream
        assert sync.run(_bridge_tasks) == tasks
        deadline = time.monotonic() + SETTLE
        while (server.disconnects, server_connections(server)) != (1, 0):
            assert time.monotonic() < deadline, (server.disconnects, server_connections(server))
            time.sleep(0.005)
        model.close()
    assert extra_threads(threads) == []


@pytest.mark.parametrize("route", ["chat", "log"])
async def test_web_client_disconnect_cancels_the_upstream_stream(
    provider: Provider, route: str
) -> None:
    baseline = Baseline()
    async with provider.server([LONG], Faults(chunk_delay=0.01)) as upstream:
        async with provider.model(upstream.base_url) as model:
            app = web.Application()
            app.router.add_post("/chat", chat_handler(model))
            app.router.add_post("/log", log_handler(model))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                url = f"http://127.0.0.1:{runner.addresses[0][1]}/{route}"
                async with aiohttp.ClientSession() as session:
                    response = await session.post(url, json={"input": "Hi"})
                    await response.content.readuntil(b"\n\n")  # the first event arrived
                    assert upstream.active_streams == 1
                    response.close()  # the browser tab is closed
                await upstream.wait_for_disconnects(1)
                assert model.pool_stats() == PoolStats(0, 0)
                assert runner.server is not None
                web_server = runner.server
                await until(lambda: not web_server.connections)
                await until(lambda: server_connections(upstream) == 0)
            finally:
                await runner.cleanup()
    assert len(upstream.requests) == 1
    assert await baseline.settle() == {}
