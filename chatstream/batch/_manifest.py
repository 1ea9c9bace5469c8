"""The batch manifest: a SQLite file of every job and row, so that a batch outlives its process.

Submit, poll and collect resume from it, and never submit a job twice.

Written like the trace store (`chatstream.tracing._store`): WAL, a busy timeout, the schema in
the file before it appears under its name, and every write one ``BEGIN IMMEDIATE`` transaction.
The blocking calls run on a worker thread, one at a time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final

import anyio
import anyio.to_thread

from ..errors import ClosedError, InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from ._split import Part

__all__ = ["JobRecord", "JobState", "Manifest", "RowRecord", "StoredRow"]

T = TypeVar("T")

FORMAT = "1"
"""The manifest's format version, stored in it: a later version refuses what it cannot read."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job INTEGER PRIMARY KEY,
    first_row INTEGER NOT NULL, row_count INTEGER NOT NULL, size INTEGER NOT NULL,
    state TEXT NOT NULL, file_id TEXT, batch_id TEXT, status TEXT, info TEXT NOT NULL,
    submitted_at REAL, ended_at REAL
);
CREATE TABLE IF NOT EXISTS rows (
    idx INTEGER PRIMARY KEY,
    custom_id TEXT NOT NULL UNIQUE,
    job INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    request TEXT NOT NULL,
    result TEXT
);
"""

_BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another connection's lock (a second process on the file)."""

_PAGE = 500
"""Rows read or written per worker-thread trip."""

JobState = Literal["planned", "uploaded", "submitted", "ended", "collected"]
"""Where a job is: planned (nothing sent), uploaded (OpenAI: the input file exists), submitted
(the provider has the job: its id is recorded), ended (no row will change), collected (every
row's result is in the manifest)."""


@final
@dataclass(frozen=True, slots=True)
class JobRecord:
    """One provider job as the manifest holds it."""

    index: int
    first_row: int
    row_count: int
    size: int
    state: JobState
    file_id: str | None
    batch_id: str | None
    status: str | None
    """The provider's own status word, as last seen."""
    info: dict[str, Any]
    """What the provider said of the job last (counts, result file ids or URL, times)."""
    submitted_at: float | None
    ended_at: float | None


@final
@dataclass(frozen=True, slots=True)
class RowRecord:
    """A row to record at creation: its id, run id and the request sent for it (JSON)."""

    custom_id: str
    run_id: str
    request: str


@final
@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row read back: its position, ids, and the provider's result (``None``: none yet)."""

    index: int
    custom_id: str
    run_id: str
    job: int
    result: dict[str, Any] | None


@final
class Manifest:
    """An open manifest file. Use `create` or `load`; `aclose` when done."""

    def __init__(self, path: Path, connection: sqlite3.Connection, meta: dict[str, str]) -> None:
        self.path = path
        self.meta = meta
        """The batch's description: provider, model, base URL, format version."""
        self._connection: sqlite3.Connection | None = connection
        self._limiter = anyio.CapacityLimiter(1)  # one statement at a time on the connection

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        path: str | os.PathLike[str],
        meta: Mapping[str, str],
        rows: Sequence[RowRecord],
        parts: Sequence[Part],
    ) -> Manifest:
        """Write a new manifest holding the planned batch, in one transaction.

        Raises:
            InvalidInputError: ``path`` already holds a batch (``where="manifest"``).
        """
        return await anyio.to_thread.run_sync(_create, Path(path), dict(meta), rows, parts)

    @classmethod
    async def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Open an existing manifest.

        Raises:
            InvalidInputError: No manifest at ``path``, or one of an unknown format.
        """
        return await anyio.to_thread.run_sync(_load, Path(path))

    async def aclose(self) -> None:
        """Close the file. Idempotent."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(connection.close, limiter=self._limiter)

    # -- reading and writing ----------------------------------------------------------------

    async def jobs(self) -> list[JobRecord]:
        """Every job, in order."""
        return await self._run(_jobs)

    async def requests(self, job: JobRecord) -> list[tuple[str, str]]:
        """``(custom_id, request JSON)`` of each row of ``job``, in order."""

        def read(connection: sqlite3.Connection) -> list[tuple[str, str]]:
            sql = "SELECT custom_id, request FROM rows WHERE job = ? ORDER BY idx"
            return [(str(a), str(b)) for a, b in connection.execute(sql, (job.index,))]

        return await self._run(read)

    async def update(self, job: JobRecord, **changes: Any) -> JobRecord:
        """Record new facts about ``job`` (its state, ids, status, info); returns the new record."""
        updated = replace(job, **changes)

        def write(connection: sqlite3.Connection) -> None:
            with _transaction(connection):
                connection.execute(
                    "UPDATE jobs SET state = ?, file_id = ?, batch_id = ?, status = ?, info = ?, "
                    "submitted_at = ?, ended_at = ? WHERE job = ?",
                    (
                        updated.state,
                        updated.file_id,
                        updated.batch_id,
                        updated.status,
                        json.dumps(updated.info),
                        updated.submitted_at,
                        updated.ended_at,
                        updated.index,
                    ),
                )

        await self._run(write)
        return updated

    async def store_results(self, results: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Record the provider's result of each ``(custom_id, result)``.

        Returns:
            How many of the custom ids were rows of this batch (others are ignored).
        """
        pending = [(json.dumps(result, ensure_ascii=False), cid) for cid, result in results]

        def write(connection: sqlite3.Connection) -> int:
            with _transaction(connection):
                cursor = connection.executemany(
                    "UPDATE rows SET result = ? WHERE custom_id = ?", pending
                )
                return cursor.rowcount

        return await self._run(write) if pending else 0

    async def custom_ids(self) -> list[str]:
        """Every row's custom id, in index order."""

        def read(connection: sqlite3.Connection) -> list[str]:
            return [
                str(cid) for (cid,) in connection.execute("SELECT custom_id FROM rows ORDER BY idx")
            ]

        return await self._run(read)

    async def rows(self, jobs: Sequence[int], after: int = -1) -> list[StoredRow]:
        """The next page of rows of ``jobs`` past index ``after``, in index order."""
        marks = ",".join("?" * len(jobs))

        def read(connection: sqlite3.Connection) -> list[StoredRow]:
            sql = (
                "SELECT idx, custom_id, run_id, job, result FROM rows "
                f"WHERE idx > ? AND job IN ({marks}) ORDER BY idx LIMIT ?"
            )
            return [
                StoredRow(idx, cid, run, job, None if raw is None else json.loads(raw))
                for idx, cid, run, job, raw in connection.execute(sql, (after, *jobs, _PAGE))
            ]

        return await self._run(read) if jobs else []

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._connection
        if connection is None:
            raise ClosedError(f"the batch manifest {self.path} was closed")
        return await anyio.to_thread.run_sync(work, connection, limiter=self._limiter)


# -- the blocking side ------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit BEGIN, so that every write can be BEGIN IMMEDIATE.
    connection = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a committed write survives the process being killed (not a power cut).
        connection.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        connection.close()
        raise
    return connection


class _transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock up front, never a failing upgrade."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self._connection.commit()
        else:
            self._connection.rollback()


def _create(
    path: Path, meta: dict[str, str], rows: Sequence[RowRecord], parts: Sequence[Part]
) -> Manifest:
    """Build the whole manifest under a temporary name, then link it into place.

    A manifest is complete or absent: a process killed while planning leaves no half-written
    batch that a resume would take for the real one, and a hard link never replaces a
    manifest another process made meanwhile.
    """
    if path.exists():
        raise InvalidInputError(
            f"{path} already exists: resume the batch it holds with chatstream.batch.open(), "
            "or choose a new file",
            where="manifest",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with closing(sqlite3.connect(temporary, isolation_level=None)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
            connection.executescript(_SCHEMA)
            with _transaction(connection):
                connection.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [*meta.items(), ("format", FORMAT)]
                )
                connection.executemany(
                    "INSERT INTO jobs (job, first_row, row_count, size, state, info) "
                    "VALUES (?, ?, ?, ?, 'planned', '{}')",
                    [(i, part.first, part.count, part.size) for i, part in enumerate(parts)],
                )
                connection.executemany(
                    "INSERT INTO rows (idx, custom_id, job, run_id, request) "
                    "VALUES (?, ?, ?, ?, ?)",
                    _row_values(rows, parts),
                )
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise InvalidInputError(
                f"{path} was created by another process meanwhile", where="manifest"
            ) from None
        except OSError:  # no hard links on this filesystem
            os.replace(temporary, path)
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{temporary}{suffix}").unlink(missing_ok=True)
    return Manifest(path, _connect(path), {**meta, "format": FORMAT})


def _row_values(
    rows: Sequence[RowRecord], parts: Sequence[Part]
) -> Iterable[tuple[int, str, int, str, str]]:
    for job, part in enumerate(parts):
        for index in range(part.first, part.first + part.count):
            row = rows[index]
            yield index, row.custom_id, job, row.run_id, row.request


def _load(path: Path) -> Manifest:
    if not path.is_file():
        raise InvalidInputError(f"no batch manifest at {path}", where="manifest")
    connection = _connect(path)
    try:
        meta = {str(k): str(v) for k, v in connection.execute("SELECT key, value FROM meta")}
    except sqlite3.DatabaseError as exc:
        connection.close()
        problem = f"{path} is not a batch manifest ({exc})"
        raise InvalidInputError(problem, where="manifest") from exc
    if meta.get("format") != FORMAT:
        connection.close()
        raise InvalidInputError(
            f"{path} has manifest format {meta.get('format')!r}; this version reads {FORMAT!r}",
            where="manifest",
        )
    return Manifest(path, connection, meta)


def _jobs(connection: sqlite3.Connection) -> list[JobRecord]:
    sql = (
        "SELECT job, first_row, row_count, size, state, file_id, batch_id, status, info, "
        "submitted_at, ended_at FROM jobs ORDER BY job"
    )
    return [
        JobRecord(a, b, c, d, e, f, g, h, json.loads(i), j, k)
        for a, b, c, d, e, f, g, h, i, j, k in connection.execute(sql)
    ]
