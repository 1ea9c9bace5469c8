"""The HTTP client providers use: `HTTPClient.open_stream` for streamed bodies, `request_json`.

Retries, timeouts, error mapping and releasing connections all happen here, once. Nothing
above this module sees an aiohttp type or exception.
"""

from __future__ import annotations

import asyncio
import json as _json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, final

import aiohttp
import anyio

from chatstream._context import count_attempt
from chatstream.errors import (
    APIConnectionError,
    ChatStreamError,
    ProviderError,
    StreamProtocolError,
)

from ._errors import error_class, map_client_error, redact, status_error
from ._retry import RetryPolicy, parse_retry_after, should_retry_status
from ._session import ConnectionUse, PoolStats, SessionPool, Timeout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import TracebackType

    from chatstream._compat import Self

__all__ = [
    "Decoder",
    "HTTPClient",
    "PoolStats",
    "ResponseStream",
    "RetryPolicy",
    "Timeout",
    "error_class",
    "redact",
]

logger = logging.getLogger("chatstream.transport")

T = TypeVar("T")

_ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of an error response read (only an excerpt is kept, but the message may be late)."""

_DRAIN_TIMEOUT = 0.25
"""Seconds to wait, after a protocol's end marker, for the HTTP body to end."""

_CLIENT_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
"""What aiohttp and the socket raise for network trouble (TimeoutError is an OSError)."""


class Decoder(Protocol[T]):
    """A sans-I/O body decoder, such as `chatstream.transport.sse.SSEDecoder`."""

    def feed(self, data: bytes) -> list[T]:
        """Decode the next bytes; return what they completed."""
        ...

    def close(self) -> list[T]:
        """End the body; return anything completed by its end."""
        ...


@final
class HTTPClient:
    """The connections, retry policy and time limits of one model.

    Args:
        provider: The provider's name, recorded on every error.
        timeout: Time limits of each call.
        max_retries: Retries of a failed request (connection error, 408, 409, 429, 5xx). A
            request that met a pooled connection the server had closed while it was idle is
            resent once at once, on top of these and without a backoff.
        max_connections: Pool size per event loop. The clients with the same
            ``max_connections`` share a loop's pool (one aiohttp session): it is the size of
            their shared pool, and a new client finds the others' idle connections.
        retry: A full retry policy; overrides ``max_retries``.
        on_response: Told the status and headers of every response (a rate limiter adapts
            to the server's remaining budgets and its 429s).
    """

    def __init__(
        self,
        *,
        provider: str,
        timeout: Timeout | None = None,
        max_retries: int = 2,
        max_connections: int = 100,
        retry: RetryPolicy | None = None,
        on_response: Callable[[int, Mapping[str, str]], None] | None = None,
    ) -> None:
        self.provider = provider
        self.retry = retry if retry is not None else RetryPolicy(max_retries=max_retries)
        self.on_response = on_response
        self._pool = SessionPool(timeout=timeout or Timeout(), max_connections=max_connections)

    def __deepcopy__(self, memo: dict[int, Any]) -> HTTPClient:
        # Sessions belong to their loops and cannot be copied: a copy is a new client with the
        # same settings (pydantic deep-copies a model's private state in model_copy(deep=...)).
        pool = self._pool
        return HTTPClient(
            provider=self.provider,
            timeout=pool.timeout,
            max_connections=pool.max_connections,
            retry=self.retry,
            on_response=self.on_response,
        )

    def open_stream(
        self,
        url: str,
        *,
        json: Any,
        headers: Mapping[str, str],
        decoder: Decoder[T],
        secrets: Iterable[str] = (),
        method: str = "POST",
    ) -> ResponseStream[T]:
        """POST ``json`` and stream the response body through ``decoder``.

        Use it as ``async with client.open_stream(...) as items: async for item in items``.
        Entering sends the request, retrying as the policy allows; no retry happens once the
        body is being read. Leaving releases the connection: back to the pool when the body
        was read to its end, otherwise closed at once (an early ``break`` reads nothing more).

        Args:
            url: The endpoint.
            json: The request body, encoded as JSON; ``None`` sends no body (for a ``GET``).
            headers: Request headers (credentials included).
            decoder: Turns body bytes into items (SSE events, NDJSON values).
            secrets: Values scrubbed from error messages (credentials the server may echo).
            method: The HTTP method: ``GET`` streams a download (a batch's result file).

        Raises:
            ProviderError: The server answered with an error status (a subclass per status).
            APIConnectionError: The server could not be reached (`APITimeoutError` on time).
            StreamInterruptedError: The body broke off while being read.
        """
        body = None if json is None else _encode(json)
        return ResponseStream(self, url, body, headers, decoder, secrets, method)

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json: Any = None,
        data: bytes | None = None,
        secrets: Iterable[str] = (),
    ) -> Any:
        """Send one request and return its decoded JSON response body.

        Retries, deadlines and error mapping are those of `open_stream`: both go through one
        `_send`. The response is read whole, so it is meant for small JSON documents.

        Args:
            method: ``GET``, ``POST``, ...
            url: The endpoint.
            headers: Request headers (credentials included; a ``Content-Type`` for ``data``).
            json: A body encoded as JSON.
            data: A body sent as these bytes (a multipart upload); not with ``json``.
            secrets: Values scrubbed from error messages (credentials the server may echo).

        Raises:
            ProviderError: The server answered with an error status (a subclass per status).
            APIConnectionError: The server could not be reached, or the body broke off.
            StreamProtocolError: The response body is not JSON.
        """
        if json is not None and data is not None:
            raise TypeError("request_json takes a json body or data bytes, not both")
        body = data if json is None else _encode(json)
        scrub = tuple(secrets)
        response = await self._send(method, url, body, headers, scrub)
        try:
            raw = await response.read()
        except _CLIENT_ERRORS as exc:
            raise map_client_error(exc, in_body=True, url=url) from exc
        finally:
            response.release()
        try:
            return _json.loads(raw)
        except ValueError as exc:  # JSONDecodeError, or invalid UTF-8
            excerpt = redact(raw[:200].decode("utf-8", "replace"), scrub)
            raise StreamProtocolError(f"the response from {url} is not JSON", line=excerpt) from exc

    def stats(self) -> PoolStats:
        """Connection counts of the running loop's pool (for tests and diagnostics).

        The pool is shared: the counts include the other clients' connections in it.
        """
        return self._pool.stats()

    async def aclose(self) -> None:
        """Release the pools of every loop that used this client. Idempotent.

        A pool that no other open client uses is closed, with its connections. A client
        dropped without `aclose` leaves its pools open for other clients, until their loops
        shut down.
        """
        await self._pool.aclose()

    async def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        secrets: tuple[str, ...],
    ) -> aiohttp.ClientResponse:
        """Send until a 2xx response arrives (returned unread) or the policy gives up."""
        session = await self._pool.session()
        policy = self.retry
        total = self._pool.timeout.total
        loop = asyncio.get_running_loop()
        deadline = None if total is None else loop.time() + total
        retry = 0
        count_attempt()  # the run's attempts: this one and each retry (not a stale resend)
        may_resend = True
        while True:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.001)
            timeout = (
                self._pool.default_timeout
                if remaining is None
                else self._pool.timeout.client_timeout(remaining)
            )
            try:
                with ConnectionUse() as use:
                    response = await session.request(
                        method,
                        url,
                        data=body,
                        headers=headers,
                        timeout=timeout,
                        allow_redirects=False,
                    )
            except _CLIENT_ERRORS as exc:
                if may_resend and use.reused and _is_stale_connection_error(exc):
                    # The server had closed this pooled connection while it sat idle (some
                    # close right after a response that advertised keep-alive), and the
                    # request met the closed socket before any byte of an answer came.
                    # aiohttp skips a pooled connection only once its loop has processed the
                    # close, which a back-to-back request outruns (httpcore and urllib3 look
                    # at the idle socket itself before reusing it). A server that had closed
                    # the connection did not take the request, so it goes again at once,
                    # outside the retry budget, and only once: aiohttp has dropped the dead
                    # connection, the resend takes another pooled one or a new one, and a
                    # second failure is an ordinary one.
                    may_resend = False
                    logger.debug("resending %s %s: the pooled connection was closed", method, url)
                    continue
                error: ChatStreamError = map_client_error(exc, in_body=False, url=url)
                if not isinstance(error, APIConnectionError) or retry >= policy.max_retries:
                    raise error from exc
                delay = policy.delay(retry, None, now=time.time())
                cause: BaseException = exc
            else:
                if self.on_response is not None:
                    self.on_response(response.status, response.headers)
                if response.status < 300:
                    return response
                error = await self._status_error(response, url, secrets)
                if retry >= policy.max_retries or not should_retry_status(
                    response.status, response.headers
                ):
                    raise error
                delay = policy.delay(retry, response.headers, now=time.time())
                cause = error
            if deadline is not None and loop.time() + delay >= deadline:
                raise error from cause
            retry += 1
            count_attempt()
            logger.info(
                "retrying %s %s in %.3f s (retry %d of %d) after %s",
                method,
                url,
                delay,
                retry,
                policy.max_retries,
                error,
                extra={"retry_delay": delay, "retry_number": retry},
            )
            await anyio.sleep(delay)

    async def _status_error(
        self, response: aiohttp.ClientResponse, url: str, secrets: tuple[str, ...]
    ) -> ProviderError:
        try:
            raw = await _read_limited(response)
        except _CLIENT_ERRORS:
            raw = b""  # the status alone still says what went wrong
        finally:
            response.release()
        return status_error(
            response.status,
            response.reason,
            response.headers,
            raw.decode("utf-8", "replace"),
            provider=self.provider,
            retry_after=parse_retry_after(response.headers, now=time.time()),
            secrets=secrets,
        )


@final
class ResponseStream(Generic[T]):
    """A streamed response body as decoded items; made by `HTTPClient.open_stream`."""

    __slots__ = (
        "_body",
        "_client",
        "_content",
        "_decoder",
        "_done",
        "_headers",
        "_idle",
        "_loop",
        "_method",
        "_ready",
        "_response",
        "_secrets",
        "_url",
        "_waiting_since",
        "_watch",
    )

    def __init__(
        self,
        client: HTTPClient,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        decoder: Decoder[T],
        secrets: Iterable[str],
        method: str = "POST",
    ) -> None:
        self._client = client
        self._method = method
        self._url = url
        self._body = body
        self._headers = headers
        self._decoder = decoder
        self._secrets = tuple(secrets)
        self._response: aiohttp.ClientResponse | None = None
        self._content: aiohttp.StreamReader | None = None
        self._ready: deque[T] = deque()
        self._done = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: float | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None

    async def __aenter__(self) -> Self:
        response = await self._client._send(
            self._method, self._url, self._body, self._headers, self._secrets
        )
        self._response = response
        self._content = response.content
        self._watch_idle(response)
        return self

    @property
    def content_type(self) -> str:
        """The response's media type (``"text/event-stream"``, ...), once entered.

        Read when asked: aiohttp's ``content_type`` parses the header as a MIME header
        (several µs), on every response.
        """
        if self._response is None:
            return ""
        raw = self._response.headers.get("Content-Type")
        if raw is None:
            return "application/octet-stream"  # as aiohttp and RFC 9110 take a missing one
        return raw.partition(";")[0].strip().lower()

    def _watch_idle(self, response: aiohttp.ClientResponse) -> None:
        """Time the silences of the body here, with one timer, instead of in aiohttp.

        aiohttp's ``sock_read`` limit (which timed the wait for the headers) reschedules a
        timer on every read of the socket: for a stream of small events that is a timer
        created and cancelled per event, a good part of the cost of reading one. Here a
        read only notes when its wait began, and one timer looks at that once per ``idle``
        seconds; only time spent waiting for the server counts, not a slow consumer's.
        """
        idle = self._client._pool.timeout.idle
        connection = response.connection
        if idle is None or connection is None or connection.protocol is None:
            return  # no limit, or the body is in already
        connection.protocol.read_timeout = None  # from its next read on; this one still runs
        self._loop = loop = asyncio.get_running_loop()
        self._idle = idle
        self._watch = loop.call_at(loop.time() + idle, self._check_idle)

    def _check_idle(self) -> None:
        loop, idle, content = self._loop, self._idle, self._content
        if loop is None or idle is None or content is None or content.at_eof():
            self._watch = None  # the body is in: nothing left to wait for, even if never closed
            return
        since, now = self._waiting_since, loop.time()
        if since is not None and now - since >= idle:
            self._watch = None
            # aiohttp's own exception for the same silence: mapped alike (APITimeoutError).
            content.set_exception(aiohttp.SocketTimeoutError("Timeout on reading data from socket"))
            return
        self._watch = loop.call_at((now if since is None else since) + idle, self._check_idle)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        ready = self._ready
        while not ready:
            if self._done:
                raise StopAsyncIteration
            ready.extend(await self._read_items())
        return ready.popleft()

    async def batch(self) -> list[T]:
        """The next items, as many as one read of the body completed; ``[]`` at its end.

        For a loop over every item: one await per network read rather than one per item,
        which is most of what iterating costs when a read holds many events.
        """
        ready = self._ready
        if ready:
            items = list(ready)
            ready.clear()
            return items
        while not self._done:
            if items := await self._read_items():
                return items
        return []

    async def _read_items(self) -> list[T]:
        # One read of the body, decoded: often no complete item yet, or several.
        content = self._content
        if content is None:
            raise RuntimeError("enter the stream with `async with` before iterating it")
        loop = self._loop
        if loop is not None:
            self._waiting_since = loop.time()
        try:
            data = await content.readany()
        except _CLIENT_ERRORS as exc:
            raise map_client_error(exc, in_body=True, url=self._url) from exc
        finally:
            self._waiting_since = None
        if data:
            return self._decoder.feed(data)
        self._done = True
        return self._decoder.close()

    async def read(self) -> bytes:
        """The rest of the body, undecoded (for a server that answered JSON instead)."""
        response = self._response
        if response is None:
            raise RuntimeError("enter the stream with `async with` before reading it")
        connection = response.connection
        if connection is not None and connection.protocol is not None:
            # One read of the whole body: aiohttp's per-read limit fits it, so it gets it back.
            connection.protocol.read_timeout = self._idle
        try:
            data = await response.read()
        except _CLIENT_ERRORS as exc:
            raise map_client_error(exc, in_body=True, url=self._url) from exc
        self._done = True
        return data

    async def drain(self) -> None:
        """The protocol's end marker arrived: let the body end, so the connection is reused.

        Waits at most a fraction of a second for the end of the HTTP body and discards what
        comes; a server that keeps the response open just gets its connection closed.
        """
        content, response = self._content, self._response
        if content is None or response is None or content.at_eof():
            return
        # A timer that closes the response, not a cancel scope: this runs at the end of nearly
        # every call, and a scope costs more than the rest of a short call's ending.
        deadline = asyncio.get_running_loop().call_later(_DRAIN_TIMEOUT, response.close)
        try:
            while await content.readany():
                pass
        except _CLIENT_ERRORS:
            pass  # the answer is complete; a broken or closed tail only costs the connection
        finally:
            deadline.cancel()

    def close(self) -> None:
        """Release the connection: to the pool if the body was read to its end, else closed."""
        response, self._response = self._response, None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if response is None:
            return
        self._done = True
        self._ready.clear()
        if response.content.at_eof():
            response.release()
        else:
            # Closing, not reading the rest: an early break must free the connection at once.
            response.close()


_ENCODER = _json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""Made once: ``json.dumps`` with options builds a new encoder on every call."""


def _is_stale_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` is how aiohttp reports a request sent into a connection the peer closed.

    A clean close (FIN) is `aiohttp.ServerDisconnectedError`, whose ``message`` is the default
    text when no byte of a response had arrived (a partly parsed response would be a
    ``RawResponseMessage`` instead). A reset, or writing into the closed socket ("Can not write
    request body"), is a `ConnectionError` or `aiohttp.ClientOSError`. Timeouts are not: the
    server is slow, not gone. Connect errors are not: no pooled connection was involved.
    """
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return isinstance(exc.message, str)
    if isinstance(exc, (aiohttp.ClientConnectorError, asyncio.TimeoutError)):
        return False
    return isinstance(exc, (aiohttp.ClientOSError, ConnectionError))


def _encode(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < _ERROR_BODY_LIMIT:
        part = await response.content.read(_ERROR_BODY_LIMIT - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)
