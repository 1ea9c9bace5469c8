"""Section 3b: what a call costs on top of its chunks, over HTTP.

- A fresh `ChatOpenAI` per call, never closed, as web handlers often write it, against one model
  reused for every call: at 10,000 chunks (bulk writes) and for back-to-back 20-chunk answers.
- Back-to-back calls against a server that closes the connection after every stream without
  saying so: chatstream against raw aiohttp opening a new connection per call (``force_close``),
  and against itself on a keep-alive server.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import TYPE_CHECKING

from ._clients import MODEL, _count, _floor
from ._measure import Group, interleave_async
from ._server import base_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from chatstream import AIMessageChunk
    from chatstream.providers.openai import ChatOpenAI

    from ._clients import Consume

SECTION = "calls"
LIMIT = 256
FLOOR = "floor"
ONE_MODEL = "chatstream, one model"
FRESH_MODEL = "chatstream, a fresh model per call"
NEW_CONNECTION = "floor, a new connection per call"
CLOSING = "chatstream, server closes after each stream"
KEEP_ALIVE = "chatstream, keep-alive server"
SHORT = 20
"""Chunks of each answer in the back-to-back measures."""


def _model(url: str) -> ChatOpenAI:
    from chatstream.providers.openai import ChatOpenAI

    return ChatOpenAI(base_url=url, api_key="bench", model=MODEL, max_connections=LIMIT)


def _consume(model: ChatOpenAI) -> Consume:
    return lambda n, first: _count(model.astream("Hi", max_tokens=n), _has_content, first)


def _has_content(chunk: AIMessageChunk) -> bool:
    return bool(chunk.content)


def _fresh(url: str) -> Consume:
    # Built inside the call and dropped after it, never closed: a web handler's way.
    return lambda n, first: _consume(_model(url))(n, first)


@contextlib.asynccontextmanager
async def _floor_client(url: str, *, force_close: bool = False) -> AsyncIterator[Consume]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=LIMIT, force_close=force_close)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield _floor(session, url + "/chat/completions")


async def _checked(consume: Consume, n: int, calls: int) -> None:
    for _ in range(calls):
        got = await consume(n, None)
        if got != n:
            raise RuntimeError(f"a benchmark client streamed {got} content chunks of {n}")


async def _measure(
    consumes: dict[str, Consume], n: int, calls: int, repeats: int
) -> dict[str, list[float]]:
    runs: dict[str, Callable[[], Awaitable[object]]] = {
        name: partial(_checked, consume, n, calls) for name, consume in consumes.items()
    }
    samples = await interleave_async(runs, repeats)
    return {name: [sample.wall for sample in taken] for name, taken in samples.items()}


async def _main(port: int, quick: bool) -> list[Group]:
    big, repeats, calls = (1_000, 3, 20) if quick else (10_000, 7, 50)
    bulk, closing = base_url(port, "bulk"), base_url(port, "close")
    one = _model(bulk)
    kept = _model(bulk)
    closed = _model(closing)
    try:
        async with (
            _floor_client(bulk) as floor,
            _floor_client(closing, force_close=True) as new_connection,
        ):
            per_model = {FLOOR: floor, ONE_MODEL: _consume(one), FRESH_MODEL: _fresh(bulk)}
            values = await _measure(per_model, big, 1, repeats)
            groups = [_scaled(f"µs/chunk, {big:,} chunks, bulk writes", "µs/chunk", values, big)]
            values = await _measure(per_model, SHORT, calls, repeats)
            label = f"µs/call, {calls} back-to-back {SHORT}-chunk answers"
            groups.append(_scaled(label, "µs/call", values, calls))
            per_connection = {
                NEW_CONNECTION: new_connection,
                CLOSING: _consume(closed),
                KEEP_ALIVE: _consume(kept),
            }
            values = await _measure(per_connection, SHORT, calls, repeats)
            label = f"µs/call, {calls} back-to-back {SHORT}-chunk answers, closing server"
            group = _scaled(label, "µs/call", values, calls)
            group.floor = NEW_CONNECTION
            groups.append(group)
    finally:
        for model in (one, kept, closed):
            await model.aclose()
    return groups


def _scaled(measure: str, unit: str, values: dict[str, list[float]], per: int) -> Group:
    return Group(
        SECTION, measure, unit, {name: [v * 1e6 / per for v in vs] for name, vs in values.items()}
    )


def run(port: int, quick: bool) -> list[Group]:
    """The three measures against the server on ``port``."""
    return asyncio.run(_main(port, quick))
