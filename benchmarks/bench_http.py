"""HTTP streaming speed: `ChatOpenAI.astream` next to a raw aiohttp + json.loads floor.

A server in another process streams OpenAI chunks over real sockets, one write per event or
the whole body in one write. Run: python benchmarks/bench_http.py [--quick]. Prints a table;
asserts nothing. Targets: per chunk ≤ 1.5x the floor, TTFT ≤ 1.2x, 200x200 wall ≤ 1.5x.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import statistics
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp

from chatstream.providers.openai import ChatOpenAI

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Measure = Callable[[], Awaitable[object]]
PIECES = [" The", " purpose", " of", " model", " regularization", " is", " to", " generalize"]
HEAD = {
    "id": "chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL",
    "object": "chat.completion.chunk",
    "created": 1727346168,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_5050236cbd",
}


# -- the server (its own process) ---------------------------------------------------------------


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: Any) -> bytes:
    return _chunked(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


def _body(n: int) -> list[bytes]:
    """The chunked-encoded events of an ``n``-chunk stream, as OpenAI sends them."""
    first = {"role": "assistant", "content": "", "refusal": None}
    events = [_event({**HEAD, "choices": [{"index": 0, "delta": first, "finish_reason": None}]})]
    for i in range(n):
        delta = {"content": PIECES[i % len(PIECES)]}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        events.append(_event({**HEAD, "choices": [choice]}))
    finish = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    events.append(_event({**HEAD, "choices": [finish]}))
    usage = {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n}
    events.append(_event({**HEAD, "choices": [], "usage": usage}))
    events.append(_chunked(b"data: [DONE]\n\n"))
    return [*events, b"0\r\n\r\n"]


async def _serve(port_out: Any) -> None:
    cache: dict[int, list[bytes]] = {}
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n"
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in request.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                # The path says how many chunks and how: /<n>/<event|bulk>/v1/chat/completions
                _, n, mode, *_ = request.split(b" ", 2)[1].split(b"/")
                events = cache.get(int(n)) or cache.setdefault(int(n), _body(int(n)))
                if mode == b"bulk":
                    writer.write(head + b"".join(events))
                else:
                    writer.write(head)
                    for event in events:
                        writer.write(event)
                        await writer.drain()
                        await asyncio.sleep(0)  # one write, one turn: as a model streams
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port_out.send(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _server_main(port_out: Any) -> None:
    asyncio.run(_serve(port_out))


# -- the clients ------------------------------------------------------------------------------


async def floor_stream(session: aiohttp.ClientSession, url: str) -> int:
    """Raw aiohttp: iter_any, split events on blank lines, json.loads each data line."""
    count = 0
    buffer = b""
    async with session.post(url, json={"model": "m", "stream": True}) as resp:
        async for data in resp.content.iter_any():
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if event.startswith(b"data: "):
                    payload = event[6:]
                    if payload != b"[DONE]":
                        obj = json.loads(payload)
                        if obj["choices"] and obj["choices"][0]["delta"].get("content"):
                            count += 1
    return count


async def model_stream(model: ChatOpenAI) -> int:
    count = 0
    async for chunk in model.astream("Hi"):
        if chunk.content:
            count += 1
    return count


async def first_chunk_floor(session: aiohttp.ClientSession, url: str) -> float:
    start = time.perf_counter()
    first = 0.0
    async with session.post(url, json={"model": "m", "stream": True}) as resp:
        buffer = b""
        async for data in resp.content.iter_any():
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                payload = event[6:]
                if not first and payload != b"[DONE]":
                    obj = json.loads(payload)
                    if obj["choices"] and obj["choices"][0]["delta"].get("content"):
                        first = time.perf_counter() - start
    return first


async def first_chunk_model(model: ChatOpenAI) -> float:
    start = time.perf_counter()
    first = 0.0
    async for chunk in model.astream("Hi"):
        if chunk.content and not first:
            first = time.perf_counter() - start
    return first


async def timed(floor: Measure, ours: Measure, repeats: int) -> tuple[float, float]:
    """Median seconds of each, run alternately so that load changes hit both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, into in ((floor, times[0]), (ours, times[1])):
            start = time.perf_counter()
            await run()
            into.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


async def main(quick: bool) -> None:
    n, repeats, ttft_runs, conc_repeats = (1000, 9, 50, 3) if quick else (5000, 21, 50, 7)
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    server = context.Process(target=_server_main, args=(send,), daemon=True)
    server.start()
    try:
        port = receive.recv()
        await _run(port, n, repeats, ttft_runs, conc_repeats)
    finally:
        server.terminate()
        server.join()


def _url(port: int, n: int, mode: str) -> str:
    return f"http://127.0.0.1:{port}/{n}/{mode}/v1"


async def _run(port: int, n: int, repeats: int, ttft_runs: int, conc_repeats: int) -> None:
    connector = aiohttp.TCPConnector(limit=256)
    rows: list[tuple[str, float, float, str]] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for mode in ("event", "bulk"):
            url = _url(port, n, mode)
            model = ChatOpenAI(base_url=url, api_key="bench", max_connections=256)
            async with model:
                assert await floor_stream(session, url + "/chat/completions") == n
                assert await model_stream(model) == n
                floor, ours = await timed(
                    partial(floor_stream, session, url + "/chat/completions"),
                    partial(model_stream, model),
                    repeats,
                )
            rows.append(
                (f"µs/chunk, {n} chunks, {mode} writes", floor / n * 1e6, ours / n * 1e6, "1.5")
            )

        url = _url(port, 1, "event")
        model = ChatOpenAI(base_url=url, api_key="bench", max_connections=256)
        async with model:
            await first_chunk_floor(session, url + "/chat/completions")  # warm the pools
            await first_chunk_model(model)
            floors, ours_ = [], []
            for _ in range(ttft_runs):  # interleaved, so drift hits both alike
                floors.append(await first_chunk_floor(session, url + "/chat/completions"))
                ours_.append(await first_chunk_model(model))
        rows.append(
            (
                "TTFT µs, 1-chunk stream (median)",
                statistics.median(floors) * 1e6,
                statistics.median(ours_) * 1e6,
                "1.2",
            )
        )

        url = _url(port, 200, "event")
        model = ChatOpenAI(base_url=url, api_key="bench", max_connections=256)
        async with model:

            async def floor_many() -> None:
                await asyncio.gather(
                    *(floor_stream(session, url + "/chat/completions") for _ in range(200))
                )

            async def ours_many() -> None:
                await asyncio.gather(*(model_stream(model) for _ in range(200)))

            await floor_many()
            await ours_many()
            floor_wall, ours_wall = await timed(floor_many, ours_many, conc_repeats)
        rows.append(("200 streams x 200 chunks, wall ms", floor_wall * 1e3, ours_wall * 1e3, "1.5"))

    print(f"{'measure':<38} {'floor':>10} {'astream':>10} {'ratio':>7} {'target':>7}")
    for name, floor_value, ours_value, target in rows:
        ratio = ours_value / floor_value
        print(
            f"{name:<38} {floor_value:>10.2f} {ours_value:>10.2f} {ratio:>6.2f}x {'≤' + target:>7}"
        )


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    asyncio.run(main("--quick" in sys.argv))
