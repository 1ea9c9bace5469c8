"""`_worker` jobs for ``amap``: many lazy bounded calls, in process and over HTTP.

Each floor is `bounded_loop`, a plain anyio semaphore loop that starts one task per input
only when a slot frees. Imports happen inside the jobs, so a worker loads only its contender's.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from chatstream import BaseChatModel

    Call = Callable[[], Awaitable[object]]

T = TypeVar("T")
R = TypeVar("R")


async def bounded_loop(
    items: Iterable[T], call: Callable[[T], Awaitable[R]], limit: int, take: Callable[[R], None]
) -> None:
    """``take(await call(item))`` for every item, at most ``limit`` at once, pulled lazily."""
    import anyio

    slots = anyio.Semaphore(limit)

    async def one(item: T) -> None:
        try:
            take(await call(item))
        finally:
            slots.release()

    async with anyio.create_task_group() as group:
        for item in items:
            await slots.acquire()
            group.start_soon(one, item)


async def _floor_rows(n: int, limit: int) -> None:
    from ._models import answer_floor  # imported at set-up already: see `inprocess`

    taken = [0]

    def take(text: str) -> None:
        taken[0] += bool(text)

    await bounded_loop((f"q{i}" for i in range(n)), lambda _: answer_floor(1), limit, take)
    if taken[0] != n:
        raise RuntimeError(f"the floor answered {taken[0]} of {n} inputs")


async def _amap_rows(model: BaseChatModel, n: int, limit: int, **params: Any) -> None:
    count = 0
    async with model.amap((f"q{i}" for i in range(n)), max_concurrency=limit, **params) as rows:
        async for row in rows:
            if row.error is not None:
                raise row.error
            count += 1
    if count != n:
        raise RuntimeError(f"amap gave {count} rows of {n}")


async def _abatch_rows(model: BaseChatModel, n: int) -> None:
    answers = await model.abatch([f"q{i}" for i in range(n)])
    if len(answers) != n:
        raise RuntimeError(f"abatch gave {len(answers)} answers of {n}")


def open_sockets() -> int:
    """Sockets this process has open: after a run, the pool's connections (its peak in flight)."""
    import os

    folder = "/proc/self/fd"
    count = 0
    for name in os.listdir(folder):
        with contextlib.suppress(OSError):  # a descriptor closed meanwhile
            count += os.readlink(f"{folder}/{name}").startswith("socket:")
    return count


async def _counted(run: Call) -> dict[str, int]:
    await run()
    return {"sockets": open_sockets()}


async def inprocess(spec: dict[str, Any], stack: contextlib.AsyncExitStack) -> tuple[Call, Call]:
    """``spec["inputs"]`` 1-chunk calls: the floor loop, ``amap``, or an eager ``abatch``."""
    # Every contender imports chatstream (the floor for its chunks) before it says it is ready,
    # so that RSS growth is the run's alone.
    from ._models import Streamer

    n, warm, limit = spec["inputs"], spec["warm"], spec["limit"]
    if spec["contender"] == "floor":
        return partial(_floor_rows, n, limit), partial(_floor_rows, warm, limit)

    model = Streamer(n=1)
    if spec["contender"] == "amap":
        return partial(_amap_rows, model, n, limit), partial(_amap_rows, model, warm, limit)
    return partial(_abatch_rows, model, n), partial(_abatch_rows, model, warm)


async def http(spec: dict[str, Any], stack: contextlib.AsyncExitStack) -> tuple[Call, Call]:
    """``spec["requests"]`` streams, ``spec["in_flight"]`` at once, against `_server`."""
    from ._server import base_url

    url, in_flight, chunks = base_url(spec["port"], "wait"), spec["in_flight"], spec["chunks"]
    requests = spec["requests"]
    if spec["contender"] == "floor":
        from ._clients import FLOOR, open_client

        consume = await stack.enter_async_context(open_client(FLOOR, url, in_flight))

        async def floor(n: int, size: int) -> None:
            got = [0]

            def take(count: int) -> None:
                got[0] += count

            await bounded_loop(range(n), lambda _: consume(size, None), in_flight, take)
            if got[0] != n * size:
                raise RuntimeError(f"the floor got {got[0]} chunks of {n * size}")

        # Warming up with one 1-chunk request per slot opens the pool's connections.
        return partial(_counted, partial(floor, requests, chunks)), partial(floor, in_flight, 1)
    from chatstream.providers.openai import ChatOpenAI

    from ._clients import MODEL

    model = ChatOpenAI(base_url=url, api_key="bench", model=MODEL, max_connections=in_flight)
    stack.push_async_callback(model.aclose)
    return (
        partial(_counted, partial(_amap_rows, model, requests, in_flight, max_tokens=chunks)),
        partial(_amap_rows, model, in_flight, in_flight, max_tokens=1),
    )
