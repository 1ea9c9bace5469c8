"""aiohttp sessions shared per event loop and pool size: created lazily, leased, always closed.

A model is used from the caller's loop and from the sync bridge's loop, and an aiohttp session
must never cross loops, so sessions are keyed by the running loop. Models with the same pool
size share a loop's session, so that a model made per call finds warm keep-alive connections.
"""

from __future__ import annotations

import asyncio
import logging
import select
import weakref
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import aiohttp
import anyio

from chatstream.errors import ClosedError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

__all__ = ["ConnectionUse", "PoolStats", "SessionPool", "Timeout"]

logger = logging.getLogger("chatstream.transport")

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
    """How one request got its connection: ``with ConnectionUse() as use:`` around the request.

    Attributes:
        reused: The connection came from the pool (it had served a response and sat idle),
            rather than being opened for this request.
    """

    __slots__ = ("_token", "reused")

    def __init__(self) -> None:
        self.reused = False
        self._token: Token[ConnectionUse | None] | None = None

    def __enter__(self) -> ConnectionUse:
        self._token = _CURRENT_USE.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _CURRENT_USE.reset(self._token)
            self._token = None


_CURRENT_USE: ContextVar[ConnectionUse | None] = ContextVar(
    "chatstream_connection_use", default=None
)
"""The request being sent by the running task: the connector marks how it got its connection."""


@final
class _Connector(aiohttp.TCPConnector):
    """A TCP connector that tells the request being sent whether its connection was pooled.

    aiohttp exposes no "reused" flag on a request or response. Its tracing signal says it,
    but a session with any trace config builds and awaits a dozen trace events per request,
    a good part of a short call's cost; this asks one set instead.
    """

    def __init__(self, *, limit: int, limit_per_host: int) -> None:
        super().__init__(limit=limit, limit_per_host=limit_per_host)
        # Every connection handed out so far: one handed out again came back from the pool.
        self._served: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature, overridden)
    ) -> Connection:
        served = self._served
        while True:
            connection = await super().connect(req, traces, timeout)
            protocol = connection.protocol
            if protocol is None:
                return connection
            if protocol not in served:
                served.add(protocol)
                return connection
            if not _closed_by_peer(protocol):
                if (use := _CURRENT_USE.get()) is not None:
                    use.reused = True
                return connection
            # The server closed it while it sat idle, and the loop has not seen it yet: a
            # back-to-back request outruns that. Looking at the socket, as httpcore and
            # urllib3 do before reusing one, costs a poll instead of a failed request.
            logger.debug("not reusing a pooled connection the server closed")
            connection.close()


def _closed_by_peer(protocol: ResponseHandler) -> bool:
    """Whether an idle connection's socket is readable: closed by the server, or junk sent.

    An idle HTTP/1.1 connection has nothing to read until it sends a request, so either way it
    must not take one.
    """
    transport = protocol.transport
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        poller = select.poll()
    except AttributeError:  # Windows: no poll (select's fd limit is of no concern there)
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


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
class _Shared:
    """One loop's session for one pool size, and the pools that hold a lease on it."""

    __slots__ = ("closer", "holders", "max_connections", "session")

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        connector = _Connector(limit=max_connections, limit_per_host=0)
        self.session = aiohttp.ClientSession(
            connector=connector,
            # Never used: every request passes its own pool's time limits.
            timeout=Timeout().client_timeout(),
            headers={"User-Agent": "chatstream"},
            auto_decompress=True,
        )
        self.closer = _close_at_shutdown(self.session)
        # Weak: a pool dropped without `aclose` lets go of its lease by being collected, and
        # leaves the session open for the next model (the loop's shutdown closes it).
        self.holders: weakref.WeakSet[SessionPool] = weakref.WeakSet()


_SHARED: dict[asyncio.AbstractEventLoop, dict[int, _Shared]] = {}
"""Each loop's sessions by pool size. A loop's own dictionary changes only on that loop.

Not weak: a session refers to its loop anyway. Closed loops are dropped at the next lease.
"""


async def _lease(
    loop: asyncio.AbstractEventLoop, max_connections: int, holder: SessionPool
) -> _Shared:
    """Give ``holder`` a lease on the running loop's session of this pool size."""
    sessions = _SHARED.get(loop)
    if sessions is None:
        # list() copies the keys in one step, while other loops' threads may add theirs.
        for other in list(_SHARED):
            if other.is_closed():
                _SHARED.pop(other, None)
        sessions = _SHARED.setdefault(loop, {})
    shared = sessions.get(max_connections)
    if shared is None or shared.session.closed:
        shared = sessions[max_connections] = _Shared(max_connections)
        await shared.closer.asend(None)
    shared.holders.add(holder)
    return shared


async def _release(loop: asyncio.AbstractEventLoop, shared: _Shared, holder: SessionPool) -> None:
    """End ``holder``'s lease, on the session's loop; close the session if it was the last."""
    shared.holders.discard(holder)
    if shared.holders:
        return
    sessions = _SHARED.get(loop, {})
    if sessions.get(shared.max_connections) is shared:
        del sessions[shared.max_connections]
    await shared.closer.aclose()


@final
class SessionPool:
    """One model's leases on the shared aiohttp sessions, one per event loop that it used.

    The pools with the same ``max_connections`` share a loop's session, and so its connections:
    ``max_connections`` is the size of the pool they share on that loop. `aclose` ends this
    pool's leases and closes each session that no other open pool holds; a pool dropped
    without `aclose` just lets go of its leases, and leaves the session, with its idle
    keep-alive connections, to the next pool. A loop's sessions are closed when it shuts down.

    Args:
        timeout: The time limits of every request.
        max_connections: Most simultaneous connections per loop (the size of the shared pool).
    """

    def __init__(self, *, timeout: Timeout, max_connections: int = 100) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self.default_timeout = timeout.client_timeout()
        self._leases: dict[asyncio.AbstractEventLoop, _Shared] = {}
        self._closed = False
        # The last loop's session, checked before the dictionaries: calls nearly always come
        # from the loop that came last.
        self._last: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = None

    async def session(self) -> aiohttp.ClientSession:
        """The running loop's session, leased on first use.

        Raises:
            ClosedError: `aclose` was called.
        """
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop and not last[1].closed:
            return last[1]
        if self._closed:
            raise ClosedError("the HTTP client was closed")
        shared = self._leases.get(loop)
        if shared is None or shared.session.closed:
            shared = await _lease(loop, self.max_connections, self)
            for other in list(self._leases):
                if other.is_closed():
                    self._leases.pop(other, None)
            self._leases[loop] = shared
        self._last = (loop, shared.session)
        return shared.session

    def stats(self) -> PoolStats:
        """Connection counts of the running loop's session (zeros when this pool has none).

        The session is shared: the counts include the connections of the other pools with the
        same ``max_connections`` on this loop.
        """
        shared = self._leases.get(asyncio.get_running_loop())
        if shared is None or shared.session.closed:
            return PoolStats(0, 0)
        connector = shared.session.connector
        # aiohttp has no public pool statistics; these two attributes are all of its state.
        acquired = getattr(connector, "_acquired", ())
        idle = getattr(connector, "_conns", {})
        return PoolStats(len(acquired), sum(len(conns) for conns in idle.values()))

    async def aclose(self) -> None:
        """End every lease, closing each session no other open pool holds. Idempotent.

        The running loop's session is released here, others on their own loops.
        """
        self._closed = True
        self._last = None
        current = asyncio.get_running_loop()
        leases = list(self._leases.items())
        self._leases.clear()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
            for loop, shared in leases:
                if loop is current:
                    await _release(loop, shared, self)
                elif loop.is_running():
                    future = asyncio.run_coroutine_threadsafe(_release(loop, shared, self), loop)
                    await asyncio.wrap_future(future)
                else:
                    # A stopped loop closes the session, if still unused, when it shuts down.
                    shared.holders.discard(self)
