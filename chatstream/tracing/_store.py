"""The SQLite trace store: its schema, and reading runs back (``list_runs``, ``get_run``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from ._records import COLUMNS, TraceRecord, default_db_path

__all__ = ["SCHEMA", "connect", "get_run", "list_runs"]

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

_JSON_COLUMNS = {"tags", "metadata", "inputs", "outputs", "invocation_params", "environment"}


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) a trace database in WAL mode with the ``runs`` table."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=10)
    connection.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a committed run survives the process crashing (not a power cut), at no fsync cost.
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(SCHEMA)
    return connection


def _record(row: sqlite3.Row) -> TraceRecord:
    data: dict[str, Any] = {}
    for key in COLUMNS:
        value = row[key]
        data[key] = json.loads(value) if key in _JSON_COLUMNS and value is not None else value
    return TraceRecord.model_validate(data)


def _read(db: str | Path | None, sql: str, args: tuple[Any, ...]) -> list[TraceRecord]:
    path = Path(db) if db is not None else default_db_path()
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as connection:
        connection.row_factory = sqlite3.Row
        return [_record(row) for row in connection.execute(sql, args)]


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
