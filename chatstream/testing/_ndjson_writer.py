"""NDJSON framing for the local servers: one JSON object per line, with the SSE writer's faults."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._sse_writer import SSEWriter, padded

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp import web

    from ._script import Faults
    from ._sse_writer import SSEEvent

__all__ = ["encode_line", "ndjson_writer"]


def encode_line(event: SSEEvent, faults: Faults) -> bytes:
    """Frame one payload as a line; only ``data`` is used, SSE field names do not exist here.

    Args:
        event: The event whose ``data`` is the line's JSON.
        faults: ``line_ending`` ends the line, ``trailing_spaces`` pads it.
    """
    return (padded(event.data, faults) + faults.line_ending).encode()


def _empty_line(count: int, faults: Faults) -> bytes:
    # NDJSON has no comments; an empty line is the nearest keep-alive a client must skip.
    return faults.line_ending.encode()


def ndjson_writer(
    response: web.StreamResponse,
    request: web.BaseRequest,
    faults: Faults,
    server_closing: Callable[[], bool],
) -> SSEWriter:
    """Return a writer that plays events as NDJSON lines, with every stream fault available.

    Args:
        response: The prepared streaming response.
        request: The request being answered.
        faults: The switches to apply.
        server_closing: Returns true once the owning server shuts down, ending any stall.
    """
    return SSEWriter(
        response, request, faults, server_closing, encode=encode_line, keepalive=_empty_line
    )
