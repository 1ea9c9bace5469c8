"""Connection faults and disconnect counting: one contract for the Anthropic and Ollama servers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import pytest

from chatstream.testing.anthropic_server import AnthropicServer
from chatstream.testing.ollama_server import OllamaServer
from chatstream.testing.openai_server import Faults, ScriptedReply

if TYPE_CHECKING:
    from chatstream.testing._base import LocalServer

USER = [{"role": "user", "content": "Say hi"}]
HI = ScriptedReply(text_chunks=["Hi", " thére"])


@dataclass(frozen=True)
class Target:
    """How to reach one server's streaming endpoint and where its events end."""

    server: type[AnthropicServer] | type[OllamaServer]
    path: str
    payload: dict[str, Any]
    end: bytes
    headers: dict[str, str] = field(default_factory=dict)

    async def open(
        self, session: aiohttp.ClientSession, server: LocalServer, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        url = server.base_url + self.path
        return await session.post(url, json=self.payload, headers=self.headers, **kwargs)


TARGETS = {
    "anthropic": Target(
        AnthropicServer,
        "/v1/messages",
        {"model": "claude-test", "max_tokens": 64, "messages": USER, "stream": True},
        b"\n\n",
        {"anthropic-version": "2023-06-01"},
    ),
    "ollama": Target(OllamaServer, "/api/chat", {"model": "llama3.2", "messages": USER}, b"\n"),
}


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest) -> Target:
    return TARGETS[request.param]


async def collect(resp: aiohttp.ClientResponse, into: list[bytes]) -> None:
    """Read a body piece by piece, keeping what arrived even if reading fails."""
    async for piece in resp.content.iter_any():
        into.append(piece)


async def test_disconnect_after_is_a_payload_error(
    session: aiohttp.ClientSession, target: Target
) -> None:
    pieces: list[bytes] = []
    async with target.server([HI], Faults(disconnect_after=2)) as server:
        async with await target.open(session, server) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await collect(resp, pieces)
    received = b"".join(pieces)
    assert received.count(target.end) == 2
    assert not received.endswith(target.end)
    # A drop the server initiated is not a client disconnect.
    assert server.disconnects == 0


async def test_stall_then_client_close_counts_a_disconnect(
    session: aiohttp.ClientSession, target: Target
) -> None:
    async with target.server([HI], Faults(stall_after=2)) as server:
        resp = await target.open(session, server)
        received = b""
        while received.count(target.end) < 2:
            received += await resp.content.readany()
        with anyio.move_on_after(0.1):
            received += await resp.content.readany()
        assert received.count(target.end) == 2
        assert (server.active_streams, server.disconnects) == (1, 0)
        resp.close()
        await server.wait_for_disconnects(1)
        assert (server.active_streams, server.disconnects) == (0, 1)


async def test_client_leaving_mid_stream_counts_a_disconnect(
    session: aiohttp.ClientSession, target: Target
) -> None:
    reply = ScriptedReply(text_chunks=["tick"] * 200)
    async with target.server([reply], Faults(chunk_delay=0.01)) as server:
        async with await target.open(session, server) as resp:
            await resp.content.readuntil(target.end)
            # chunk_delay keeps the rest of the stream pending.
            assert server.active_streams == 1
        await server.wait_for_disconnects(1)
    assert server.active_streams == 0


async def test_completed_stream_is_not_a_disconnect(
    session: aiohttp.ClientSession, target: Target
) -> None:
    async with target.server([HI]) as server:
        async with await target.open(session, server) as resp:
            await resp.read()
        with pytest.raises(TimeoutError):
            await server.wait_for_disconnects(1, timeout=0.05)
    assert server.disconnects == 0


async def test_first_byte_delay_holds_the_headers(
    session: aiohttp.ClientSession, target: Target
) -> None:
    async with target.server([HI], Faults(first_byte_delay=30)) as server:
        timeout = aiohttp.ClientTimeout(sock_read=0.05)
        with pytest.raises(aiohttp.ServerTimeoutError):
            await target.open(session, server, timeout=timeout)
        await server.wait_for_requests(1)


def raw_request(server: LocalServer, target: Target) -> bytes:
    body = json.dumps(target.payload).encode()
    head = [
        f"POST {target.path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in target.headers.items()),
    ]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


def header_lines(response: bytes) -> list[bytes]:
    return response.partition(b"\r\n\r\n")[0].split(b"\r\n")


async def test_close_after_stream_closes_a_connection_that_said_keep_alive(
    target: Target,
) -> None:
    received = b""
    async with target.server([HI]) as server:
        server.close_after_stream = True
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            await stream.send(raw_request(server, target))
            with anyio.fail_after(5):  # a connection kept alive would never end
                while True:
                    try:
                        received += await stream.receive()
                    except anyio.EndOfStream:
                        break
    lines = header_lines(received)
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert b"Connection: keep-alive" in lines
    assert b"Transfer-Encoding: chunked" in lines
    # The response is complete (the last chunk came), and only then did the socket close.
    assert received.endswith(b"\r\n0\r\n\r\n")
    assert server.disconnects == 0


async def test_close_after_stream_spares_error_responses(target: Target) -> None:
    async with target.server([HI], Faults(http_error=500)) as server:
        server.close_after_stream = True
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            answers: list[bytes] = []
            for _ in range(2):  # both over one connection: the first left it open
                await stream.send(raw_request(server, target))
                received = b""
                with anyio.fail_after(5):
                    while b"\r\n\r\n" not in received:
                        received += await stream.receive()
                    length = next(
                        int(line.split(b":")[1])
                        for line in header_lines(received)
                        if line.lower().startswith(b"content-length:")
                    )
                    while len(received.partition(b"\r\n\r\n")[2]) < length:
                        received += await stream.receive()
                answers.append(header_lines(received)[0])
    assert answers == [b"HTTP/1.1 500 Internal Server Error"] * 2
    assert len(server.requests) == 2
