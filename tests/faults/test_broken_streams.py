"""Streams that break or arrive strangely, over real sockets, for every provider.

Broken: a stall, a close (FIN) and a reset (RST) in the middle of an event, and before the
status line. Strange: one byte per TCP write (headers and chunk framing included), invalid
UTF-8, a 10 MB line, an HTML 502 page, and a gzip-encoded event stream. The byte-level faults
come from `FaultProxy`, in front of the provider's local server.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import anyio
import pytest

from chatstream.errors import (
    APIConnectionError,
    APITimeoutError,
    ServerError,
    StreamInterruptedError,
)
from chatstream.messages import AIMessageChunk
from chatstream.testing.openai_server import Faults, OpenAIServer, ScriptedReply

from ._gzip import gzip_proxy
from ._leaks import Baseline, server_connections
from ._providers import KEY, Provider, text_of
from ._proxy import Action, FaultProxy

SCISSORS = "\u2702"
"""The cut marker: its UTF-8 bytes appear nowhere else in a response (ids are ASCII), and the
cut falls inside the character, so the client is also left with half a UTF-8 sequence."""
CUT = ScriptedReply(text_chunks=["one ", "two ", "three ", SCISSORS, " five"])
BEFORE_CUT = "one two three "
MIXED = ScriptedReply(
    text_chunks=["caf", "\u00e9 ", "na\u00efve ", "\U0001f600", " \u4e2d\u6587", "!"]
)


def origin(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def through(proxy_base: str, server_base_url: str) -> str:
    """The server's base URL (path included) with the proxy's host and port."""
    return proxy_base + urlsplit(server_base_url).path


def provider_server() -> OpenAIServer:
    return OpenAIServer([CUT], api_key=KEY)


def raw_request(port: int) -> bytes:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    body = body[:-1] + ', "stream": true}'
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return (head + body).encode()


async def stream_all(model: object, into: list[AIMessageChunk]) -> None:
    assert hasattr(model, "astream")
    async for chunk in model.astream("Hi"):
        into.append(chunk)


@pytest.mark.parametrize(
    ("action", "error", "phrase"),
    [
        ("stall", APITimeoutError, "waiting for the next chunk"),
        ("fin", StreamInterruptedError, "broke"),
        ("rst", StreamInterruptedError, "broke"),
    ],
)
async def test_a_stream_cut_mid_event_raises_with_the_partial_output(
    provider: Provider, action: Action, error: type[Exception], phrase: str
) -> None:
    baseline = Baseline()
    async with provider.server([CUT]) as server:
        async with FaultProxy(server.port, cut=SCISSORS.encode(), action=action) as proxy:
            url = through(proxy.base, server.base_url)
            async with provider.model(url, max_retries=2, idle=0.3) as model:
                received: list[AIMessageChunk] = []
                with pytest.raises(error, match=phrase) as caught:
                    await stream_all(model, received)
                assert model.pool_stats().in_use == 0
            assert proxy.cuts == 1
            # The proxy's side of the client connection (it closes when the client has left).
            assert await baseline.settle(("proxy", lambda: proxy.open_connections)) == {}
        assert len(server.requests) == 1  # chunks had arrived: never sent again
        assert await baseline.settle(("server", lambda: server_connections(server))) == {}
    partial = getattr(caught.value, "partial", None)
    assert isinstance(partial, AIMessageChunk)
    assert partial.content == BEFORE_CUT == text_of(received)
    assert await baseline.settle() == {}


@pytest.mark.parametrize("action", ["fin", "rst"])
async def test_a_connection_cut_before_the_status_line_is_a_connection_error(
    provider: Provider, action: Action
) -> None:
    baseline = Baseline()
    async with provider.server([CUT]) as server:
        async with FaultProxy(server.port, cut=b"HTTP/1.1", action=action) as proxy:
            url = through(proxy.base, server.base_url)
            async with provider.model(url, max_retries=1) as model:
                with pytest.raises(APIConnectionError, match="could not get a response") as caught:
                    await model.ainvoke("Hi")
            assert proxy.accepted == proxy.cuts == 2  # max_retries + 1 attempts, no more
        assert len(server.requests) == 2
    assert not isinstance(caught.value, (APITimeoutError, StreamInterruptedError))
    assert getattr(caught.value, "partial", None) is None
    assert await baseline.settle() == {}


async def test_one_byte_per_write_gives_the_same_stream(provider: Provider) -> None:
    async with provider.server([MIXED]) as server:
        async with provider.model(server.base_url) as model:
            direct = [chunk async for chunk in model.astream("Hi")]
        async with FaultProxy(server.port, write_size=1) as proxy:
            async with provider.model(through(proxy.base, server.base_url)) as model:
                trickled = [chunk async for chunk in model.astream("Hi")]
    assert text_of(trickled) == text_of(direct) == MIXED.text
    assert [c.content for c in trickled] == [c.content for c in direct]
    assert trickled[-1].usage_metadata == direct[-1].usage_metadata


async def test_invalid_utf8_becomes_replacement_characters(provider: Provider) -> None:
    # "é" is C3 A9 on the wire; FF FE in its place is two bytes no UTF-8 sequence can hold.
    async with provider.server([MIXED]) as server:
        async with FaultProxy(server.port, replace=("\u00e9".encode(), b"\xff\xfe")) as proxy:
            async with provider.model(through(proxy.base, server.base_url)) as model:
                message = await model.ainvoke("Hi")
    assert message.content == MIXED.text.replace("\u00e9", "\ufffd\ufffd")
    assert message.response_metadata["finish_reason"] == "stop"


async def test_a_ten_megabyte_line_streams_whole(provider: Provider) -> None:
    big = "x" * 10_000_000
    async with provider.server([ScriptedReply(text_chunks=["<", big, ">"])]) as server:
        async with provider.model(server.base_url) as model:
            chunks = [chunk async for chunk in model.astream("Hi")]
    assert [len(str(c.content)) for c in chunks if c.content] == [1, 10_000_000, 1]
    assert text_of(chunks) == f"<{big}>"


async def test_an_html_502_page_is_a_server_error_after_the_retries(provider: Provider) -> None:
    # Bigger than the 64 KiB of an error body the client reads: the rest must not be waited for.
    page = "<html><head><title>502 Bad Gateway</title></head><body>" + "x" * 100_000
    page += "<center>nginx</center></body></html>"
    faults = Faults(http_error=502, error_body=page, headers={"retry-after-ms": "1"})
    baseline = Baseline()
    async with provider.server([CUT], faults) as server:
        async with provider.model(server.base_url, max_retries=2) as model:
            with pytest.raises(ServerError) as caught:
                await model.ainvoke("Hi")
            assert model.pool_stats().in_use == 0
        assert len(server.requests) == 3
        assert await baseline.settle(("server", lambda: server_connections(server))) == {}
    error = caught.value
    assert (error.status, error.message) == (502, "HTTP 502 Bad Gateway")
    assert error.body is not None
    assert error.body.startswith("<html><head><title>502 Bad Gateway")
    assert len(error.body) == 500


@pytest.mark.parametrize("flush", [True, False], ids=["flushed", "buffered"])
async def test_a_gzip_encoded_stream_decodes_to_the_same_chunks(
    provider: Provider, flush: bool
) -> None:
    slow = Faults(chunk_delay=0.02)
    async with provider.server([MIXED], slow) as server:
        async with provider.model(server.base_url) as model:
            direct = [chunk async for chunk in model.astream("Hi")]
        async with gzip_proxy(origin(server.base_url), flush=flush) as (base, stats):
            async with provider.model(through(base, server.base_url)) as model:
                zipped: list[AIMessageChunk] = []
                still_streaming: list[bool] = []
                async for chunk in model.astream("Hi"):
                    if chunk.content and not still_streaming:
                        still_streaming.append(server.active_streams == 1)
                    zipped.append(chunk)
    assert stats.compressed and stats.raw  # it did go through gzip
    assert text_of(zipped) == text_of(direct) == MIXED.text
    assert [c.content for c in zipped] == [c.content for c in direct]
    # Flushed gzip keeps the stream a stream: the first text came while the server was writing.
    assert still_streaming == ([True] if flush else [False])


@pytest.mark.parametrize(
    ("action", "ending"), [("fin", anyio.EndOfStream), ("rst", anyio.BrokenResourceError)]
)
async def test_the_proxy_really_closes_or_resets(action: Action, ending: type[Exception]) -> None:
    # aiohttp reports both as an incomplete payload, so check the wire with a raw socket: a
    # FIN reads as the end of the stream, an RST as a reset, each after every byte sent.
    async with provider_server() as server:
        async with FaultProxy(server.port, cut=SCISSORS.encode(), action=action) as proxy:
            async with await anyio.connect_tcp("127.0.0.1", proxy.port) as stream:
                await stream.send(raw_request(server.port))
                pieces: list[bytes] = []
                with anyio.fail_after(5), pytest.raises(ending):  # noqa: PT012 (reads to the end)
                    while True:
                        pieces.append(await stream.receive())
    received = b"".join(pieces)
    assert received.endswith(SCISSORS.encode()[:1])
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
