"""2,000 concurrent streams against one local server: nothing lost, nothing leaked.

The server runs in a child process, so that this process's memory and event loop are the
client's alone. Every stream first reads its first chunk and waits until all 2,000 have one
(so they really are open at once), then reads to the end. Asserted: every stream got every
chunk, in order, and afterwards no connection, task or thread is left. Computed and printed
(never asserted), from a first pass: the event loop's worst and median lag (a 5 ms ticker's
overshoot) and the wall time; from a second pass under tracemalloc (too slow to time): the
Python memory each open stream holds.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
import pytest

from . import _figures
from ._leaks import Baseline, has_kernel_table, kernel_connections
from ._providers import KEY, Provider

if TYPE_CHECKING:
    from ..providers._helpers import HTTPModel

STREAMS = 2000
PIECES = 20
TICK = 0.005
EXPECTED = "".join(f"w{n} " for n in range(PIECES))

_CHILD = textwrap.dedent(
    f"""
    import sys
    import anyio
    from chatstream.testing import AnthropicServer, OllamaServer, OpenAIServer, ScriptedReply

    REPLY = ScriptedReply(text_chunks=[f"w{{n}} " for n in range({PIECES})])

    async def main() -> None:
        kind = sys.argv[1]
        if kind == "anthropic":
            server = AnthropicServer([REPLY], api_key={KEY!r}, ping=False)
        elif kind == "ollama":
            server = OllamaServer([REPLY], api_key={KEY!r})
        else:
            server = OpenAIServer([REPLY], api_key={KEY!r})
        async with server:
            print(server.base_url, flush=True)
            await anyio.wait_readable(sys.stdin.fileno())  # until the parent closes stdin

    anyio.run(main)
    """
)


@pytest.fixture(scope="module")
def child_server() -> Iterator[Callable[[str], str]]:
    """Start (once per provider) a server in a child process; give its base URL."""
    children: dict[str, tuple[subprocess.Popen[str], str]] = {}

    def start(kind: str) -> str:
        if kind not in children:
            child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, kind],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            children[kind] = (child, child.stdout.readline().strip())
        return children[kind][1]

    yield start
    for child, _ in children.values():
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()


class Burst:
    """One run of `STREAMS` streams that are all open at once, with what it measured."""

    def __init__(self) -> None:
        self.texts = [""] * STREAMS
        self.counts = [0] * STREAMS
        self.opened = 0
        self.all_open = anyio.Event()
        self.lags: list[float] = []
        self.at_peak: dict[str, float | int] = {}
        self.seconds = 0.0

    async def run(self, model: HTTPModel, *, trace_memory: bool) -> None:
        """Open every stream, wait until all have a chunk, then read them all to the end."""

        async def one(index: int) -> None:
            pieces: list[str] = []
            async with model.astream("Hi") as stream:
                async for chunk in stream:
                    if not chunk.content:
                        continue
                    pieces.append(str(chunk.content))
                    if len(pieces) == 1:
                        self.opened += 1
                        if self.opened == STREAMS:
                            self.peak(model, trace_memory)
                            self.all_open.set()
                        await self.all_open.wait()
            self.texts[index] = "".join(pieces)
            self.counts[index] = len(pieces)

        async def ticker() -> None:
            while True:
                start = anyio.current_time()
                await anyio.sleep(TICK)
                self.lags.append(anyio.current_time() - start - TICK)

        gc.collect()
        self.before = tracemalloc.get_traced_memory()[0] if trace_memory else 0
        started = time.perf_counter()
        with anyio.fail_after(120):
            async with anyio.create_task_group() as outer:
                if not trace_memory:  # tracemalloc slows every allocation: no timing then
                    outer.start_soon(ticker)
                async with anyio.create_task_group() as streams:
                    for index in range(STREAMS):
                        streams.start_soon(one, index)
                outer.cancel_scope.cancel()
        self.seconds = time.perf_counter() - started

    def peak(self, model: HTTPModel, trace_memory: bool) -> None:
        # aiohttp hands a connection back once the whole body is buffered, even unread, so a
        # later request may reuse it: fewer connections than streams would be no loss.
        stats = model.pool_stats()
        self.at_peak["connections_at_peak"] = stats.in_use + stats.idle
        if trace_memory:
            size = tracemalloc.get_traced_memory()[0] - self.before
            self.at_peak["traced_kib_per_open_stream"] = round(size / STREAMS / 1024, 1)

    @property
    def lost(self) -> int:
        return sum(PIECES - count for count in self.counts)


@pytest.mark.skipif(not has_kernel_table(), reason="reads /proc (Linux)")
@pytest.mark.timeout(240)
async def test_2000_concurrent_streams_lose_no_chunk_and_leak_nothing(
    provider: Provider, child_server: Callable[[str], str]
) -> None:
    base_url = child_server(provider.name)
    port = urlsplit(base_url).port or 0
    baseline = Baseline()
    model = provider.model(base_url, max_connections=STREAMS, connect=60, idle=60)
    async with model:
        # Warm up (first-use allocations, imports, pool growth) before anything is measured.
        async with anyio.create_task_group() as warm:
            for _ in range(100):
                warm.start_soon(model.ainvoke, "Hi")
        timed = Burst()
        await timed.run(model, trace_memory=False)
        tracemalloc.start()
        try:
            traced = Burst()
            await traced.run(model, trace_memory=True)
        finally:
            tracemalloc.stop()
    for burst in (timed, traced):
        assert burst.opened == STREAMS  # every stream was open, mid-body, at the same moment
        assert burst.lost == 0
        assert burst.texts == [EXPECTED] * STREAMS
    assert await baseline.settle(("open sockets", lambda: kernel_connections(port))) == {}
    _figures.record(
        f"{STREAMS} concurrent streams ({provider.name})",
        streams=STREAMS,
        chunks_per_stream=PIECES,
        lost_chunks=timed.lost + traced.lost,
        max_loop_lag_ms=round(max(timed.lags) * 1000, 1),
        median_loop_lag_ms=round(statistics.median(timed.lags) * 1000, 1),
        seconds=round(timed.seconds, 2),
        chunks_per_second=round(STREAMS * PIECES / timed.seconds),
        connections_at_peak=timed.at_peak["connections_at_peak"],
        traced_kib_per_open_stream=traced.at_peak["traced_kib_per_open_stream"],
    )
