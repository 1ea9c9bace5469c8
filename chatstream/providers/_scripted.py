"""What the models that do not sample (the fake and the offline placeholder) share.

They accept and record the common per-call settings, so that code written for a real provider
runs on them unchanged, and honour the two that shape a scripted answer: ``stop`` and
``max_tokens``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ..settings import PerCall, Stop

__all__ = ["CommonSettings", "cut", "split_tokens"]

_TOKEN = re.compile(r"\s*\S+|\s+")


def split_tokens(text: str) -> list[str]:
    """Split text into word-like pieces that keep their leading spaces (``" world"``)."""
    return _TOKEN.findall(text)


class CommonSettings(BaseModel):
    """The per-call settings every provider has, as fields of a model that only records them.

    Only ``stop`` and ``max_tokens`` change a scripted answer; the rest are recorded in the
    run's ``invocation_params`` so that tests can check what the code under test asked for.
    """

    temperature: Annotated[float | None, PerCall()] = None
    """Recorded only."""
    top_p: Annotated[float | None, PerCall()] = None
    """Recorded only."""
    max_tokens: Annotated[int | None, PerCall(), Field(ge=1)] = None
    """The answer stops after this many pieces, with ``finish_reason`` ``"length"``."""
    stop: Annotated[Stop, PerCall()] = None
    """The answer stops before the first of these, with ``finish_reason`` ``"stop"``."""
    seed: Annotated[int | None, PerCall()] = None
    """Recorded only."""
    tools: Annotated[list[dict[str, Any]] | None, PerCall()] = None
    """Recorded only."""
    tool_choice: Annotated[str | dict[str, Any] | None, PerCall()] = None
    """Recorded only."""
    parallel_tool_calls: Annotated[bool | None, PerCall()] = None
    """Recorded only."""
    response_format: Annotated[dict[str, Any] | None, PerCall()] = None
    """Recorded only."""


def cut(
    pieces: list[str], stop: list[str] | None, max_tokens: int | None, finish_reason: str
) -> tuple[list[str], str]:
    """The pieces an answer streams under ``stop`` and ``max_tokens``, and its finish reason."""
    text = "".join(pieces)
    at = min((i for i in (text.find(s) for s in stop or () if s) if i >= 0), default=-1)
    if at >= 0:
        kept: list[str] = []
        for piece in pieces:
            room = at - sum(map(len, kept))
            if room <= 0:
                break
            kept.append(piece[:room])
        pieces, finish_reason = kept, "stop"
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces, finish_reason = pieces[:max_tokens], "length"
    return pieces, finish_reason
