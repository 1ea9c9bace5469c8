"""Tracing switched on by environment variables, and the reader of the trace store.

``CHATSTREAM_TRACING=true`` (or ``sqlite``) records every run to an embedded SQLite database
(`default_db_path`: ``CHATSTREAM_TRACE_DB``, else under the user's data directory), which the
readers default to as well; with ``CHATSTREAM_TRACE_DURABLE=true`` a call returns only once its
run is committed; ``otel`` sends OpenTelemetry spans instead (the ``chatstream[otel]``
extra). Nothing here is imported until tracing is used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ._records import TraceRecord, default_db_path
from ._store import get_run, list_runs

if TYPE_CHECKING:
    from ..runs import RunObserver

__all__ = ["TraceRecord", "default_db_path", "flush", "get_run", "list_runs", "tracer_from_env"]

_TRUE = {"1", "true", "yes", "on", "sqlite"}
_tracers: dict[tuple[str, str], RunObserver] = {}


def tracer_from_env() -> RunObserver | None:
    """The tracer ``CHATSTREAM_TRACING`` asks for (one per sink and path), or ``None``."""
    mode = os.environ.get("CHATSTREAM_TRACING", "").strip().lower()
    if mode in _TRUE:
        path = str(default_db_path())
        durable = os.environ.get("CHATSTREAM_TRACE_DURABLE", "").strip().lower() in _TRUE
        key = ("sqlite-durable" if durable else "sqlite", path)
        if key not in _tracers:
            from ._sqlite import SQLiteTracer

            _tracers[key] = SQLiteTracer(path, durable=durable)
        return _tracers[key]
    if mode == "otel":
        key = ("otel", "")
        if key not in _tracers:
            from ._otel import OTelTracer

            _tracers[key] = OTelTracer()
        return _tracers[key]
    return None


def flush(timeout: float = 5.0) -> bool:
    """Wait until every finished run has been written; whether that happened in time."""
    from ._sqlite import SQLiteTracer

    return all(
        tracer.flush(timeout) for tracer in _tracers.values() if isinstance(tracer, SQLiteTracer)
    )
