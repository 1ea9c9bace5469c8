"""One contender in a process of its own, so that its peak RSS is its own; driven by `_isolated`.

It reads commands on stdin (``warm``, ``run``, anything else to stop) and answers each with one
line that starts with `MARK` and holds JSON: the setup's peak RSS once ready, wall and CPU seconds
per run (with what else a run returns as a dict), and the peak RSS when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import resource
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _amap_jobs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Call = Callable[[], Awaitable[object]]

MARK = "@bench "
"""Starts every line meant for the parent (libraries may print too)."""


def say(**fields: Any) -> None:
    """Send one answer to the parent."""
    print(MARK + json.dumps(fields), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    # Linux's ru_maxrss survives fork and exec: a child reports at least its parent's RSS at the
    # fork. VmHWM is the high-water mark of this program's own memory map only.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB elsewhere too


# Each job imports only what its contender needs, so that the peak RSS is the contender's own.


async def _concurrency(spec: dict[str, Any], stack: contextlib.AsyncExitStack) -> tuple[Call, Call]:
    from ._clients import open_client
    from ._server import base_url

    url = base_url(spec["port"], "event")
    consume = await stack.enter_async_context(open_client(spec["client"], url, spec["limit"]))
    streams = spec["streams"]

    async def many(n: int) -> None:
        counts = await asyncio.gather(*(consume(n, None) for _ in range(streams)))
        if sum(counts) != streams * n:
            raise RuntimeError(f"{spec['client']} got {sum(counts)} chunks of {streams * n}")

    # Warming up with 1-chunk streams opens the pool's connections at little cost.
    return partial(many, spec["chunks"]), partial(many, 1)


async def _abatch(spec: dict[str, Any], stack: contextlib.AsyncExitStack) -> tuple[Call, Call]:
    inputs, chunks = ["q"] * spec["inputs"], spec["chunks"]
    run: Call
    if spec["contender"] == "floor":
        from ._models import answer_floor

        async def floor() -> object:
            return await asyncio.gather(*(answer_floor(chunks) for _ in inputs))

        run = floor
    elif spec["contender"] == "chatstream":
        from ._models import Streamer

        run = partial(Streamer(n=chunks).abatch, inputs)
    else:
        from ._lc_model import LangChainStreamer

        run = partial(LangChainStreamer(n=chunks).abatch, inputs)
    return run, run


_JOBS = {
    "concurrency": _concurrency,
    "abatch": _abatch,
    "amap": _amap_jobs.inprocess,
    "amap_http": _amap_jobs.http,
}


async def main(spec: dict[str, Any]) -> None:
    """Set the job up, then answer the parent's commands until told to stop."""
    async with contextlib.AsyncExitStack() as stack:
        run, warm = await _JOBS[spec["job"]](spec, stack)
        say(ready_rss_mb=peak_rss_mb())
        while (command := (await asyncio.to_thread(sys.stdin.readline)).strip()) in ("warm", "run"):
            if command == "warm":
                await warm()
                say(warm=True)
                continue
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            result = await run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            # A run may report more about itself in a dict (sockets open after it, say).
            say(wall=wall, cpu=cpu, **(result if isinstance(result, dict) else {}))
    say(peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
