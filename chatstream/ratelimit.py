"""Client-side rate limits: requests and tokens per minute, shared by the calls that use them.

A `RateLimiter` holds two token buckets. A call takes one request and an estimate of its
tokens before it starts (waiting while either bucket is short), and the estimate is corrected
from the usage the provider reports. The server's own view wins: ``x-ratelimit-*`` and
``anthropic-ratelimit-*`` headers lower what the buckets hold, and a 429's ``retry-after``
pauses every call sharing the limiter. Retrying stays the transport's job: the limiter only
decides when a call may start. Give one to a model (``rate_limiter=``), or share one by name
across models and providers with `shared_limiter`.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, final

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

    from .messages import AIMessageChunk

__all__ = [
    "RateLimiter",
    "Reservation",
    "estimate_tokens",
    "limited_stream",
    "parse_reset",
    "shared_limiter",
]

_DEFAULT_OUTPUT_TOKENS = 256
"""Output tokens assumed for a call with no ``max_tokens``, until its usage corrects it."""

_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str, *, now: float) -> float | None:
    """Seconds until a rate-limit window resets; ``None`` when unreadable.

    Read: a duration (``"1s"``, ``"6m0s"``, ``"20ms"``: OpenAI) or an RFC 3339 time
    (Anthropic).
    """
    value = value.strip()
    parts = list(_DURATION.finditer(value))
    if parts and "".join(part.group(0) for part in parts) == value:
        return sum(float(part["value"]) * _SECONDS[part["unit"]] for part in parts)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(moment.timestamp() - now, 0.0)


@final
@dataclass(slots=True)
class _Bucket:
    capacity: float
    rate: float  # units per second
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 when it is now)."""
        short = min(amount, self.capacity) - self.level
        return 0.0 if short <= 0 else short / self.rate


@final
@dataclass(frozen=True, slots=True)
class Reservation:
    """What a call took from a limiter: one request and ``tokens`` (an estimate)."""

    tokens: int


@final
class RateLimiter:
    """Requests-per-minute and tokens-per-minute budgets for the calls that share it.

    Args:
        requests_per_minute: The request budget; ``None`` for no limit on requests.
        tokens_per_minute: The token budget (input plus output); ``None`` for none.
        burst_seconds: How much of the budget may be spent at once: the buckets hold this
            many seconds' worth (at least one request), so a minute's budget is not sent in
            one burst that a server's shorter windows would refuse.
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
            ("burst_seconds", burst_seconds),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self._clock = clock
        now = clock()
        self._requests = _bucket(requests_per_minute, burst_seconds, now)
        self._tokens = _bucket(tokens_per_minute, burst_seconds, now)
        self._paused_until = 0.0

    def __repr__(self) -> str:
        budget = {
            "requests_per_minute": self._requests and self._requests.rate * 60,
            "tokens_per_minute": self._tokens and self._tokens.rate * 60,
        }
        shown = ", ".join(f"{key}={value:g}" for key, value in budget.items() if value)
        return f"RateLimiter({shown})"

    def wait_for(self, tokens: int) -> float:
        """Seconds a call of ``tokens`` must wait now (0: it may start)."""
        now = self._clock()
        wait = self._paused_until - now
        if (requests := self._requests) is not None:
            requests.refill(now)
            wait = max(wait, requests.wait_for(1))
        if (budget := self._tokens) is not None:
            budget.refill(now)
            wait = max(wait, budget.wait_for(tokens))
        return max(wait, 0.0)

    def take(self, tokens: int) -> Reservation:
        """Take one request and ``tokens`` now (the buckets may go below zero)."""
        if self._requests is not None:
            self._requests.level -= 1
        if self._tokens is not None:
            self._tokens.level -= tokens
        return Reservation(tokens)

    def try_take(self, tokens: int) -> Reservation | None:
        """Take one request and ``tokens`` if a call may start now; ``None`` if it must wait."""
        return self.take(tokens) if self.wait_for(tokens) <= 0 else None

    async def acquire(self, tokens: int) -> Reservation:
        """Wait until a call of (an estimated) ``tokens`` may start, and take them."""
        # Sleeping for the computed wait, not waiting on an event: the buckets refill with
        # time, and nothing signals that.
        while (wait := self.wait_for(tokens)) > 0:  # noqa: ASYNC110
            await anyio.sleep(wait)
        return self.take(tokens)

    def settle(self, reservation: Reservation, used_tokens: int | None) -> None:
        """Correct a reservation from the tokens the call really used (``None``: unknown)."""
        if self._tokens is not None and used_tokens is not None:
            self._tokens.level += reservation.tokens - used_tokens

    def observe(self, status: int, headers: Mapping[str, str], *, now: float | None = None) -> None:
        """Adapt to a response: its remaining budgets, and a 429's ``retry-after``.

        Called by the transport for every response of a model that uses this limiter.
        """
        wall = time.time() if now is None else now
        for bucket, names in (
            (self._requests, _REQUEST_HEADERS),
            (self._tokens, _TOKEN_HEADERS),
        ):
            remaining, reset = _read(headers, names, wall)
            if bucket is not None and remaining is not None:
                bucket.refill(self._clock())
                bucket.level = min(bucket.level, remaining)
            if remaining == 0 and reset is not None:
                self._pause(reset)
        if status == 429:
            retry = _retry_after(headers)
            self._pause(1.0 if retry is None else retry)

    def _pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)


def _bucket(per_minute: float | None, burst_seconds: float, now: float) -> _Bucket | None:
    if per_minute is None:
        return None
    rate = per_minute / 60.0
    capacity = max(rate * burst_seconds, 1.0)
    return _Bucket(capacity, rate, capacity, now)


_REQUEST_HEADERS = (
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
)
_TOKEN_HEADERS = (
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
)


def _read(
    headers: Mapping[str, str], names: tuple[tuple[str, str], ...], now: float
) -> tuple[float | None, float | None]:
    for remaining_name, reset_name in names:
        remaining = headers.get(remaining_name)
        if remaining is None:
            continue
        try:
            count = float(remaining)
        except ValueError:
            continue
        reset = headers.get(reset_name)
        return count, None if reset is None else parse_reset(reset, now=now)
    return None, None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
    return None


def estimate_tokens(texts: list[str], max_tokens: int | None) -> int:
    """A call's tokens before it runs: about four characters a token, plus its output budget."""
    return sum(map(len, texts)) // 4 + (max_tokens or _DEFAULT_OUTPUT_TOKENS)


async def limited_stream(
    limiter: RateLimiter, tokens: int, open_stream: Callable[[], AsyncIterator[AIMessageChunk]]
) -> AsyncGenerator[AIMessageChunk, None]:
    """``open_stream()``'s chunks, started once ``limiter`` allows; the usage settles it."""
    # Most calls need not wait: taking at once spares them a coroutine.
    reservation = limiter.try_take(tokens) or await limiter.acquire(tokens)
    used: int | None = None
    chunks = open_stream()
    try:
        async for chunk in chunks:
            if (usage := chunk.usage_metadata) is not None:
                used = (used or 0) + usage["total_tokens"]
            yield chunk
    finally:
        limiter.settle(reservation, used)
        if (aclose := getattr(chunks, "aclose", None)) is not None:
            await aclose()


_shared: dict[str, RateLimiter] = {}


def shared_limiter(
    name: str,
    *,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    burst_seconds: float = 1.0,
) -> RateLimiter:
    """The process-wide limiter called ``name`` (one per API key or account, say).

    The first call creates it with these budgets; later ones return the same limiter (and
    their budgets must match, or it raises `ValueError`).
    """
    limiter = _shared.get(name)
    wanted = RateLimiter(
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        burst_seconds=burst_seconds,
    )
    if limiter is None:
        _shared[name] = limiter = wanted
    elif repr(limiter) != repr(wanted):
        raise ValueError(f"the shared limiter {name!r} is {limiter!r}, not {wanted!r}")
    return limiter
