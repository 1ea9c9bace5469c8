"""Section 1, in process (no HTTP): µs per chunk and per call of each way to call a model.

chatstream's `Streamer` against langchain-core's `LangChainStreamer` (the same chunks), with a
bare async generator of the same pydantic chunks as the floor. chatstream with SQLite tracing
on is measured too; its writer thread's work after the stream ends is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from functools import partial
from typing import TYPE_CHECKING

from ._measure import FLOOR, Group, Sample, interleave_async, interleave_sync, wall_group
from ._models import Streamer, drain_floor, keep_floor

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator

SECTION = "in-process"
CHATSTREAM = "chatstream"
LANGCHAIN = "langchain-core"
FLOOR_KEEP = "floor, keeping chunks"
TRACED = "chatstream, tracing on"
ASTREAM = "chatstream astream, same rounds"
"""In the sync table: `astream` on the caller's own loop, run in turn with the sync calls, so
the sync/async ratio compares runs of the same minutes (this machine's speed drifts)."""
RUN_BUDGET = 20.0
"""Seconds one run may take; a contender expected to take longer at the next N is not run."""
BUDGET = 30.0
"""Seconds of runs per contender and measure, after which it is not repeated."""


async def _drain(stream: AsyncIterable[object]) -> None:
    async for _ in stream:
        pass


def _drain_sync(stream: Iterable[object]) -> None:
    for _ in stream:
        pass


async def _times(call: Callable[[], Awaitable[object]], calls: int) -> None:
    for _ in range(calls):
        await call()


def _times_sync(call: Callable[[], object], calls: int) -> None:
    for _ in range(calls):
        call()


@contextlib.contextmanager
def _trace_db() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        yield os.path.join(folder, "bench.db")


async def _traced(call: Callable[[], Awaitable[object]], db: str) -> None:
    # As CHATSTREAM_TRACING=true would.
    os.environ["CHATSTREAM_TRACING"], os.environ["CHATSTREAM_TRACE_DB"] = "true", db
    try:
        await call()
    finally:
        del os.environ["CHATSTREAM_TRACING"], os.environ["CHATSTREAM_TRACE_DB"]


async def _flush_traces() -> None:
    # Untimed: the writer batches (it sleeps before writing), so waiting for it would time that
    # sleep; not waiting would let its work land in the next contender's sample.
    from chatstream.tracing import flush

    await asyncio.to_thread(flush, 60)


def _async_measures(n: int) -> dict[str, dict[str, Callable[[], Awaitable[object]]]]:
    from ._lc_model import LangChainStreamer

    ours, theirs = Streamer(n=n), LangChainStreamer(n=n)

    def astream() -> Awaitable[None]:
        return _drain(ours.astream("q"))

    return {
        "astream": {
            FLOOR: partial(drain_floor, n),
            FLOOR_KEEP: partial(keep_floor, n),
            CHATSTREAM: astream,
            LANGCHAIN: lambda: _drain(theirs.astream("q")),
            TRACED: astream,  # with tracing switched on around the sample: see `_sampled`
        },
        "ainvoke": {
            FLOOR: partial(drain_floor, n),
            CHATSTREAM: partial(ours.ainvoke, "q"),
            LANGCHAIN: partial(theirs.ainvoke, "q"),
        },
        "astream_log": {
            FLOOR: partial(drain_floor, n),
            CHATSTREAM: lambda: _drain(ours.astream_log("q")),
            LANGCHAIN: lambda: _drain(theirs.astream_log("q")),
        },
    }


def _sync_measures(n: int, loop: asyncio.AbstractEventLoop) -> dict[str, Callable[[], object]]:
    from ._lc_model import LangChainStreamer

    ours, theirs = Streamer(n=n), LangChainStreamer(n=n)
    return {
        FLOOR: lambda: loop.run_until_complete(drain_floor(n)),
        CHATSTREAM: lambda: _drain_sync(ours.stream("q")),
        ASTREAM: lambda: loop.run_until_complete(_drain(ours.astream("q"))),
        LANGCHAIN: lambda: _drain_sync(theirs.stream("q")),
    }


def _sampled(
    name: str, call: Callable[[], Awaitable[object]], calls: int, db: str
) -> Callable[[], Awaitable[object]]:
    repeated = partial(_times, call, calls)
    return partial(_traced, repeated, db) if name == TRACED else repeated


def _measure_all(
    n: int, calls: int, repeats: int, skip: dict[str, set[str]], *, warmup: bool = True
) -> dict[str, dict[str, list[Sample]]]:
    """Samples by measure, then contender, of ``calls`` calls of ``n``-chunk streams each."""
    results: dict[str, dict[str, list[Sample]]] = {}
    with _trace_db() as db:

        async def run_async() -> None:
            for measure, contenders in _async_measures(n).items():
                chosen = {
                    name: _sampled(name, call, calls, db)
                    for name, call in contenders.items()
                    if name not in skip.get(measure, ())
                }
                settle = {TRACED: _flush_traces} if TRACED in chosen else {}
                results[measure] = await interleave_async(
                    chosen, repeats, warmup=warmup, budget=BUDGET, settle=settle
                )

        asyncio.run(run_async())
    loop = asyncio.new_event_loop()
    try:
        # The sync bridge costs a thread hop per call: a tenth of the calls keep it quick.
        sync_calls = max(calls // 10, 1)
        chosen = {
            name: partial(_times_sync, call, sync_calls)
            for name, call in _sync_measures(n, loop).items()
            if name not in skip.get("sync stream", ())
        }
        results["sync stream"] = {
            name: [Sample(s.wall * calls / sync_calls, s.cpu * calls / sync_calls) for s in runs]
            for name, runs in interleave_sync(chosen, repeats, warmup=warmup, budget=BUDGET).items()
        }
    finally:
        loop.close()
    return results


def per_chunk(
    n: int, repeats: int, skip: dict[str, set[str]] | None = None, *, warmup: bool = True
) -> dict[str, Group]:
    """µs per chunk of every measure for ``n``-chunk streams; ``skip`` leaves out contenders."""
    samples = _measure_all(n, 1, repeats, skip or {}, warmup=warmup)
    return {
        measure: wall_group(
            SECTION, f"{measure} µs/chunk, N={n:,}", runs, unit="µs/chunk", scale=1e6 / n
        )
        for measure, runs in samples.items()
    }


def per_call(calls: int, repeats: int) -> list[Group]:
    """Fixed µs per call: ``calls`` 1-chunk streams per sample."""
    samples = _measure_all(1, calls, repeats, {})
    return [
        wall_group(SECTION, f"{measure} µs/call (1 chunk)", runs, unit="µs/call", scale=1e6 / calls)
        for measure, runs in samples.items()
    ]


def _too_slow(groups: dict[str, Group], n: int) -> dict[str, dict[str, float]]:
    """Contenders whose run at ``n`` chunks would pass `RUN_BUDGET`, by measure: seconds each."""
    return {
        measure: {
            name: seconds
            for name in group.values
            if (seconds := group.median(name) * n / 1e6) > RUN_BUDGET
        }
        for measure, group in groups.items()
    }


def run(quick: bool) -> list[Group]:
    """The whole section: per chunk at each N (smallest first), then per call."""
    from ._lc_model import quiet_deprecations

    quiet_deprecations()
    sizes = [1_000] if quick else [1_000, 10_000, 100_000]
    groups: list[Group] = []
    slow: dict[str, dict[str, float]] = {}
    for index, n in enumerate(sizes):
        repeats = 3 if quick or n >= 100_000 else 7
        skip = {measure: set(names) for measure, names in slow.items()}
        # One warm-up, at the smallest N, warms every code path the larger ones take.
        by_measure = per_chunk(n, repeats, skip, warmup=index == 0)
        for measure, names in slow.items():
            for name, seconds in names.items():
                by_measure[measure].note += (
                    f"{name} not run: ~{seconds:.0f} s per run expected from the smaller N "
                    f"(budget {RUN_BUDGET:.0f} s). "
                )
        groups += by_measure.values()
        if index + 1 < len(sizes):
            slow = _too_slow(by_measure, sizes[index + 1])
    groups += per_call(200 if quick else 1_000, 3 if quick else 7)
    return groups
