"""aiohttp sessions, one per event loop: created lazily, pooled, timed out, and always closed.

A model is used from the caller's loop and from the sync bridge's loop, and an aiohttp session
must never cross loops, so sessions are keyed by the running loop.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import aiohttp
import anyio

from chatstream.errors import ClosedError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator
    from types import SimpleNamespace

__all__ = ["ConnectionUse", "PoolStats", "SessionPool", "Timeout"]

_CLOSE_TIMEOUT = 5.0
"""Seconds closing one session (here or on another loop) may take."""


@final
@dataclass(frozen=True, slots=True)
class Timeout:
    """Time limits of a model's HTTP calls, in seconds; ``None`` switches a limit off.

    There is deliberately no default total limit: a long generation is not a failure. Bound a
    whole call from outside with ``anyio.fail_after`` if needed.

    Attributes:
        connect: Getting a connection (waiting for a free one in the pool included).
        idle: Silence allowed from the server: waiting for the response headers, then between
            two pieces of the body (any bytes count, keep-alive comments included).
        total: A deadline for the whole call: every attempt, the waits between retries and
            reading the body.
    """

    connect: float | None = 10.0
    idle: float | None = 600.0
    total: float | None = None

    def client_timeout(self, remaining: float | None = None) -> aiohttp.ClientTimeout:
        """The aiohttp timeout of one attempt, given the seconds left of the total deadline."""
        # total=None: aiohttp's default 5-minute total would cut long generations short.
        return aiohttp.ClientTimeout(total=remaining, connect=self.connect, sock_read=self.idle)


@final
@dataclass(frozen=True, slots=True)
class PoolStats:
    """Connections of the current loop's session.

    Attributes:
        in_use: Connections held by a request or response right now.
        idle: Open keep-alive connections waiting in the pool for the next request.
    """

    in_use: int
    idle: int


@final
class ConnectionUse:
    """How one request got its connection; pass it to aiohttp as ``trace_request_ctx``.

    Attributes:
        reused: The connection came from the pool (it had served a response and sat idle),
            rather than being opened for this request.
    """

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


async def _on_connection_reuse(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceConnectionReuseconnParams,
) -> None:
    # aiohttp exposes no "reused" flag on a request or response; its tracing signal is the
    # one public place that says a pooled connection was taken rather than a new one opened.
    use = context.trace_request_ctx
    if isinstance(use, ConnectionUse):
        use.reused = True


def _reuse_tracing() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_connection_reuseconn.append(_on_connection_reuse)
    # Frozen like aiohttp freezes a session's configs: nothing can be added per session.
    config.freeze()
    return config


_REUSE_TRACING = _reuse_tracing()


async def _close_at_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    # Started once and left suspended: the loop tracks unfinished async generators and closes
    # them in shutdown_asyncgens() (asyncio.run, anyio.run, the sync bridge's exit), which runs
    # this finally and so closes a session nobody closed explicitly, on its own loop.
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
            await session.close()


@final
@dataclass(slots=True)
class _Entry:
    session: aiohttp.ClientSession
    closer: AsyncGenerator[None, None]


@final
class SessionPool:
    """The aiohttp sessions of one model, one per event loop that used it.

    Args:
        timeout: The time limits of every request.
        max_connections: Most simultaneous connections per loop (the pool size).
    """

    def __init__(self, *, timeout: Timeout, max_connections: int = 100) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self.default_timeout = timeout.client_timeout()
        self._entries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Entry] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False
        # The last loop's session, checked before the weak dictionary (which builds a weak
        # reference per lookup): calls nearly always come from the loop that came last.
        self._last: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = None

    async def session(self) -> aiohttp.ClientSession:
        """The running loop's session, created on first use.

        Raises:
            ClosedError: `aclose` was called.
        """
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop and not last[1].closed:
            return last[1]
        entry = self._entries.get(loop)
        if entry is not None and not entry.session.closed:
            self._last = (loop, entry.session)
            return entry.session
        if self._closed:
            raise ClosedError("the HTTP client was closed")
        for other in [other for other in self._entries if other.is_closed()]:
            del self._entries[other]
        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=self.default_timeout,
            headers={"User-Agent": "chatstream"},
            auto_decompress=True,
            trace_configs=[_REUSE_TRACING],
        )
        closer = _close_at_shutdown(session)
        await closer.asend(None)
        self._entries[loop] = _Entry(session, closer)
        self._last = (loop, session)
        return session

    def stats(self) -> PoolStats:
        """Connection counts of the running loop's session (zeros when it has none)."""
        entry = self._entries.get(asyncio.get_running_loop())
        if entry is None or entry.session.closed:
            return PoolStats(0, 0)
        connector = entry.session.connector
        # aiohttp has no public pool statistics; these two attributes are all of its state.
        acquired = getattr(connector, "_acquired", ())
        idle = getattr(connector, "_conns", {})
        return PoolStats(len(acquired), sum(len(conns) for conns in idle.values()))

    async def aclose(self) -> None:
        """Close every session: the running loop's here, others on their own loops. Idempotent."""
        self._closed = True
        self._last = None
        current = asyncio.get_running_loop()
        entries = list(self._entries.items())
        self._entries.clear()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
            for loop, entry in entries:
                if loop is current:
                    await entry.closer.aclose()
                elif loop.is_running():
                    future = asyncio.run_coroutine_threadsafe(entry.closer.aclose(), loop)
                    await asyncio.wrap_future(future)
                # A stopped loop closes its generator, and so the session, when it shuts down.
