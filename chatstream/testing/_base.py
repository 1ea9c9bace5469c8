"""Lifecycle, scripting and request/disconnect bookkeeping shared by the local protocol servers."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, final

import anyio
from aiohttp import web

from ._ndjson_writer import ndjson_writer
from ._script import Faults, ScriptedReply
from ._sse_writer import SSEWriter

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from chatstream._compat import Self

    from ._sse_writer import SSEEvent

__all__ = ["LocalServer", "RecordedRequest"]

_DEFAULT_REPLY = ScriptedReply(text_chunks=["Hello", "!"])


@final
@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    Attributes:
        method: HTTP method.
        path: Request path without the query string.
        headers: Request headers with lower-cased names (the last value wins on repeats).
        body: The parsed JSON body, or ``None`` when it was empty or not JSON.
        raw_body: The body bytes as received.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw_body: bytes


class LocalServer:
    """Base of the local protocol servers: an aiohttp app on 127.0.0.1 with a free port.

    Use it as an async context manager; it only runs inside that block. Subclasses add routes.

    Args:
        replies: Replies used in turn, cycling; defaults to a short greeting.
        faults: Fault switches; defaults to none.
        api_key: When set, requests must carry this key the provider's way.

    Attributes:
        requests: Every request received, in order.
        disconnects: Responses the client abandoned before the server finished writing them
            (while waiting for the first byte, or mid-stream).
        active_streams: Streaming responses currently being written.
        faults: The current fault switches.
        close_after_stream: A connection fault (set it before a request, like ``faults``):
            close the TCP connection right after every streamed response while its headers
            say ``Connection: keep-alive``, as some OpenAI-compatible servers do. A client
            that pools the connection finds it dead on the next request.
    """

    #: Path prefix of ``base_url``.
    base_path = ""
    #: Response header carrying a fresh request id (unless the handler set one); ``None``: none.
    request_id_header: ClassVar[str | None] = "x-request-id"

    def __init__(
        self,
        replies: Sequence[ScriptedReply] = (),
        faults: Faults | None = None,
        *,
        api_key: str | None = None,
    ) -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self.active_streams = 0
        self.faults = Faults()
        self.close_after_stream = False
        self._replies: list[ScriptedReply] = [_DEFAULT_REPLY]
        self._cursor = 0
        self._failures = 0
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._changed: anyio.Event | None = None
        self.script(replies, faults if faults is not None else Faults())

    def script(
        self, replies: Sequence[ScriptedReply] | None = None, faults: Faults | None = None
    ) -> None:
        """Replace the replies and/or the faults for the following requests.

        Rescripting restarts the reply cycle and the ``fail_times`` count.

        Args:
            replies: New replies; ``None`` keeps the current ones.
            faults: New faults; ``None`` keeps the current ones, ``Faults()`` clears them.
        """
        if replies is not None:
            self._replies = list(replies) or [_DEFAULT_REPLY]
        if faults is not None:
            self.faults = faults
        self._cursor = 0
        self._failures = 0

    @property
    def port(self) -> int:
        """The bound TCP port; only valid while the server runs."""
        if self._port is None:
            raise RuntimeError("the server is not running; use it as `async with`")
        return self._port

    @property
    def base_url(self) -> str:
        """The URL a client is configured with, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    async def __aenter__(self) -> Self:
        self._changed = anyio.Event()
        self._closing = False
        app = web.Application()
        app.on_response_prepare.append(self._decorate_response)
        self._add_routes(app)
        # handler_cancellation: aiohttp then cancels a handler whose client went away, which is
        # how a stalled stream learns about the disconnect.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._port = int(runner.addresses[0][1])
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        runner, self._runner = self._runner, None
        self._port = None
        if runner is not None:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

    # The timeout parameter is the documented test-helper API, like asyncio.wait_for's.
    async def wait_for_disconnects(self, n: int, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Wait until the server has seen at least ``n`` client disconnects mid-stream.

        Args:
            n: The count to reach.
            timeout: Seconds before giving up.

        Raises:
            TimeoutError: The count was not reached in time.
        """
        with anyio.fail_after(timeout):
            while self.disconnects < n:
                await self._wait_changed()

    async def wait_for_requests(self, n: int, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Wait until at least ``n`` requests have been recorded.

        Args:
            n: The count to reach.
            timeout: Seconds before giving up.

        Raises:
            TimeoutError: The count was not reached in time.
        """
        with anyio.fail_after(timeout):
            while len(self.requests) < n:
                await self._wait_changed()

    async def _wait_changed(self) -> None:
        if self._changed is None:
            raise RuntimeError("the server is not running; use it as `async with`")
        await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _request_id(self) -> str:
        return f"req_{secrets.token_hex(16)}"

    async def _decorate_response(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.request_id_header is not None:
            response.headers.setdefault(self.request_id_header, self._request_id())
        response.headers.update(self.faults.headers)
        # A web.Response is a whole body (errors, non-streamed JSON); only streams are affected.
        if self.close_after_stream and not isinstance(response, web.Response):
            # aiohttp has already settled the Connection header (nothing: keep-alive is
            # HTTP/1.1's default) when this hook runs, so force_close() now only makes it
            # drop the connection once the body is written, after advertising keep-alive.
            response.headers["Connection"] = "keep-alive"
            response.force_close()

    def _verbatim_error(self, status: int) -> web.Response | None:
        """Return the scripted ``error_body`` as the response, or ``None`` for the standard body."""
        body = self.faults.error_body
        if isinstance(body, str):
            kind = "text/html" if body.lstrip().startswith("<") else "text/plain"
            return web.Response(status=status, text=body, content_type=kind)
        if isinstance(body, dict):
            text = json.dumps(body, ensure_ascii=False)
            return web.Response(status=status, text=text, content_type="application/json")
        return None

    async def _receive(self, request: web.BaseRequest) -> RecordedRequest:
        """Record the request, then hold the answer for the ``first_byte_delay`` fault."""
        recorded = await self._record(request)
        if self.faults.first_byte_delay:
            try:
                await anyio.sleep(self.faults.first_byte_delay)
            except asyncio.CancelledError:
                # aiohttp cancels the handler when the client leaves before the first byte:
                # that response was abandoned too.
                if not self._closing:
                    self.disconnects += 1
                    self._notify()
                raise
        return recorded

    async def _record(self, request: web.BaseRequest) -> RecordedRequest:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            raw_body=raw,
        )
        self.requests.append(recorded)
        self._notify()
        return recorded

    def _next_reply(self) -> ScriptedReply:
        reply = self._replies[self._cursor % len(self._replies)]
        self._cursor += 1
        return reply

    def _take_failure(self) -> bool:
        """Return true when this request must get the scripted HTTP error."""
        faults = self.faults
        if faults.http_error is None:
            return False
        if faults.fail_times is not None and self._failures >= faults.fail_times:
            return False
        self._failures += 1
        return True

    async def _play(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        faults: Faults,
        events: Sequence[SSEEvent],
        error_events: Sequence[SSEEvent],
    ) -> web.StreamResponse:
        """Send ``response``'s headers, then play the events as SSE or, for NDJSON, as lines."""
        await response.prepare(request)
        make = ndjson_writer if response.content_type == "application/x-ndjson" else SSEWriter
        await self._run_stream(
            make(response, request, faults, lambda: self._closing), events, error_events
        )
        return response

    async def _run_stream(
        self, writer: SSEWriter, events: Sequence[SSEEvent], error_events: Sequence[SSEEvent]
    ) -> None:
        """Play a stream while keeping ``active_streams`` and ``disconnects`` up to date."""
        self.active_streams += 1
        gone = False
        try:
            await writer.play(events, error_events)
            gone = writer.client_gone
        except ConnectionError:
            # aiohttp refuses writes once the peer closed; the response cannot be finished.
            gone = True
        except asyncio.CancelledError:
            # With handler_cancellation aiohttp cancels the handler when the client leaves;
            # a cancel during our own shutdown is not a client disconnect.
            gone = not self._closing
            raise
        finally:
            self.active_streams -= 1
            if gone:
                self.disconnects += 1
            self._notify()
