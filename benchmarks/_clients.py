"""The HTTP contenders: each opens its client for one base URL and returns a ``consume`` call.

``consume(n, first)`` asks for an ``n``-chunk answer (as ``max_tokens``), streams it, counts
its content chunks, and appends the time of the first one to ``first`` (for time to first
chunk). Every client gets the same connection limit.
The peers are imported here, lazily, with `importlib`: they are installed only in the bench
environment, never in the project's.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import time
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

    from chatstream._json import Decoder

    Consume = Callable[[int, list[float] | None], Awaitable[int]]

T = TypeVar("T")

FLOOR = "floor"
CHATSTREAM = "chatstream astream"
CHATSTREAM_LOG = "chatstream astream_log"
CHATSTREAM_FAST = "chatstream astream, msgspec"
"""`CHATSTREAM` with the ``fast`` extra decoding (the others decode with the stdlib)."""
OPENAI = "openai AsyncOpenAI"
LANGCHAIN = "langchain-openai astream"
LANGCHAIN_LOG = "langchain-openai astream_log"
_FAST = (CHATSTREAM_FAST,) if importlib.util.find_spec("msgspec") else ()
CLIENTS = (FLOOR, CHATSTREAM, CHATSTREAM_LOG, *_FAST, OPENAI, LANGCHAIN, LANGCHAIN_LOG)
"""Every HTTP contender, floor first; the msgspec one when the ``fast`` extra is installed."""

MODEL = "bench"
MESSAGES = [{"role": "user", "content": "Hi"}]
STREAMING = {"stream": True, "stream_options": {"include_usage": True}}
"""Every client streams and asks for usage (chatstream and langchain-openai are set to)."""
BODY = {"model": MODEL, "messages": MESSAGES, **STREAMING}
"""What the floor sends."""


async def _count(
    items: AsyncIterable[T], has_content: Callable[[T], Any], first: list[float] | None
) -> int:
    count = 0
    async for item in items:
        if has_content(item):
            if not count and first is not None:
                first.append(time.perf_counter())
            count += 1
    return count


def _chunk_content(chunk: Any) -> Any:
    return chunk.content


def _patch_content(patch: Any) -> bool:
    # Both libraries' run-log patches add each chunk at /streamed_output/-.
    for op in patch.ops:
        if op["path"] == "/streamed_output/-" and op["value"].content:
            return True
    return False


def _openai_content(chunk: Any) -> Any:
    return chunk.choices and chunk.choices[0].delta.content


def _model_consume(model: Any, *, run_log: bool) -> Consume:
    # chatstream's and langchain's chat models are called alike: astream or astream_log.
    if run_log:
        return lambda n, first: _count(model.astream_log("Hi", max_tokens=n), _patch_content, first)
    return lambda n, first: _count(model.astream("Hi", max_tokens=n), _chunk_content, first)


def _decoding(decoder: Decoder, consume: Consume) -> Consume:
    # The decoder is one per process and the contenders take turns in one: each chatstream
    # stream says which it runs with (the default would be msgspec wherever it is installed).
    from chatstream import _json

    def decoded(n: int, first: list[float] | None) -> Awaitable[int]:
        _json.set_decoder(decoder)
        return consume(n, first)

    return decoded


def _floor(session: Any, url: str) -> Consume:
    async def consume(n: int, first: list[float] | None) -> int:
        # Raw aiohttp: split events on blank lines, json.loads each data line.
        count = 0
        buffer = b""
        async with session.post(url, json={**BODY, "max_tokens": n}) as response:
            async for data in response.content.iter_any():
                buffer += data
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    if event.startswith(b"data: ") and event[6:] != b"[DONE]":
                        choices = json.loads(event[6:])["choices"]
                        if choices and choices[0]["delta"].get("content"):
                            if not count and first is not None:
                                first.append(time.perf_counter())
                            count += 1
        return count

    return consume


@contextlib.asynccontextmanager
async def open_client(name: str, base_url: str, limit: int) -> AsyncIterator[Consume]:
    """The ``consume`` call of client ``name`` (one of `CLIENTS`) for the server at ``base_url``."""
    async with contextlib.AsyncExitStack() as stack:
        if name == FLOOR:
            aiohttp = importlib.import_module("aiohttp")
            connector = aiohttp.TCPConnector(limit=limit)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            yield _floor(session, base_url + "/chat/completions")
        elif name in (CHATSTREAM, CHATSTREAM_LOG, CHATSTREAM_FAST):
            from chatstream.providers.openai import ChatOpenAI

            model = ChatOpenAI(
                base_url=base_url, api_key="bench", model=MODEL, max_connections=limit
            )
            stack.push_async_callback(model.aclose)
            consume = _model_consume(model, run_log=name == CHATSTREAM_LOG)
            yield _decoding("msgspec" if name == CHATSTREAM_FAST else "stdlib", consume)
        elif name == OPENAI:
            client = _openai_client(base_url, limit)
            stack.push_async_callback(client.close)

            async def consume(n: int, first: list[float] | None) -> int:
                create = client.chat.completions.create
                stream = await create(model=MODEL, messages=MESSAGES, max_tokens=n, **STREAMING)
                async with stream:
                    return await _count(stream, _openai_content, first)

            yield consume
        elif name in (LANGCHAIN, LANGCHAIN_LOG):
            from ._lc_model import quiet_deprecations

            quiet_deprecations()
            http = _httpx_client(limit)
            stack.push_async_callback(http.aclose)
            chat = importlib.import_module("langchain_openai").ChatOpenAI(
                model=MODEL,
                base_url=base_url,
                api_key="bench",
                http_async_client=http,
                stream_usage=True,
            )
            yield _model_consume(chat, run_log=name == LANGCHAIN_LOG)
        else:
            raise ValueError(f"unknown client {name!r}; expected one of {CLIENTS}")


def _httpx_client(limit: int) -> Any:
    # The openai SDK's own client class (its defaults), with the same pool size as the others.
    # openai 3 is built on httpx2, earlier releases on httpx.
    openai = importlib.import_module("openai")
    httpx = importlib.import_module("httpx2" if importlib.util.find_spec("httpx2") else "httpx")
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    return openai.DefaultAsyncHttpxClient(limits=limits)


def _openai_client(base_url: str, limit: int) -> Any:
    openai = importlib.import_module("openai")
    return openai.AsyncOpenAI(base_url=base_url, api_key="bench", http_client=_httpx_client(limit))
