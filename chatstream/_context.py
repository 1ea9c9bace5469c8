"""The run being executed now, in a context variable every layer may read (no imports needed).

It lives apart from `chatstream.runs` so that the transport can count a call's HTTP attempts
on it without depending on runs or messages.
"""

from __future__ import annotations

import contextvars
from typing import Any

__all__ = ["CURRENT_RUN", "count_attempt"]

CURRENT_RUN: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "chatstream_current_run", default=None
)
"""The `chatstream.runs.Run` whose code is executing (typed loosely: see the module docstring)."""


def count_attempt() -> None:
    """Count one request sent on behalf of the current run (its first, or a retry)."""
    run = CURRENT_RUN.get()
    if run is not None:
        run.attempts += 1
