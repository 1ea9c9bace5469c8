"""Sections 10 to 12, in process: what structured output, a cache hit and a rate limiter cost.

10: ``with_structured_output(..., method="json_mode" | "json_schema").astream`` of a JSON
object streamed in N chunks by `FakeChatModel`, against plain ``astream`` of the same chunks.
11: replaying an N-chunk stream from a `MemoryCache`, against a live ``astream`` and the bare
async generator (the floor). 12: ``ainvoke`` of a 1-chunk model with a `RateLimiter` whose
budgets never make it wait, against the same model without one.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING

from pydantic import BaseModel

from ._measure import FLOOR, Group, interleave_async, wall_group
from ._models import Streamer, drain_floor

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable

    Call = Callable[[], Awaitable[object]]

SECTION_STRUCTURED = "structured"
SECTION_CACHE = "cache"
SECTION_LIMITER = "ratelimit"
PLAIN = "astream (plain)"
JSON_MODE = "structured json_mode"
JSON_SCHEMA = "structured json_schema"
LIVE = "chatstream astream, live"
HIT = "chatstream astream, cache hit"
INVOKE = "chatstream ainvoke"
LIMITED = "ainvoke, RateLimiter(requests)"
LIMITED_BOTH = "ainvoke, RateLimiter(requests + tokens)"
NEVER_WAITS = 1e12
"""A budget per minute no benchmark can spend: the limiter is consulted but never waits."""
BUDGET = 20.0
"""Seconds of runs per contender and measure, after which it is not repeated."""


class Item(BaseModel):
    """One element of the streamed object."""

    id: int
    name: str


class Answer(BaseModel):
    """The schema the structured contenders validate against."""

    title: str
    items: list[Item]


def json_pieces(n: int) -> list[str]:
    """An `Answer` as JSON text cut into ``n`` pieces of (nearly) equal length."""
    items = [{"id": i, "name": f"item number {i}"} for i in range(max(n // 4, 1))]
    text = json.dumps({"title": "a streamed object", "items": items})
    size = len(text) / n
    return [text[round(i * size) : round((i + 1) * size)] for i in range(n)]


async def _drain(stream: AsyncIterable[object]) -> None:
    async for _ in stream:
        pass


async def _drain_closing(stream: AsyncGenerator[object, None]) -> None:
    async with aclosing(stream) as closing:
        async for _ in closing:
            pass


async def _times(call: Call, calls: int) -> None:
    for _ in range(calls):
        await call()


def _structured(n: int) -> dict[str, Call]:
    from chatstream.providers.fake import FakeChatModel, FakeResponse

    model = FakeChatModel(responses=[FakeResponse(chunks=json_pieces(n))])
    json_mode = model.with_structured_output(Answer, method="json_mode")
    json_schema = model.with_structured_output(Answer, method="json_schema")
    return {
        PLAIN: lambda: _drain(model.astream("q")),
        JSON_MODE: lambda: _drain_closing(json_mode.astream("q")),
        JSON_SCHEMA: lambda: _drain_closing(json_schema.astream("q")),
    }


async def _primed(n: int) -> dict[str, Call]:
    from chatstream.cache import MemoryCache

    live, cached = Streamer(n=n, cache=False), Streamer(n=n, cache=MemoryCache())
    await cached.ainvoke("q")  # recorded: every timed call is a hit
    return {
        FLOOR: partial(drain_floor, n),
        LIVE: lambda: _drain(live.astream("q")),
        HIT: lambda: _drain(cached.astream("q")),
    }


def _limited() -> dict[str, Call]:
    from chatstream.ratelimit import RateLimiter

    requests = RateLimiter(requests_per_minute=NEVER_WAITS)
    both = RateLimiter(requests_per_minute=NEVER_WAITS, tokens_per_minute=NEVER_WAITS)
    plain, limited = Streamer(n=1), Streamer(n=1, rate_limiter=requests)
    limited_both = Streamer(n=1, rate_limiter=both)
    return {
        INVOKE: partial(plain.ainvoke, "q"),
        LIMITED: partial(limited.ainvoke, "q"),
        LIMITED_BOTH: partial(limited_both.ainvoke, "q"),
    }


async def _per_chunk(
    section: str, measure: str, n: int, contenders: dict[str, Call], repeats: int, floor: str
) -> Group:
    samples = await interleave_async(contenders, repeats, budget=BUDGET)
    group = wall_group(
        section, f"{measure} µs/chunk, N={n:,}", samples, unit="µs/chunk", scale=1e6 / n
    )
    group.floor = floor
    return group


async def _per_call(
    section: str, measure: str, contenders: dict[str, Call], calls: int, repeats: int, floor: str
) -> Group:
    repeated = {name: partial(_times, call, calls) for name, call in contenders.items()}
    samples = await interleave_async(repeated, repeats, budget=BUDGET)
    group = wall_group(section, f"{measure} µs/call", samples, unit="µs/call", scale=1e6 / calls)
    group.floor = floor
    return group


def run(quick: bool) -> list[Group]:
    """All three sections, in one event loop."""
    # Per-call differences of a few µs need many calls per sample and many samples.
    repeats, calls = (7, 2_000) if quick else (11, 5_000)
    structured_sizes = [100, 300] if quick else [100, 1_000]
    cache_sizes = [1_000] if quick else [1_000, 10_000]

    async def main() -> list[Group]:
        groups = []
        for n in structured_sizes:
            contenders = _structured(n)
            groups.append(
                await _per_chunk(SECTION_STRUCTURED, "astream", n, contenders, repeats, PLAIN)
            )
        for n in cache_sizes:
            contenders = await _primed(n)
            groups.append(await _per_chunk(SECTION_CACHE, "astream", n, contenders, repeats, FLOOR))
        contenders = await _primed(1)
        groups.append(
            await _per_call(SECTION_CACHE, "astream (1 chunk)", contenders, calls, repeats, FLOOR)
        )
        groups.append(
            await _per_call(
                SECTION_LIMITER, "ainvoke (1 chunk)", _limited(), calls, repeats, INVOKE
            )
        )
        return groups

    return asyncio.run(main())
