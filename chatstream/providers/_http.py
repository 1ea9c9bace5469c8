"""The one streaming sequence every HTTP provider runs: `stream_chunks`.

open the stream → map in-stream errors → feed each decoded item to the provider's state machine
→ check that the stream ended properly → let the body end (so the connection is reused) → emit
the usage once. The order matters (usage only after a complete stream; draining only after the
protocol's end marker), so it is written here once; a provider brings its wire mapping and a
`StreamState`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, final

from ..errors import ProviderError
from ._common import loads, map_stream_errors

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping, Sequence

    from ..messages import AIMessageChunk
    from ..transport.http import Decoder, HTTPClient, ResponseStream

__all__ = ["Request", "StreamState", "copy_settings", "stream_chunks"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class StreamState(Protocol[T_contra]):
    """A provider's reading of one response: what its decoded items mean."""

    @property
    def done(self) -> bool:
        """Whether the protocol's end marker arrived (stop reading; the body should end)."""
        ...

    def feed(self, item: T_contra) -> Sequence[AIMessageChunk]:
        """The chunks one decoded item (an SSE event, an NDJSON value) holds."""
        ...

    def check_end(self) -> None:
        """Raise `StreamInterruptedError` unless the response ended as the protocol says."""
        ...

    def final_chunks(self) -> Sequence[AIMessageChunk]:
        """What is emitted once the stream ended properly: the usage, reported once."""
        ...


@final
@dataclass(frozen=True, slots=True)
class Request:
    """What `stream_chunks` sends."""

    url: str
    """The endpoint."""
    payload: dict[str, Any]
    """The JSON body."""
    headers: Mapping[str, str]
    """Request headers, credentials included."""
    secrets: tuple[str, ...]
    """The credentials' values, scrubbed from every error (servers echo them)."""


async def stream_chunks(
    client: HTTPClient,
    request: Request,
    decoder: Decoder[T],
    state: StreamState[T],
    *,
    on_json_body: Callable[[Any], Sequence[AIMessageChunk]] | None = None,
    fallback: Callable[[Request, ProviderError], Request | None] | None = None,
) -> AsyncGenerator[AIMessageChunk, None]:
    """Send ``request`` and yield the chunks ``state`` reads from the streamed response.

    Args:
        client: The model's HTTP client (retries, timeouts and status errors live there).
        request: The URL, JSON payload, headers and the secrets to scrub from any error.
        decoder: Turns body bytes into items (`SSEDecoder`, `NDJSONDecoder`).
        state: The provider's state machine for this response.
        on_json_body: For a server that ignores ``stream: true`` and answers with one JSON
            document: the chunks of that document (read by ``state`` too, so that its end
            and usage are checked as a stream's would be).
        fallback: Told the error status that refused a request, before anything streamed:
            returns the request to send instead (without a field that server rejects), or
            ``None`` to raise the error.

    Raises:
        ProviderError: An error status, or an error object inside the stream (scrubbed).
        StreamProtocolError: Data that is not JSON.
        StreamInterruptedError: The stream ended before the protocol said it was complete.
    """
    items = await _open(client, request, decoder, fallback)
    try:
        with map_stream_errors(client.provider, request.secrets):
            if on_json_body is not None and items.content_type.endswith("json"):
                for chunk in on_json_body(loads((await items.read()).decode())):
                    yield chunk
            else:
                feed = state.feed
                # A batch per network read, not an await per event: a read often holds many.
                while not state.done and (batch := await items.batch()):
                    for item in batch:
                        for chunk in feed(item):
                            yield chunk
                        if state.done:
                            break
        state.check_end()
        if state.done:
            await items.drain()
    finally:
        items.close()
    for chunk in state.final_chunks():
        yield chunk


async def _open(
    client: HTTPClient,
    request: Request,
    decoder: Decoder[T],
    fallback: Callable[[Request, ProviderError], Request | None] | None,
) -> ResponseStream[T]:
    """The response to ``request``, or to what ``fallback`` sends instead after a refusal."""
    while True:
        stream = client.open_stream(
            request.url,
            json=request.payload,
            headers=request.headers,
            decoder=decoder,
            secrets=request.secrets,
        )
        try:
            return await stream.__aenter__()
        except ProviderError as error:
            if fallback is None or (instead := fallback(request, error)) is None:
                raise
            request = instead


def copy_settings(
    body: dict[str, Any], settings: Mapping[str, Any], wire: Mapping[str, str]
) -> None:
    """Put every set value of ``settings`` into ``body`` at its wire path.

    A dotted path nests (``"options.num_predict"``); a dict value is copied as it is placed, so
    that settings nested under it later never change the caller's dict.
    """
    for name, path in wire.items():
        value = settings.get(name)
        if value is None:
            continue
        target = body
        *parents, last = path.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = dict(value) if isinstance(value, dict) else value
