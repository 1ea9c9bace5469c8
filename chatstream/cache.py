"""Response caches: a call whose provider, model, settings and messages were seen replays them.

A hit replays the recorded chunks, with their original chunking (and, if asked, timing),
through the same run as a live call: ``astream``, ``astream_log``, callbacks and traces see it
as they would see the provider. Only streams that ended normally are recorded: an error, a
cancellation or an early ``break`` stores nothing. Two caches ship: `MemoryCache` (an LRU in
this process) and `SQLiteCache` (a file, shared by processes; the embedded default). Give one
to a model (``cache=``) or to every model (`set_default_cache`); a call opts out with
``config={"cache": False}``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import anyio

from .messages import AIMessageChunk

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence

    from .messages import BaseMessage

__all__ = [
    "Cache",
    "CachedStream",
    "MemoryCache",
    "SQLiteCache",
    "cache_key",
    "cached_stream",
    "get_default_cache",
    "set_default_cache",
]


@final
@dataclass(frozen=True, slots=True)
class CachedStream:
    """A recorded stream: its chunks and when each came, in seconds after the call started."""

    chunks: tuple[AIMessageChunk, ...]
    """The chunks, exactly as the provider streamed them (frozen: shared by every replay)."""
    offsets: tuple[float, ...]
    """Seconds from the start of the call to each chunk."""


@runtime_checkable
class Cache(Protocol):
    """Where recorded streams are kept. Both methods may be called from any task."""

    replay_timing: bool
    """Whether a hit waits between chunks as the original stream did."""

    async def aget(self, key: str) -> CachedStream | None:
        """The stream recorded under ``key``, if any."""
        ...

    async def aput(self, key: str, stream: CachedStream) -> None:
        """Record ``stream`` under ``key`` (replacing what was there)."""
        ...


def cache_key(
    owner: str, model: str, settings: Mapping[str, Any], messages: Sequence[BaseMessage]
) -> str:
    """The key of a call: a hash of its provider, model, settings (tools included) and input."""
    document = {
        "provider": owner,
        "model": model,
        "settings": settings,
        "messages": [message.model_dump(mode="json") for message in messages],
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


async def replay(stream: CachedStream, *, timing: bool) -> AsyncIterator[AIMessageChunk]:
    """The recorded chunks, optionally spaced as they first came."""
    started = anyio.current_time()
    for chunk, offset in zip(stream.chunks, stream.offsets, strict=True):
        if timing:
            await anyio.sleep(max(started + offset - anyio.current_time(), 0))
        yield chunk


async def cached_stream(
    cache: Cache, key: str, open_stream: Callable[[], AsyncIterator[AIMessageChunk]]
) -> AsyncGenerator[AIMessageChunk, None]:
    """The recorded stream under ``key`` replayed, or ``open_stream()``'s, recorded."""
    hit = await cache.aget(key)
    if hit is not None:
        async for chunk in replay(hit, timing=cache.replay_timing):
            yield chunk
        return
    chunks = record(open_stream(), cache, key)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()


async def record(
    chunks: AsyncIterator[AIMessageChunk], cache: Cache, key: str
) -> AsyncGenerator[AIMessageChunk, None]:
    """``chunks`` as they come; once they end normally, the whole stream goes to ``cache``."""
    kept: list[AIMessageChunk] = []
    offsets: list[float] = []
    started = time.monotonic()
    try:
        async for chunk in chunks:
            kept.append(chunk)
            offsets.append(time.monotonic() - started)
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    # Reached only when the provider's stream ended normally: errors, cancellations and early
    # closes leave by the finally above, and a partial answer is never replayed as a whole.
    await cache.aput(key, CachedStream(tuple(kept), tuple(offsets)))


@final
class MemoryCache:
    """An LRU of recorded streams in this process.

    Args:
        max_entries: The most streams kept; the least recently used goes first.
        replay_timing: Whether hits are spaced as the original stream was.
    """

    def __init__(self, max_entries: int = 1024, *, replay_timing: bool = False) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.replay_timing = replay_timing
        self._entries: OrderedDict[str, CachedStream] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def aget(self, key: str) -> CachedStream | None:
        """The stream under ``key``, now the most recently used."""
        stream = self._entries.get(key)
        if stream is not None:
            self._entries.move_to_end(key)
        return stream

    async def aput(self, key: str, stream: CachedStream) -> None:
        """Keep ``stream``, dropping the least recently used beyond ``max_entries``."""
        self._entries[key] = stream
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every stream."""
        self._entries.clear()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    key TEXT PRIMARY KEY,
    chunks TEXT NOT NULL,
    offsets TEXT NOT NULL,
    created REAL NOT NULL
)
"""

_PUT = "INSERT OR REPLACE INTO streams (key, chunks, offsets, created) VALUES (?, ?, ?, ?)"


@final
class SQLiteCache:
    """Recorded streams in a SQLite file, shared by every process that opens it.

    Reads and writes run on a worker thread, never on the event loop; a small in-memory LRU in
    front serves repeated hits of this process without a thread hop.

    Args:
        path: The database file (created with its table on first use).
        replay_timing: Whether hits are spaced as the original stream was.
        memory_entries: Streams also kept in this process's LRU.
    """

    def __init__(
        self, path: str | Path, *, replay_timing: bool = False, memory_entries: int = 256
    ) -> None:
        self.path = Path(path)
        self.replay_timing = replay_timing
        self._front = MemoryCache(memory_entries)
        self._lock = threading.Lock()  # noqa: TID251 - guards the connection on worker threads
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            import sqlite3  # only when a SQLite cache is used: `import chatstream` need not load it

            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(_SCHEMA)
            connection.commit()
            self._connection = connection
        return self._connection

    def _read(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            row = (
                self._connect()
                .execute("SELECT chunks, offsets FROM streams WHERE key = ?", (key,))
                .fetchone()
            )
        return None if row is None else (row[0], row[1])

    def _write(self, key: str, chunks: str, offsets: str) -> None:
        with self._lock:
            connection = self._connect()
            connection.execute(_PUT, (key, chunks, offsets, time.time()))
            connection.commit()

    async def aget(self, key: str) -> CachedStream | None:
        """The stream under ``key``: from this process's LRU, else from the file."""
        stream = await self._front.aget(key)
        if stream is not None:
            return stream
        row = await anyio.to_thread.run_sync(self._read, key)
        if row is None:
            return None
        chunks = tuple(AIMessageChunk.model_validate(chunk) for chunk in json.loads(row[0]))
        stream = CachedStream(chunks, tuple(json.loads(row[1])))
        await self._front.aput(key, stream)
        return stream

    async def aput(self, key: str, stream: CachedStream) -> None:
        """Record ``stream`` in the file (and the LRU)."""
        await self._front.aput(key, stream)
        chunks = json.dumps([chunk.model_dump(mode="json") for chunk in stream.chunks])
        await anyio.to_thread.run_sync(self._write, key, chunks, json.dumps(stream.offsets))

    def close(self) -> None:
        """Close the file (reopened on next use)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


_default: Cache | None = None


def set_default_cache(cache: Cache | None) -> None:
    """Use ``cache`` for every model that has no ``cache`` of its own (``None``: no cache)."""
    global _default
    _default = cache


def get_default_cache() -> Cache | None:
    """The cache every model without one of its own uses, if any."""
    return _default
