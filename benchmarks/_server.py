"""An OpenAI-format SSE server in a process of its own, so that its work is not the client's.

A request's ``max_tokens`` (or ``max_completion_tokens``) says how many content chunks to stream
(then the finish, usage and ``[DONE]`` events), and its path how: ``/event/v1/...`` writes one
event at a time with a loop turn between them, as a model streams; ``/bulk/v1/...`` writes the
whole body at once; ``/wait/v1/...`` first waits `WAIT` seconds (as a model thinks before its
first token, so that many calls are in flight at once), then writes as ``event`` does;
``/close/v1/...`` writes as ``bulk`` does and then closes the connection, although its response
said nothing of it (HTTP/1.1 keep-alive is the default): some servers and proxies do this after
every stream. Bodies are built once per ``n`` and cached, so serving costs the same for every
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

PIECES = [" The", " purpose", " of", " model", " regularization", " is", " to", " generalize"]
HEAD = {
    "id": "chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL",
    "object": "chat.completion.chunk",
    "created": 1727346168,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_5050236cbd",
}
WAIT = 1.0
"""Seconds a ``/wait/v1/...`` request waits before its response starts."""
_RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n"
)


def base_url(port: int, mode: str) -> str:
    """The ``/v1`` root a client is given to receive its chunks in ``mode`` (bulk, close...)."""
    return f"http://127.0.0.1:{port}/{mode}/v1"


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: Any) -> bytes:
    return _chunked(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


def body(n: int) -> list[bytes]:
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


async def _serve() -> None:
    cache: dict[int, list[bytes]] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on this connection
                request = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in request.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                sent = json.loads(await reader.readexactly(length))
                n = int(sent.get("max_tokens") or sent["max_completion_tokens"])
                mode = request.split(b" ", 2)[1].split(b"/")[1]
                events = cache.get(n) or cache.setdefault(n, body(n))
                if mode == b"wait":
                    await asyncio.sleep(WAIT)
                if mode in (b"bulk", b"close"):
                    writer.write(_RESPONSE_HEAD + b"".join(events))
                else:
                    writer.write(_RESPONSE_HEAD)
                    for event in events:
                        writer.write(event)
                        await writer.drain()
                        await asyncio.sleep(0)  # one write, one turn: as a model streams
                await writer.drain()
                if mode == b"close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)  # the parent waits for this line
    async with server:
        await server.serve_forever()


ROOT = Path(__file__).resolve().parent.parent
"""The repository, where ``python -m benchmarks...`` finds this package."""


@contextlib.contextmanager
def serving() -> Iterator[int]:
    """Run the server in a new process for the block; yields its port on 127.0.0.1."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._server"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the benchmark server did not start (it said {line!r})")
        yield int(line)
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    asyncio.run(_serve())
