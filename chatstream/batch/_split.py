"""Splitting a batch's rows into provider jobs under the limits of one job (requests, bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from ..errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Limits", "Part", "split"]


@final
@dataclass(frozen=True, slots=True)
class Limits:
    """How much one provider job may hold.

    The defaults of each provider are its documented limits; pass smaller ones to spread a
    batch over more, smaller jobs (they then finish, and can be collected, one by one).

    Attributes:
        max_requests: Most requests in one job (OpenAI 50,000; Anthropic 100,000).
        max_bytes: Most bytes of encoded requests in one job: the JSONL input file for OpenAI
            (200 MB), the request list of the create call for Anthropic (256 MB).
    """

    max_requests: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_requests < 1:
            raise InvalidInputError("must be at least 1", where="limits.max_requests")
        if self.max_bytes < 1:
            raise InvalidInputError("must be at least 1", where="limits.max_bytes")


@final
@dataclass(frozen=True, slots=True)
class Part:
    """One job's share of the rows: ``count`` consecutive rows from ``first``, ``size`` bytes."""

    first: int
    count: int
    size: int


def split(sizes: Sequence[int], limits: Limits, *, overhead: int = 0) -> list[Part]:
    """Cut rows, in order, into as few consecutive parts as the limits allow.

    Consecutive rows keep a job's rows one range, so the manifest finds a row's job by its
    index, and results come back grouped the way they were sent.

    Args:
        sizes: The encoded size of each row, in bytes (its JSONL line, newline included).
        limits: What one part may hold.
        overhead: Bytes a part costs besides its rows (the envelope of a request body).

    Raises:
        InvalidInputError: A row alone is larger than ``max_bytes``; ``where`` names it.
    """
    parts: list[Part] = []
    first = size = 0
    for index, row in enumerate(sizes):
        if row + overhead > limits.max_bytes:
            raise InvalidInputError(
                f"this request takes {row} bytes, more than one batch job may hold "
                f"({limits.max_bytes})",
                where=f"inputs[{index}]",
            )
        count = index - first
        if count and (count >= limits.max_requests or size + row + overhead > limits.max_bytes):
            parts.append(Part(first, count, size + overhead))
            first, size = index, 0
        size += row
    if len(sizes) > first:
        parts.append(Part(first, len(sizes) - first, size + overhead))
    return parts
