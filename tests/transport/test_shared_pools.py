"""Connection pools shared between models of the same pool size on a loop, over real sockets.

A model made per call (``model = ChatOpenAI(...); await model.ainvoke(...)``, never closed) must
find the warm connection of the one before it; closing a model, or a copy of it, must not break
another; and a pool never crosses event loops.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import anyio
import pytest

from chatstream import sync
from chatstream.errors import APITimeoutError, ClosedError
from chatstream.providers.openai import ChatOpenAI
from chatstream.testing import serve_in_thread
from chatstream.testing.openai_server import Faults, OpenAIServer, ScriptedReply
from chatstream.transport.http import HTTPClient, PoolStats, Timeout

HI = ScriptedReply(text_chunks=["Hi", "!"])


def fresh(
    server: OpenAIServer, *, max_connections: int = 100, timeout: Timeout | None = None
) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="test",
        max_retries=0,
        max_connections=max_connections,
        timeout=timeout or Timeout(),
    )


def server_connections(server: OpenAIServer) -> list[object]:
    """The server's live connections, one handler per accepted socket (identity per socket)."""
    # LocalServer keeps its runner private; aiohttp's Server.connections is its public list of
    # live connection handlers (one per accepted socket, removed on connection_lost).
    runner = server._runner
    assert runner is not None
    assert runner.server is not None
    return list(runner.server.connections)


async def until_no_connections(server: OpenAIServer) -> None:
    # Closing a socket takes the server a loop turn or two to notice.
    with anyio.fail_after(5):
        while server_connections(server):
            await anyio.sleep(0.005)


async def test_fresh_models_with_the_same_settings_reuse_one_connection() -> None:
    async with OpenAIServer([HI]) as server:
        first = fresh(server)
        assert (await first.ainvoke("Hi")).content == "Hi!"
        [connection] = server_connections(server)
        second = fresh(server)  # made while the first is still alive and open
        assert second.pool_stats() == PoolStats(0, 0)  # no lease before its first call
        for _ in range(3):  # a new model per call, never closed, as in a web handler
            assert (await fresh(server).ainvoke("Hi")).content == "Hi!"
        assert (await second.ainvoke("Hi")).content == "Hi!"
        assert server_connections(server) == [connection]
        assert first.pool_stats() == second.pool_stats() == PoolStats(in_use=0, idle=1)
    assert len(server.requests) == 5


async def test_clients_with_the_same_pool_size_share_the_loops_session() -> None:
    one = HTTPClient(provider="test")
    other = HTTPClient(provider="test", timeout=Timeout(idle=1), max_retries=0)
    smaller = HTTPClient(provider="test", max_connections=5)
    try:
        session = await one._pool.session()
        assert await other._pool.session() is session  # time limits go with each request
        assert await smaller._pool.session() is not session
    finally:
        for client in (one, other, smaller):
            await client.aclose()
    assert session.closed


async def test_different_max_connections_get_different_pools() -> None:
    async with OpenAIServer([HI]) as server:
        default, small, small_too = (
            fresh(server),
            fresh(server, max_connections=5),
            fresh(server, max_connections=5),
        )
        await default.ainvoke("Hi")
        await small.ainvoke("Hi")
        assert len(server_connections(server)) == 2
        await small_too.ainvoke("Hi")
        assert len(server_connections(server)) == 2  # small's connection, reused
        assert small.pool_stats() == small_too.pool_stats() == PoolStats(0, 1)
        for model in (default, small, small_too):
            await model.aclose()
        await until_no_connections(server)


async def test_each_model_keeps_its_own_time_limits_in_a_shared_pool() -> None:
    async with OpenAIServer([HI], Faults(first_byte_delay=0.3)) as server:
        async with fresh(server, timeout=Timeout(idle=0.05)) as hasty, fresh(server) as patient:
            with pytest.raises(APITimeoutError):
                await hasty.ainvoke("Hi")
            assert (await patient.ainvoke("Hi")).content == "Hi!"


async def test_closing_one_of_two_sharing_models_leaves_the_other_working() -> None:
    async with OpenAIServer([HI]) as server:
        one, other = fresh(server), fresh(server)
        await one.ainvoke("Hi")
        await other.ainvoke("Hi")
        [connection] = server_connections(server)
        await one.aclose()
        assert one.pool_stats() == PoolStats(0, 0)
        with pytest.raises(ClosedError, match="was closed"):
            await one.ainvoke("Hi")
        assert (await other.ainvoke("Hi")).content == "Hi!"
        assert server_connections(server) == [connection]  # still open, still reused
        await other.aclose()  # the last open lease: the pool closes
        assert other.pool_stats() == PoolStats(0, 0)
        await until_no_connections(server)


async def test_a_closed_client_is_refused_while_its_shared_session_stays_open() -> None:
    async with OpenAIServer([HI]) as server:
        closed, open_ = fresh(server), fresh(server)
        try:
            await closed.ainvoke("Hi")
            await open_.ainvoke("Hi")
            await closed.aclose()
            await closed.aclose()  # idempotent
            with pytest.raises(ClosedError):
                await closed.ainvoke("Hi")
            with pytest.raises(ClosedError):
                await closed.abatch(["Hi", "Ho"])
        finally:
            await open_.aclose()


async def test_a_model_dropped_unclosed_leaves_its_pool_to_the_next() -> None:
    async with OpenAIServer([HI]) as server:
        dropped = HTTPClient(provider="test")
        session = await dropped._pool.session()
        gone = weakref.ref(dropped)
        del dropped
        gc.collect()
        assert gone() is None
        assert not session.closed  # a collected client only lets go of its lease

        await fresh(server).ainvoke("Hi")  # never closed, dropped at once
        gc.collect()
        [connection] = server_connections(server)
        model = fresh(server)
        await model.ainvoke("Hi")
        assert server_connections(server) == [connection]
        assert model.pool_stats() == PoolStats(0, 1)
        # The dropped ones hold no lease: closing this model, the only open one, closes it all.
        await model.aclose()
        await until_no_connections(server)
        assert session.closed


async def test_closing_a_bound_copy_leaves_the_original_working() -> None:
    def ping() -> str:
        """Ping."""
        return "pong"

    async with OpenAIServer([HI]) as server:
        async with fresh(server) as model:
            bound = model.bind_tools([ping])
            await bound.ainvoke("Hi")
            await bound.aclose()
            with pytest.raises(ClosedError):
                await bound.ainvoke("Hi")
            assert (await model.ainvoke("Hi")).content == "Hi!"
            assert len(server_connections(server)) == 1

            copy = model.model_copy()
            await model.aclose()
            assert (await copy.ainvoke("Hi")).content == "Hi!"  # and the other way round
            await copy.aclose()
        await until_no_connections(server)
    assert "tools" in server.requests[0].body
    assert "tools" not in server.requests[1].body


async def test_a_copy_takes_its_transport_settings_from_the_update() -> None:
    async with OpenAIServer([HI]) as server:
        async with fresh(server) as model, model.model_copy(update={"max_connections": 3}) as copy:
            await model.ainvoke("Hi")
            await copy.ainvoke("Hi")
            assert len(server_connections(server)) == 2  # a pool of another size
            assert copy.pool_stats() == PoolStats(0, 1)


async def test_a_deep_copy_of_a_used_model_gets_a_client_of_its_own() -> None:
    async with OpenAIServer([HI]) as server:
        async with fresh(server) as model:
            await model.ainvoke("Hi")  # the client now holds a lease, which cannot be copied
            async with model.model_copy(deep=True, update={"temperature": 0.5}) as copy:
                assert (await copy.ainvoke("Hi")).content == "Hi!"
            assert (await model.ainvoke("Hi")).content == "Hi!"
    assert server.requests[1].body["temperature"] == 0.5


async def test_a_copy_of_a_closed_model_is_closed() -> None:
    async with OpenAIServer([HI]) as server:
        model = fresh(server)
        await model.aclose()
        with pytest.raises(ClosedError):
            await model.model_copy().ainvoke("Hi")


def test_the_sync_bridge_never_shares_a_pool_with_another_loop() -> None:
    # The bridge's loop lives as long as the process: a pool size of this test's own keeps
    # the pools other tests left on it out of the way.
    size = 7
    with serve_in_thread(OpenAIServer([HI])) as server:
        model = fresh(server, max_connections=size)
        client = model._state.client
        try:
            assert model.invoke("Hi").content == "Hi!"  # on the bridge's loop
            bridge = sync.run(client._pool.session)
            # The bridge's pool, reused by another model.
            assert fresh(server, max_connections=size).invoke("Hi").content == "Hi!"
            assert len(server_connections(server)) == 1

            async def elsewhere() -> object:
                answer = await fresh(server, max_connections=size).ainvoke("Hi")
                assert await client._pool.session() is not bridge
                return answer.content

            assert asyncio.run(elsewhere()) == "Hi!"  # a loop of its own, then shut down
            assert not bridge.closed
            assert model.invoke("Hi").content == "Hi!"
        finally:
            gc.collect()  # the model made for one call holds no lease once collected
            model.close()
        assert bridge.closed
