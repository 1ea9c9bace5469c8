"""Connection faults and disconnect counting: one contract for the Anthropic and Ollama servers."""

from __future__ import annotations

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
