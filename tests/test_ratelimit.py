"""Rate limits: budgets waited for before a call, corrected by usage and by the server."""

from __future__ import annotations

import json
import time
from collections import deque
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from chatstream.providers.fake import FakeChatModel
from chatstream.providers.openai import ChatOpenAI
from chatstream.ratelimit import RateLimiter, parse_reset, shared_limiter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_wait_for_the_bucket_to_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_minute=120, clock=clock)  # 2/s, a burst of 2
    assert limiter.wait_for(0) == 0
    limiter.take(0)
    limiter.take(0)
    assert limiter.wait_for(0) == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.wait_for(0) == 0


def test_try_take_takes_only_what_may_be_spent_now() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_minute=60, tokens_per_minute=600, clock=clock)
    first = limiter.try_take(10)  # a burst of one request and 10 tokens
    assert first is not None
    assert first.tokens == 10
    assert limiter.try_take(1) is None  # the request bucket is spent: nothing more is taken
    clock.now += 1.0
    assert limiter.wait_for(10) == 0  # so the refill is whole again
    assert limiter.try_take(10) is not None


def test_tokens_are_estimated_then_settled_from_usage() -> None:
    clock = Clock()
    limiter = RateLimiter(tokens_per_minute=600, clock=clock)  # 10 tokens/s, a burst of 10
    reservation = limiter.take(10)
    assert limiter.wait_for(5) == pytest.approx(0.5)
    limiter.settle(reservation, used_tokens=4)  # it used fewer than estimated: 6 come back
    assert limiter.wait_for(5) == 0
    limiter.settle(limiter.take(1), used_tokens=11)  # more: the difference is owed
    assert limiter.wait_for(5) == pytest.approx(1.0)


def test_the_server_knows_best() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_minute=6000, clock=clock)
    limiter.observe(
        200, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    )
    assert limiter.wait_for(0) == pytest.approx(2.0)
    clock.now += 2.0
    assert limiter.wait_for(0) == 0
    limiter.observe(429, {"retry-after-ms": "750"})
    assert limiter.wait_for(0) == pytest.approx(0.75)
    limiter.observe(429, {})  # no hint: a second
    assert limiter.wait_for(0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("soon", None)],
)
def test_reset_durations(value: str, seconds: float | None) -> None:
    assert parse_reset(value, now=0.0) == (None if seconds is None else pytest.approx(seconds))


def test_reset_as_an_rfc3339_time() -> None:
    assert parse_reset("1970-01-01T00:00:10Z", now=4.0) == pytest.approx(6.0)


def test_shared_limiters_are_one_per_name() -> None:
    first = shared_limiter("test-account", requests_per_minute=60)
    assert shared_limiter("test-account", requests_per_minute=60) is first
    with pytest.raises(ValueError, match="test-account"):
        shared_limiter("test-account", requests_per_minute=120)
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimiter(requests_per_minute=0)


async def test_a_model_takes_and_settles_through_the_run_loop() -> None:
    limiter = RateLimiter(tokens_per_minute=60_000)
    model = FakeChatModel(responses=["a b c"], rate_limiter=limiter, max_tokens=50)
    before = limiter.wait_for(1000)
    await model.ainvoke("x" * 40)  # estimated 10 + 50 tokens, used 3 + 1: settled to that
    assert limiter.wait_for(1000) == pytest.approx(before, abs=0.01)


class Enforcing:
    """An OpenAI-style server that allows ``limit`` requests per second and 429s the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.recent: deque[float] = deque()
        self.accepted = 0
        self.refused = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        now = time.monotonic()
        while self.recent and now - self.recent[0] >= 1.0:
            self.recent.popleft()
        if len(self.recent) >= self.limit:
            self.refused += 1
            error = {"error": {"message": "Rate limit reached", "type": "requests"}}
            return web.json_response(error, status=429, headers={"retry-after-ms": "200"})
        self.recent.append(now)
        self.accepted += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for delta, finish in (({"content": "ok"}, None), ({}, "stop")):
            chunk = {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response


async def _serve(server: Enforcing) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def _run(limiter: RateLimiter | None) -> tuple[Enforcing, list[Exception | None]]:
    server = Enforcing(limit=10)
    async for url in _serve(server):
        async with ChatOpenAI(base_url=url, max_retries=2, rate_limiter=limiter) as model:
            async with model.amap([f"q{i}" for i in range(24)], max_concurrency=12) as rows:
                errors = [row.error async for row in rows if not row.ok]
    return server, errors


async def test_under_a_configured_budget_the_429s_go_away() -> None:
    unlimited, _ = await _run(None)
    # 8/s with little burst: never more than 10 in any second, the server's sliding window.
    limited, errors = await _run(RateLimiter(requests_per_minute=8 * 60, burst_seconds=0.1))
    assert unlimited.refused > 0  # 12 at once against 10 a second
    assert limited.refused == 0
    assert errors == []
    assert limited.accepted == 24
