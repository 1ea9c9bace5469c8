"""In-process speed of the core: µs per chunk and per call, next to a bare-generator floor.

A run keeps every chunk (for its record, the merged answer and partial output on errors), so the
second floor keeps them too: at large N the garbage collector's cost of retained chunks shows there.
Run: python benchmarks/bench_core.py [--quick]. Prints a table; asserts nothing.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

import anyio

from chatstream import AIMessageChunk, BaseChatModel, BaseMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

PIECES = ["The", " purpose", " of", " model", " regularization", " is", " to", " generalize", "."]
FLOOR = "floor (bare generator)"
Row = tuple[str, str, float, float, float, str]


class Streamer(BaseChatModel):
    """Yields N chunks built exactly as the floor builds them."""

    n: int = 1000

    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        for i in range(self.n):
            yield AIMessageChunk(PIECES[i % len(PIECES)])


async def floor_stream(n: int) -> AsyncIterator[AIMessageChunk]:
    for i in range(n):
        yield AIMessageChunk(PIECES[i % len(PIECES)])


def timed(run: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Median, min and max seconds of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def in_loop(func: Callable[[], Awaitable[object]]) -> Callable[[], object]:
    return lambda: anyio.run(func)


def rows_for(label: str, measured: dict[str, tuple[float, float, float]], per: int) -> list[Row]:
    base = measured[FLOOR][0]
    rows = []
    for name, (med, low, high) in measured.items():
        note = "" if name == FLOOR else f"+{(med - base) / per * 1e6:.2f} over floor"
        rows.append((name, label, med / per * 1e6, low / per * 1e6, high / per * 1e6, note))
    return rows


def per_chunk(n: int, repeats: int) -> list[Row]:
    model = Streamer(n=n)

    async def floor() -> None:
        async for _ in floor_stream(n):
            pass

    async def floor_keep() -> None:
        kept = []
        async for chunk in floor_stream(n):
            kept.append(chunk)

    async def astream() -> None:
        async for _ in model.astream("q"):
            pass

    def sync_stream() -> None:
        for _ in model.stream("q"):
            pass

    async def astream_log() -> None:
        async for _ in model.astream_log("q"):
            pass

    measured = {
        FLOOR: timed(in_loop(floor), repeats),
        "floor, keeping chunks": timed(in_loop(floor_keep), repeats),
        "astream": timed(in_loop(astream), repeats),
        "ainvoke": timed(in_loop(lambda: model.ainvoke("q")), repeats),
        "sync stream": timed(sync_stream, repeats),
        "astream_log": timed(in_loop(astream_log), repeats),
    }
    with tracing_on():
        measured["astream, tracing on"] = timed(in_loop(astream), repeats)
    return rows_for(f"N={n}", measured, n)


def per_call(calls: int, repeats: int) -> list[Row]:
    one = Streamer(n=1)

    async def floor() -> None:
        for _ in range(calls):
            async for _ in floor_stream(1):
                pass

    async def astream() -> None:
        for _ in range(calls):
            async for _ in one.astream("q"):
                pass

    async def ainvoke() -> None:
        for _ in range(calls):
            await one.ainvoke("q")

    async def astream_log() -> None:
        for _ in range(calls):
            async for _ in one.astream_log("q"):
                pass

    def invoke() -> None:
        for _ in range(calls // 10):
            one.invoke("q")

    measured = {
        FLOOR: timed(in_loop(floor), repeats),
        "astream": timed(in_loop(astream), repeats),
        "ainvoke": timed(in_loop(ainvoke), repeats),
        "astream_log": timed(in_loop(astream_log), repeats),
    }
    with tracing_on():
        measured["astream, tracing on"] = timed(in_loop(astream), repeats)
    rows = rows_for("per call (1 chunk)", measured, calls)
    med, low, high = timed(invoke, repeats)
    scale = 1e6 / (calls // 10)
    rows.append(("sync invoke", "per call (1 chunk)", med * scale, low * scale, high * scale, ""))
    return rows


@contextlib.contextmanager
def tracing_on() -> Iterator[None]:
    """SQLite tracing into a throwaway database, as ``CHATSTREAM_TRACING=true`` would."""
    with tempfile.TemporaryDirectory() as folder:
        os.environ["CHATSTREAM_TRACING"] = "true"
        os.environ["CHATSTREAM_TRACE_DB"] = os.path.join(folder, "bench.db")
        try:
            yield
        finally:
            del os.environ["CHATSTREAM_TRACING"], os.environ["CHATSTREAM_TRACE_DB"]
            from chatstream.tracing import flush

            flush(60)


def main() -> None:
    quick = "--quick" in sys.argv
    repeats = 3 if quick else 7
    sizes = [1_000] if quick else [1_000, 10_000, 100_000]
    rows = [row for n in sizes for row in per_chunk(n, repeats if n < 100_000 else 3)]
    rows += per_call(300 if quick else 2_000, repeats)
    print(f"{'measure':<24}{'size':<20}{'median µs':>11}{'min':>9}{'max':>9}  note")
    for name, size, med, low, high, note in rows:
        print(f"{name:<24}{size:<20}{med:>11.2f}{low:>9.2f}{high:>9.2f}  {note}")


if __name__ == "__main__":
    main()
