"""The SQLite trace store: its schema, and reading runs back (``list_runs``, ``get_run``)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._records import COLUMNS, TraceRecord, default_db_path

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["SCHEMA", "connect", "get_run", "list_runs", "transaction"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    parent_id TEXT,
    name TEXT NOT NULL,
    run_type TEXT NOT NULL,
    tags TEXT, metadata TEXT, inputs TEXT, outputs TEXT, invocation_params TEXT, environment TEXT,
    start_time REAL NOT NULL, first_token_time REAL, end_time REAL, latency REAL,
    input_tokens INTEGER, output_tokens INTEGER, total_tokens INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_start ON runs (start_time);
CREATE INDEX IF NOT EXISTS runs_parent ON runs (parent_id);
"""

_HAS_RUNS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'"

_JSON_COLUMNS = {"tags", "metadata", "inputs", "outputs", "invocation_params", "environment"}


_BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another connection's lock (other processes tracing too)."""


def connect(path: str | Path) -> sqlite3.Connection:
    """Open a trace database in WAL mode with the ``runs`` table, creating it if needed.

    A new database appears at ``path`` with its table already in it (see `_create`), so a
    reader never finds a file without the table, whenever the writing process dies.
    Transactions are explicit (`transaction`); the connection may move to another thread.
    """
    target = Path(path)
    if not target.exists():
        _create(target)
    # isolation_level=None: no implicit BEGIN, so that every write can be BEGIN IMMEDIATE.
    connection = sqlite3.connect(
        target, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    try:
        # Both already hold for a database made by _create; not for one an older version made.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(SCHEMA)
        # NORMAL: a committed run survives the process crashing (not a power cut), no fsync.
        connection.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        connection.close()
        raise
    return connection


def _create(target: Path) -> None:
    """Build the database under a temporary name, then link it into place, table included.

    Creating it in place would leave an empty file, unreadable as a store, for as long as the
    table is missing, and for good if the process is killed meanwhile (as happened just after
    a traced call). A hard link never replaces a database another process made first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with closing(sqlite3.connect(temporary)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
            connection.executescript(SCHEMA)
        try:
            os.link(temporary, target)
        except FileExistsError:
            pass  # another process created it meanwhile; that one is as good
        except OSError:
            # No hard links on this filesystem. A rename could replace a store another process
            # made in the same instant, but still never shows one without the table.
            if not target.exists():
                os.replace(temporary, target)
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{temporary}{suffix}").unlink(missing_ok=True)


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One write transaction that takes the write lock at its start, waiting for it if busy.

    Never a deferred transaction that reads before it writes: under WAL, its upgrade to a
    writer fails with ``SQLITE_BUSY`` at once, without the busy timeout, when another process
    committed in between. ``BEGIN IMMEDIATE`` waits for the lock up front instead.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.rollback()
        raise
    connection.commit()


def _record(row: sqlite3.Row) -> TraceRecord:
    data: dict[str, Any] = {}
    for key in COLUMNS:
        value = row[key]
        data[key] = json.loads(value) if key in _JSON_COLUMNS and value is not None else value
    return TraceRecord.model_validate(data)


def _read(db: str | Path | None, sql: str, args: tuple[Any, ...]) -> list[TraceRecord]:
    path = Path(db) if db is not None else default_db_path()
    if not path.exists():
        return []  # nothing traced yet; read-only, so no file or directory is created
    uri = f"file:{path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT)) as connection:
        connection.row_factory = sqlite3.Row
        try:
            return [_record(row) for row in connection.execute(sql, args)]
        except sqlite3.OperationalError:
            # A file without the table (left by a writer of an older version killed before
            # creating it) holds no runs; any other failure is real.
            if connection.execute(_HAS_RUNS).fetchone() is None:
                return []
            raise


def list_runs(
    *,
    limit: int = 50,
    name: str | None = None,
    run_type: str | None = None,
    parent_id: str | None = None,
    db: str | Path | None = None,
) -> list[TraceRecord]:
    """The most recent traced runs first, optionally filtered by name, type or parent."""
    where, args = [], []
    for column, value in (("name", name), ("run_type", run_type), ("parent_id", parent_id)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT * FROM runs {clause} ORDER BY start_time DESC LIMIT ?"
    return _read(db, sql, (*args, limit))


def get_run(run_id: str, *, db: str | Path | None = None) -> TraceRecord | None:
    """One traced run by id (a unique prefix of at least 8 characters also works)."""
    runs = _read(db, "SELECT * FROM runs WHERE id LIKE ? LIMIT 2", (f"{run_id}%",))
    return runs[0] if len(runs) == 1 and len(run_id) >= 8 else None
