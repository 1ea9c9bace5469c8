"""Server-side SSE framing and fault injection shared by the local protocol servers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from aiohttp import web

    from ._script import Faults

__all__ = [
    "MALFORMED_DATA",
    "SSEEvent",
    "SSEWriter",
    "comment_event",
    "dump_json",
    "encode_event",
    "padded",
]

#: Payload of the ``malformed_after`` fault: a JSON object cut short.
MALFORMED_DATA = '{"id": "broken", "choices": [{"delta": {"content": "unterminated'

_COMMENTS = (": ping", ": keep-alive")
_BOM = "\ufeff".encode()


@final
@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event.

    Attributes:
        data: The payload; embedded newlines become several data lines.
        event: The optional ``event:`` field (Anthropic names every event).
        field: The payload field name; ``"error"`` reproduces llama.cpp's old non-standard field.
    """

    data: str
    event: str | None = None
    field: str = "data"


def dump_json(value: Any, faults: Faults) -> str:
    """Encode a payload the way the emulated server does.

    Args:
        value: The JSON value.
        faults: ``spaced_json`` selects Python's default spaced, ASCII-escaped encoding;
            otherwise the encoding is compact UTF-8 like OpenAI's.
    """
    if faults.spaced_json:
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def padded(data: str, faults: Faults) -> str:
    """Return a payload with the ``trailing_spaces`` fault applied (JSON objects only).

    Args:
        data: The payload text.
        faults: The switches.
    """
    if faults.trailing_spaces and data.startswith("{"):
        return data + "      "
    return data


def comment_event(count: int, faults: Faults) -> bytes:
    """Return the keep-alive comment written before event number ``count`` under ``comments``.

    Args:
        count: How many events were written before.
        faults: The framing switches.
    """
    eol = faults.line_ending
    return f"{_COMMENTS[count % len(_COMMENTS)]}{eol}{eol}".encode()


def encode_event(event: SSEEvent, faults: Faults) -> bytes:
    """Frame one event, applying the line-ending, colon-space and multi-line-data switches.

    Args:
        event: The event.
        faults: The framing switches.

    Returns:
        The event's bytes, ending with a blank line.
    """
    eol = faults.line_ending
    sep = ":" if faults.no_space_after_colon else ": "
    lines: list[str] = []
    if event.event is not None:
        lines.append(f"event{sep}{event.event}")
    data = padded(event.data, faults)
    data_lines = data.split("\n")
    if faults.multiline_data and len(data_lines) == 1:
        data_lines = _split_json_line(data)
    lines.extend(f"{event.field}{sep}{line}" for line in data_lines)
    return (eol.join(lines) + eol + eol).encode()


def _split_json_line(data: str) -> list[str]:
    # A newline between JSON tokens is whitespace, so the joined lines still parse as JSON.
    # The cut goes after the first comma *between* tokens that precedes a key: a string may
    # hold ',"' itself (any string ending in a comma), and a newline there breaks the JSON.
    if not data.startswith("{"):
        return [data]
    in_string = escaped = False
    for index, char in enumerate(data):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = in_string
        elif char == '"':
            in_string = not in_string
        elif char == "," and not in_string and data.startswith('"', index + 1):
            return [data[: index + 1], data[index + 1 :]]
    return [data]


@final
class SSEWriter:
    """Writes a scripted event sequence to an aiohttp response, applying stream faults.

    The framing is SSE unless ``encode`` and ``keepalive`` swap it (the NDJSON writer does).

    Args:
        response: The prepared streaming response.
        request: The request being answered (its transport tells whether the client left).
        faults: The switches to apply.
        server_closing: Returns true once the owning server shuts down, ending any stall.
        encode: Frames one event.
        keepalive: The bytes the ``comments`` fault writes before event number ``n``.
    """

    def __init__(
        self,
        response: web.StreamResponse,
        request: web.BaseRequest,
        faults: Faults,
        server_closing: Callable[[], bool],
        *,
        encode: Callable[[SSEEvent, Faults], bytes] = encode_event,
        keepalive: Callable[[int, Faults], bytes] = comment_event,
    ) -> None:
        self._response = response
        self._encode = encode
        self._keepalive = keepalive
        self._request = request
        self._faults = faults
        self._server_closing = server_closing
        self._offset = 0
        self._events = 0
        self.client_gone = False
        """True when the stream ended because the client went away."""

    def client_left(self) -> bool:
        """Return true when the client's connection is closed or closing."""
        transport = self._request.transport
        return transport is None or transport.is_closing()

    async def play(self, events: Sequence[SSEEvent], error_events: Sequence[SSEEvent]) -> None:
        """Write ``events`` in order, honouring the event-count faults.

        Args:
            events: The complete stream, end marker included.
            error_events: What replaces the rest of the stream under ``error_event_after``.
        """
        faults = self._faults
        if faults.bom:
            await self._write(_BOM)
        for index in range(len(events) + 1):
            event = events[index] if index < len(events) else None
            if index == faults.stall_after:
                await self._hold()
                return
            if index == faults.disconnect_after:
                await self._drop(event)
                return
            if index == faults.error_event_after:
                for error in error_events:
                    await self.send(error)
                return
            if index == faults.malformed_after:
                await self.send(SSEEvent(MALFORMED_DATA))
            if event is not None:
                await self.send(event)

    async def send(self, event: SSEEvent) -> None:
        """Write one event, preceded by the comment and delay faults."""
        if self._events and self._faults.chunk_delay:
            await anyio.sleep(self._faults.chunk_delay)
        if self._faults.comments:
            await self._write(self._keepalive(self._events, self._faults))
        self._events += 1
        await self._write(self._encode(event, self._faults))

    async def _write(self, data: bytes) -> None:
        size = self._faults.split_writes
        if size is None:
            await self._response.write(data)
            self._offset += len(data)
            return
        start = 0
        while start < len(data):
            # Cuts sit at absolute body offsets divisible by ``size``, so across events every
            # byte boundary is eventually exercised, not only those near event starts.
            end = min(len(data), start + size - (self._offset + start) % size)
            await self._response.write(data[start:end])
            start = end
            # Yield so a client in the same event loop can read each piece on its own.
            await anyio.lowlevel.checkpoint()
        self._offset += len(data)

    async def _hold(self) -> None:
        while not self.client_left():
            if self._server_closing():
                return
            await anyio.sleep(0.01)
        self.client_gone = True

    async def _drop(self, event: SSEEvent | None) -> None:
        if event is not None:
            data = self._encode(event, self._faults)
            await self._write(data[: max(1, len(data) // 2)])
        transport = self._request.transport
        if transport is not None:
            # close() flushes what was written and sends FIN without the final empty chunk,
            # so the client sees a truncated chunked body, as after a proxy or worker crash.
            transport.close()
