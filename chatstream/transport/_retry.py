"""The retry policy: which failures to retry and how long to wait, from status, headers and attempt.

Pure functions over plain values (no I/O, no clock of their own), so every rule is unit-tested.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after", "should_retry_status"]

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Statuses below 500 worth retrying: timeout, conflict, rate limit (every 5xx is retried too)."""


def should_retry_status(status: int, headers: Mapping[str, str]) -> bool:
    """Whether a response with ``status`` is worth another attempt.

    The server's ``x-should-retry: true|false`` overrides the status (OpenAI and Anthropic send
    it); otherwise 408, 409, 429 and every 5xx are retried.

    Args:
        status: The HTTP status.
        headers: The response headers; names are looked up lower-case (aiohttp's are
            case-insensitive).
    """
    hint = headers.get("x-should-retry")
    if hint is not None:
        hint = hint.strip().lower()
        if hint == "true":
            return True
        if hint == "false":
            return False
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """The delay in seconds the server asked for, or ``None`` when it named none it could.

    ``retry-after-ms`` (milliseconds, float) wins over ``retry-after`` (seconds, float, or an
    HTTP-date). Unparseable, non-finite and negative values count as absent.

    Args:
        headers: The response headers (lower-case lookups).
        now: The current time as a Unix timestamp, to turn an HTTP-date into a delay.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        delay = _float(raw_ms)
        if delay is not None:
            return delay / 1000
    raw = headers.get("retry-after")
    if raw is None:
        return None
    delay = _float(raw)
    if delay is not None:
        return delay
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive result means it said so implicitly
        return None
    return max(0.0, when.timestamp() - now)


def _float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


@final
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry, and the backoff between attempts.

    The delay before retry ``n`` (0-based) is the server's ``retry-after-ms``/``retry-after``
    when it is in ``(0, max_honoured]`` seconds, else ``initial * 2**n`` capped at ``maximum``
    and multiplied by a jitter factor drawn from ``[1 - jitter, 1]``.

    Attributes:
        max_retries: Retries after the first attempt (0 disables retrying).
        initial: The first backoff delay in seconds.
        maximum: The cap of the exponential backoff in seconds.
        jitter: The largest fraction taken off a backoff delay at random.
        max_honoured: The longest server-requested delay obeyed, in seconds.
    """

    max_retries: int = 2
    initial: float = 0.5
    maximum: float = 8.0
    jitter: float = 0.25
    max_honoured: float = 60.0

    def delay(
        self,
        retry: int,
        headers: Mapping[str, str] | None = None,
        *,
        now: float,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry).

        Args:
            retry: How many retries were made before this one.
            headers: The failed response's headers, if there was a response.
            now: The current Unix time (for an HTTP-date ``retry-after``).
            rand: A source of floats in ``[0, 1)``, for the jitter.
        """
        if headers is not None:
            asked = parse_retry_after(headers, now=now)
            if asked is not None and 0 < asked <= self.max_honoured:
                return asked
        backoff = min(self.initial * 2.0**retry, self.maximum)
        return backoff * (1 - self.jitter * rand())
