"""Sections 2 and 3, over HTTP: µs and client CPU per chunk, and time to first chunk.

Every client runs in this process against `_server` (another process), interleaved; the CPU
figure is this process's ``time.process_time`` over the run, so it counts only client work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from functools import partial
from typing import TYPE_CHECKING

from ._clients import CLIENTS, open_client
from ._measure import Group, interleave_async, wall_group
from ._server import base_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from ._clients import Consume

SECTION = "http"
SECTION_TTFT = "ttft"
LIMIT = 256
"""Connections every client may open (the same for all)."""
BUDGET = 25.0
"""Seconds of runs per client and measure, after which it is not repeated (the slowest peers)."""


@contextlib.asynccontextmanager
async def open_all(
    url: str, names: Sequence[str] = CLIENTS, limit: int = LIMIT
) -> AsyncIterator[dict[str, Consume]]:
    """Every client's ``consume`` for the server root ``url``; closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(open_client(name, url, limit)) for name in names
        }


async def checked(name: str, consume: Consume, n: int, first: list[float] | None = None) -> None:
    """Stream ``n`` chunks with ``consume`` and check that it saw all of them."""
    got = await consume(n, first)
    if got != n:
        raise RuntimeError(f"{name} streamed {got} content chunks where {n} were sent")


async def warm(consumes: dict[str, Consume]) -> None:
    """One short stream per client, untimed: connections open, code paths warm."""
    for name, consume in consumes.items():
        await checked(name, consume, 1)


async def per_chunk(consumes: dict[str, Consume], n: int, mode: str, repeats: int) -> list[Group]:
    """µs and client CPU µs per chunk of an ``n``-chunk stream sent in ``mode`` writes."""
    await warm(consumes)
    calls = {name: partial(checked, name, consume, n) for name, consume in consumes.items()}
    samples = await interleave_async(calls, repeats, warmup=False, budget=BUDGET)
    label = f"{n:,} chunks, {mode} writes"
    scale = 1e6 / n
    return [
        wall_group(SECTION, f"µs/chunk, {label}", samples, unit="µs/chunk", scale=scale),
        wall_group(
            SECTION,
            f"client CPU µs/chunk, {label}",
            samples,
            unit="µs/chunk",
            scale=scale,
            cpu=True,
        ),
    ]


async def _first_chunk(name: str, consume: Consume, into: list[float]) -> None:
    first: list[float] = []
    start = time.perf_counter()
    await checked(name, consume, 1, first)
    into.append((first[0] - start) * 1e6)


async def time_to_first_chunk(consumes: dict[str, Consume], runs: int) -> Group:
    """µs from the call to the first content chunk of a 1-chunk stream, ``runs`` times each."""
    await warm(consumes)
    values: dict[str, list[float]] = {name: [] for name in consumes}
    calls = {name: partial(_first_chunk, name, c, values[name]) for name, c in consumes.items()}
    await interleave_async(calls, runs, warmup=False)
    return Group(SECTION_TTFT, "TTFT µs, 1-chunk stream", "µs", values)


def run(port: int, quick: bool) -> list[Group]:
    """Both sections against the server on ``port``."""
    n, repeats, ttft_runs = (1_000, 2, 20) if quick else (10_000, 5, 50)

    async def main() -> list[Group]:
        groups = []
        for mode in ("event", "bulk"):
            async with open_all(base_url(port, mode)) as consumes:
                groups += await per_chunk(consumes, n, mode, repeats)
                if mode == "event":
                    ttft = await time_to_first_chunk(consumes, ttft_runs)
        return [*groups, ttft]

    return asyncio.run(main())
