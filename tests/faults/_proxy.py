"""`FaultProxy`: a TCP proxy in front of a local server that breaks the response bytes.

The servers' own faults act on events; this one acts on the bytes of the HTTP response as
they cross the wire (status line, headers and chunked framing included), so it works the same
for every provider: cut at a marker and then stall, close (FIN) or reset (RST, ``SO_LINGER``
0); write one byte at a time; swap bytes for invalid UTF-8. It counts the connections it
accepted and closed, which is the server side's count of open connections.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import TYPE_CHECKING, Literal

import anyio

if TYPE_CHECKING:
    from types import TracebackType

    from chatstream._compat import Self

Action = Literal["stall", "fin", "rst"]

_READ = 65536
_RST_GRACE = 0.05
"""Seconds between the last byte and the reset: loopback delivers at once, the reader may not
have read yet, and a reset discards what the peer has not read (that is a different test)."""


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream``, breaking responses as configured.

    Args:
        upstream: The port of the real server.
        cut: Break each response in the middle of the first occurrence of these bytes: the
            bytes before the marker and its first byte are sent, then ``action`` happens.
        action: What happens at the cut: ``stall`` (send nothing more, keep the connection
            until the client leaves), ``fin`` (close) or ``rst`` (reset).
        write_size: Send the response in writes of this many bytes (``1``: byte by byte).
        replace: Replace every occurrence of the first bytes by the second (same length, so
            the chunked framing stays right).
    """

    def __init__(
        self,
        upstream: int,
        *,
        cut: bytes | None = None,
        action: Action = "fin",
        write_size: int | None = None,
        replace: tuple[bytes, bytes] | None = None,
    ) -> None:
        if replace is not None and len(replace[0]) != len(replace[1]):
            raise ValueError("replace must keep the length, or the chunk sizes would lie")
        self.upstream = upstream
        self.cut = cut
        self.action: Action = action
        self.write_size = write_size
        self.replace = replace
        self.accepted = 0
        """Client connections accepted."""
        self.closed = 0
        """Client connections closed again (by either side)."""
        self.cuts = 0
        """Responses broken at ``cut``."""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def open_connections(self) -> int:
        """Client connections open right now."""
        return self.accepted - self.closed

    @property
    def port(self) -> int:
        """The port clients connect to."""
        if self._server is None:
            raise RuntimeError("the proxy is not running; use it as `async with`")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await server.wait_closed()
            while self.open_connections:  # the handlers see the aborts on their next turn
                await anyio.sleep(0.005)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        # One segment per write, so write_size=1 really puts one byte in each segment.
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            try:
                async with anyio.create_task_group() as group:

                    async def requests() -> None:
                        await _pump(reader, up_writer)
                        group.cancel_scope.cancel()  # the client left

                    group.start_soon(requests)
                    await self._responses(up_reader, writer)
                    group.cancel_scope.cancel()
            finally:
                up_writer.transport.abort()
        except OSError:
            pass  # a peer went away mid-copy: the connection is over either way
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.transport.close()
            self.closed += 1

    async def _responses(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A tail that could begin a marker is held back and put before the next read, so that
        # a marker split across two reads is still found whole.
        keep = max(len(self.cut or b""), len(self.replace[0] if self.replace else b"")) - 1
        held = b""
        while data := await reader.read(_READ):
            data = held + data
            held, data = (data[-keep:], data[:-keep]) if keep > 0 else (b"", data)
            if self.replace is not None:
                data = data.replace(*self.replace)
            at = -1 if self.cut is None else data.find(self.cut)
            if at >= 0:
                await self._write(writer, data[: at + 1])
                await self._break(writer)
                return
            await self._write(writer, data)
        await self._write(writer, held)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        size = self.write_size or len(data) or 1
        for start in range(0, len(data), size):
            writer.write(data[start : start + size])
            await writer.drain()
            if self.write_size is not None:
                await asyncio.sleep(0)  # let the client read this piece on its own

    async def _break(self, writer: asyncio.StreamWriter) -> None:
        self.cuts += 1
        if self.action == "stall":
            await anyio.sleep_forever()  # until the client leaves (the request pump sees it)
        elif self.action == "fin":
            writer.transport.close()
        else:
            await anyio.sleep(_RST_GRACE)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # close() with linger 0: an RST, no FIN


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(_READ):
        writer.write(data)
        await writer.drain()
