"""What a trace holds: a finished `Run` turned into a secret-free row, and `TraceRecord`."""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

from pydantic import BaseModel, ConfigDict, SecretStr

if TYPE_CHECKING:
    from ..runs import Run

__all__ = ["COLUMNS", "TraceRecord", "default_db_path", "run_row"]

COLUMNS = (
    "id",
    "parent_id",
    "name",
    "run_type",
    "tags",
    "metadata",
    "inputs",
    "outputs",
    "invocation_params",
    "environment",
    "start_time",
    "first_token_time",
    "end_time",
    "latency",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "error",
)
"""The columns of the ``runs`` table, in order."""

_SECRET_KEY = re.compile(r"api[-_]?key|authorization|secret|password|token$|^x-api-key$", re.I)
_SECRET_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CHATSTREAM_API_KEY")
_REDACTED = "**redacted**"


def default_db_path() -> Path:
    """The trace database the writer and the readers use when given no other path.

    ``CHATSTREAM_TRACE_DB`` when it is set (and not empty), else
    ``<user data dir>/chatstream/traces.db``. The one place that decides it, so that
    ``list_runs()`` and ``chatstream traces`` read where the tracer wrote.
    """
    configured = os.environ.get("CHATSTREAM_TRACE_DB")
    if configured:
        return Path(configured)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "chatstream" / "traces.db"


def _environment() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        chatstream = version("chatstream")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        chatstream = "unknown"
    return {
        "chatstream": chatstream,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


_ENVIRONMENT: dict[str, str] | None = None


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    # "max_tokens", "input_tokens": counts, not credentials.
    return bool(_SECRET_KEY.search(key)) and not key.lower().endswith("_tokens")


def _scrub(value: Any) -> Any:
    """Drop secrets by key name (``api_key``, ``Authorization``, ...) and `SecretStr` values."""
    if isinstance(value, SecretStr):
        return _REDACTED
    if isinstance(value, dict):
        return {
            key: _REDACTED if _is_secret_key(str(key)) else _scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(item) for item in value]
    if isinstance(value, BaseModel):
        return _scrub(value.model_dump(mode="json"))
    return value


def known_secrets() -> tuple[str, ...]:
    """The API keys in the environment, which a trace must never contain, wherever they hid."""
    return tuple(
        secret for name in _SECRET_ENV if (secret := os.environ.get(name)) and len(secret) >= 8
    )


def _dumps(value: Any, secrets: tuple[str, ...]) -> str:
    text = json.dumps(_scrub(value), default=repr, ensure_ascii=False)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return text


def run_row(run: Run, secrets: tuple[str, ...] | None = None) -> tuple[Any, ...]:
    """A finished run as a row of `COLUMNS`, every JSON column scrubbed of secrets.

    ``secrets`` are the known keys to remove from the text (default: `known_secrets`).
    """
    if secrets is None:
        secrets = known_secrets()
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        _ENVIRONMENT = _environment()
    outputs: Any = run.step_outputs
    usage: dict[str, Any] = {}
    if run.run_type == "chat_model":
        outputs = [output.model_dump(mode="json") for output in run.outputs] if run.items else None
        usage = dict(run.usage or {})
    error = None if run.error is None else f"{type(run.error).__name__}: {run.error}"
    return (
        str(run.id),
        None if run.parent_run_id is None else str(run.parent_run_id),
        run.name,
        run.run_type,
        _dumps(run.tags, secrets),
        _dumps(run.metadata, secrets),
        _dumps(run.inputs, secrets),
        _dumps(outputs, secrets),
        _dumps(run.invocation_params, secrets),
        _dumps(_ENVIRONMENT, secrets),
        run.start_time,
        run.first_token_time,
        run.end_time,
        run.latency,
        usage.get("input_tokens"),
        usage.get("output_tokens"),
        usage.get("total_tokens"),
        None if error is None else _dumps(error, secrets)[1:-1],
    )


@final
class TraceRecord(BaseModel):
    """One traced run, as read back from the store."""

    model_config = ConfigDict(frozen=True)

    id: str
    parent_id: str | None
    name: str
    run_type: str
    tags: list[str]
    metadata: dict[str, Any]
    inputs: Any
    outputs: Any
    invocation_params: dict[str, Any]
    environment: dict[str, str]
    start_time: float
    first_token_time: float | None
    end_time: float | None
    latency: float | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    error: str | None

    @property
    def started(self) -> datetime:
        """``start_time`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.start_time, tz=timezone.utc)
