"""429/503/529 storms: attempts stay within ``max_retries + 1``, server delays are honoured and
capped, and many callers in one storm each keep their own budget.

Delays are checked on what the retry policy computed (the ``retry_delay`` of each
``chatstream.transport`` log record), never on the clock; the clock only feeds the printed
figures.
"""

from __future__ import annotations

import logging
import time

import anyio
import pytest

from chatstream.errors import OverloadedError, ProviderError, RateLimitError
from chatstream.testing.openai_server import Faults, OpenAIServer, ScriptedReply
from chatstream.transport.http import HTTPClient, RetryPolicy
from chatstream.transport.sse import SSEDecoder

from . import _figures
from ._leaks import Baseline, server_connections
from ._providers import KEY, Provider

HI = ScriptedReply(text_chunks=["Hi", "!"])
ERRORS: dict[int, type[ProviderError]] = {
    429: RateLimitError,
    503: OverloadedError,
    529: OverloadedError,
}


def delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [r.retry_delay for r in caplog.records if hasattr(r, "retry_delay")]


@pytest.fixture
def retry_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="chatstream.transport")
    return caplog


@pytest.mark.parametrize("status", sorted(ERRORS))
@pytest.mark.parametrize(
    "asked", [{"retry-after-ms": "15"}, {"retry-after": "0.015"}], ids=["ms", "seconds"]
)
async def test_a_storm_is_retried_max_retries_times_at_the_asked_delay(
    provider: Provider,
    status: int,
    asked: dict[str, str],
    retry_log: pytest.LogCaptureFixture,
) -> None:
    baseline = Baseline()
    async with provider.server([HI], Faults(http_error=status, headers=asked)) as server:
        async with provider.model(server.base_url, max_retries=3) as model:
            with pytest.raises(ERRORS[status]) as caught:
                await model.ainvoke("Hi")
        assert len(server.requests) == 4  # the first attempt and 3 retries
        assert await baseline.settle(("server", lambda: server_connections(server))) == {}
    assert delays(retry_log) == [0.015] * 3
    numbers = [r.retry_number for r in retry_log.records if hasattr(r, "retry_number")]
    assert numbers == [1, 2, 3]
    assert caught.value.status == status
    assert caught.value.retry_after == 0.015


async def test_a_delay_past_the_honoured_maximum_falls_back_to_the_capped_backoff(
    provider: Provider, retry_log: pytest.LogCaptureFixture
) -> None:
    # An hour is not obeyed (max_honoured is 60 s): the client backs off as usual instead.
    faults = Faults(http_error=503, fail_times=1, headers={"retry-after": "3600"})
    async with provider.server([HI], faults) as server:
        async with provider.model(server.base_url, max_retries=1) as model:
            message = await model.ainvoke("Hi")
    policy = RetryPolicy()
    [delay] = delays(retry_log)
    assert policy.initial * (1 - policy.jitter) <= delay <= policy.initial
    assert message.content == "Hi!"
    assert len(server.requests) == 2


async def test_a_delay_past_the_total_deadline_gives_up_without_sleeping(
    provider: Provider, retry_log: pytest.LogCaptureFixture
) -> None:
    faults = Faults(http_error=429, headers={"retry-after": "30"})
    async with provider.server([HI], faults) as server:
        async with provider.model(server.base_url, max_retries=5, total=10) as model:
            with anyio.fail_after(5), pytest.raises(RateLimitError):
                await model.ainvoke("Hi")
    assert delays(retry_log) == []  # 30 s would pass the 10 s deadline: no retry at all
    assert len(server.requests) == 1


async def test_backoff_doubles_up_to_its_cap(retry_log: pytest.LogCaptureFixture) -> None:
    # The cap is the transport's (one retry loop for every provider), so one server suffices.
    policy = RetryPolicy(max_retries=5, initial=0.004, maximum=0.01, jitter=0)
    async with OpenAIServer([HI], Faults(http_error=500), api_key=KEY) as server:
        client = HTTPClient(provider="test", retry=policy)
        stream = client.open_stream(
            server.base_url + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
            headers={"Authorization": f"Bearer {KEY}"},
            decoder=SSEDecoder(),
        )
        try:
            with pytest.raises(ProviderError):  # entering sends: every attempt happens here
                async with stream:
                    pass
        finally:
            await client.aclose()
    assert delays(retry_log) == [0.004, 0.008, 0.01, 0.01, 0.01]
    assert len(server.requests) == 6


@pytest.mark.parametrize("clears", [True, False], ids=["clears", "persists"])
async def test_many_callers_in_one_storm_each_keep_their_budget(
    provider: Provider, clears: bool, retry_log: pytest.LogCaptureFixture
) -> None:
    callers, max_retries = 50, 3
    # "clears": the first 60 requests fail (every first attempt, then 10 retries), so every
    # caller succeeds by its second retry; "persists": every request fails.
    faults = Faults(
        http_error=429, fail_times=60 if clears else None, headers={"retry-after-ms": "10"}
    )
    outcomes: list[str] = []
    async with provider.server([HI], faults) as server:
        async with provider.model(
            server.base_url, max_retries=max_retries, max_connections=callers
        ) as model:

            async def call() -> None:
                try:
                    outcomes.append(str((await model.ainvoke("Hi")).content))
                except RateLimitError:
                    outcomes.append("rate limited")

            started = time.perf_counter()
            async with anyio.create_task_group() as group:
                for _ in range(callers):
                    group.start_soon(call)
            elapsed = time.perf_counter() - started
    numbers = [r.retry_number for r in retry_log.records if hasattr(r, "retry_number")]
    assert max(numbers) <= max_retries
    if clears:
        assert outcomes == ["Hi!"] * callers
        assert len(server.requests) == 60 + callers
    else:
        assert outcomes == ["rate limited"] * callers
        assert len(server.requests) == callers * (max_retries + 1)
    assert set(delays(retry_log)) == {0.01}
    _figures.record(
        f"retry storm ({provider.name}, {'clears' if clears else 'persists'})",
        callers=callers,
        requests=len(server.requests),
        retries=len(numbers),
        seconds=round(elapsed, 3),
    )
