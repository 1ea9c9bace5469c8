"""`SQLiteTracer`: writes finished runs to the trace store from a writer thread, in batches.

The event loop only puts the finished run on a bounded queue; serialising and writing happen on
the writer thread. A full queue drops the run and counts it rather than slowing the stream.
A durable tracer (``CHATSTREAM_TRACE_DURABLE=true``) also makes each call wait, off the loop,
until its run is committed: a call that returned is in the store, whatever happens next.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, final

import anyio
import anyio.lowlevel

from ._records import COLUMNS, known_secrets, run_row
from ._store import connect, transaction

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ..messages import AIMessageChunk
    from ..runs import Run

__all__ = ["SQLiteTracer"]

logger = logging.getLogger("chatstream.tracing")

_QUEUE_SIZE = 10_000
_BATCH = 500
_GATHER = 0.05
"""Seconds the writer waits after waking, so that runs are written in batches."""
_INSERT = (
    f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
)


@final
class _Committed:
    """Set from the writer thread once the runs queued before it are committed."""

    __slots__ = ("event", "token")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.token = anyio.lowlevel.current_token()

    def set(self) -> None:
        import anyio.from_thread

        try:
            anyio.from_thread.run_sync(self.event.set, token=self.token)
        except RuntimeError:  # the loop that waited is gone: nobody to tell
            pass


class SQLiteTracer:
    """Records every finished run (and traced step) in a SQLite database.

    Args:
        path: The database file.
        durable: Make every call wait until its run is committed (see the module docstring).
    """

    inherit = False

    def __init__(self, path: str, *, durable: bool = False) -> None:
        self.path = path
        self.durable = durable
        self.dropped = 0
        """Runs not recorded: the writer could not keep up, or could not open the store."""
        self._queue: queue.Queue[Run | threading.Event | _Committed] = queue.Queue(_QUEUE_SIZE)
        self._is_open = True
        self._thread = threading.Thread(target=self._serve, name="chatstream-tracer", daemon=True)
        self._thread.start()
        atexit.register(self.flush, 2.0)

    def on_start(self, run: Run) -> None:
        """Nothing to do: a run is written once it is finished."""

    def on_chunk(self, run: Run, chunk: AIMessageChunk) -> None:
        """Nothing to do: times and chunks are on the run already."""

    def on_end(self, run: Run) -> Awaitable[None] | None:
        """Queue the finished run for writing (and, when durable, wait for its commit)."""
        self._put(run)
        return self._committed() if self.durable else None

    def on_error(self, run: Run, error: BaseException) -> Awaitable[None] | None:
        """Queue the failed (or cancelled) run for writing (durable: wait, unless cancelled)."""
        self._put(run)
        return self._committed() if self.durable and isinstance(error, Exception) else None

    async def _committed(self) -> None:
        marker = _Committed()
        self._put(marker)
        with anyio.CancelScope(shield=True):
            await marker.event.wait()

    def _put(self, item: Run | threading.Event | _Committed) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            logger.warning(
                "chatstream tracing dropped a run (%d so far): the writer is behind", self.dropped
            )

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every run queued so far is committed; whether it happened in time."""
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout) and self._is_open

    def _serve(self) -> None:
        try:
            connection: sqlite3.Connection | None = connect(self.path)
        except (OSError, sqlite3.Error):
            # Still serve the queue, so that flush() answers at once instead of timing out.
            logger.exception("chatstream tracing cannot open %s: no run is recorded", self.path)
            connection = None
            self._is_open = False
        while True:
            batch = [self._queue.get()]
            # Let a busy program finish a few more runs first: waking (and taking the GIL from
            # the caller) once per run cost far more than the writing itself. Not when a
            # caller waits for the commit (a flush, a durable tracer's call).
            if not self.durable and not isinstance(batch[0], threading.Event):
                time.sleep(_GATHER)
            # Take what else is waiting, up to a batch: one transaction for the lot, and the
            # queue (not this list) stays what bounds the memory while the disk is slow.
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows, markers = [], []
            secrets = known_secrets()
            for item in batch:
                if isinstance(item, (threading.Event, _Committed)):
                    markers.append(item)
                    continue
                if connection is None:
                    self.dropped += 1
                    continue
                try:
                    rows.append(run_row(item, secrets))
                except Exception:  # a run that cannot be serialised must not stop the writer
                    logger.exception("chatstream tracing could not record run %s", item.id)
            try:
                if connection is not None:
                    with transaction(connection):
                        connection.executemany(_INSERT, rows)
            except Exception:
                logger.exception("chatstream tracing could not write %d runs", len(rows))
            for marker in markers:
                marker.set()
