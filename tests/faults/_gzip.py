"""`gzip_proxy`: an HTTP proxy that re-sends a server's responses with ``Content-Encoding: gzip``.

As a compressing reverse proxy does: the body is gzip, compressed piece by piece as it comes.
With ``flush`` each piece is flushed (``Z_SYNC_FLUSH``), so events still arrive one by one;
without, the compressor holds them until it has enough (or the body ends).
"""

from __future__ import annotations

import zlib
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

_HOP_HEADERS = {"host", "content-length", "accept-encoding", "transfer-encoding", "connection"}


@dataclass
class GzipStats:
    """What the proxy sent."""

    raw: int = 0
    """Body bytes received from the server."""
    compressed: int = 0
    """Body bytes sent to the client, gzip-encoded."""


@asynccontextmanager
async def gzip_proxy(upstream: str, *, flush: bool) -> AsyncIterator[tuple[str, GzipStats]]:
    """Serve ``upstream`` (``http://host:port``) gzip-encoded; yield the proxy's URL and stats."""
    stats = GzipStats()
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
            url = upstream + request.path_qs
            async with session.request(request.method, url, data=body, headers=headers) as up:
                response = web.StreamResponse(status=up.status)
                response.headers["Content-Type"] = up.headers.get("Content-Type", "")
                response.headers["Content-Encoding"] = "gzip"
                await response.prepare(request)
                compressor = zlib.compressobj(wbits=31)  # 31: the gzip container
                async for piece in up.content.iter_any():
                    stats.raw += len(piece)
                    out = compressor.compress(piece)
                    if flush:
                        out += compressor.flush(zlib.Z_SYNC_FLUSH)
                    stats.compressed += len(out)
                    await response.write(out)
                tail = compressor.flush()
                stats.compressed += len(tail)
                await response.write(tail)
                await response.write_eof()
            return response

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            yield f"http://127.0.0.1:{runner.addresses[0][1]}", stats
        finally:
            await runner.cleanup()
