"""Sections 2 and 3, over HTTP: µs and client CPU per chunk, and time to first chunk.

Every client runs in this process against `_server` (another process), interleaved; the CPU
figure is this process's ``time.process_time`` over the run, so it counts only client work.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from functools import partial
from typing import TYPE_CHECKING

from ._clients import CHATSTREAM, CHATSTREAM_LOG, CLIENTS, FLOOR, open_client
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
WARM_CALLS = 20
"""Back-to-back calls per run in the warm time-to-first-chunk measure."""
LONGEST_FOR_ALL = 10_000
"""The longest stream every client runs; longer ones only the floor and chatstream."""
OURS = (FLOOR, CHATSTREAM, CHATSTREAM_LOG)


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


async def _first_chunks(name: str, consume: Consume, calls: int, into: list[float]) -> None:
    times: list[float] = []
    for _ in range(calls):
        await _first_chunk(name, consume, times)
    into.append(statistics.median(times))


async def time_to_first_chunk(consumes: dict[str, Consume], runs: int) -> list[Group]:
    """µs from the call to the first content chunk of a 1-chunk stream, two ways.

    Once per run, right after the run's ``gc.collect()`` (every cache cold: this favours the
    client that touches least memory), and as the median of `WARM_CALLS` back-to-back calls
    per run (a busy server's steady state).
    """
    await warm(consumes)
    cold: dict[str, list[float]] = {name: [] for name in consumes}
    calls = {name: partial(_first_chunk, name, c, cold[name]) for name, c in consumes.items()}
    await interleave_async(calls, runs, warmup=False)
    warm_values: dict[str, list[float]] = {name: [] for name in consumes}
    back_to_back = {
        name: partial(_first_chunks, name, c, WARM_CALLS, warm_values[name])
        for name, c in consumes.items()
    }
    await interleave_async(back_to_back, max(runs // 5, 3), warmup=False, budget=BUDGET)
    return [
        Group(SECTION_TTFT, "TTFT µs, 1-chunk stream, a call after a full collection", "µs", cold),
        Group(
            SECTION_TTFT,
            f"TTFT µs, 1-chunk stream, median of {WARM_CALLS} back-to-back calls",
            "µs",
            warm_values,
        ),
    ]


def run(port: int, quick: bool) -> list[Group]:
    """Both sections against the server on ``port``.

    Event writes at 10,000 chunks; bulk writes at 1,000, 10,000 and 100,000, to show whether
    the cost per chunk grows with the stream (the peers sit out 100,000: minutes per run).
    """
    sizes, repeats, ttft_runs = ((1_000,), 2, 20) if quick else ((1_000, 10_000, 100_000), 5, 50)
    event_size = sizes[min(1, len(sizes) - 1)]

    async def main() -> list[Group]:
        async with open_all(base_url(port, "event")) as consumes:
            groups = await per_chunk(consumes, event_size, "event", repeats)
            ttft = await time_to_first_chunk(consumes, ttft_runs)
        for n in sizes:
            names = CLIENTS if n <= LONGEST_FOR_ALL else OURS
            async with open_all(base_url(port, "bulk"), names) as consumes:
                groups += await per_chunk(consumes, n, "bulk", repeats)
        return [*groups, *ttft]

    return asyncio.run(main())
