"""The pure retry rules: which statuses retry, server hints, and the backoff schedule."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from chatstream.transport._retry import RetryPolicy, parse_retry_after, should_retry_status

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (408, True),
        (409, True),
        (422, False),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (529, True),
    ],
)
def test_statuses(status: int, expected: bool) -> None:
    assert should_retry_status(status, {}) is expected


@pytest.mark.parametrize(
    ("hint", "status", "expected"),
    [("true", 400, True), ("false", 503, False), ("FALSE ", 429, False), ("maybe", 503, True)],
)
def test_x_should_retry_overrides_the_status(hint: str, status: int, expected: bool) -> None:
    assert should_retry_status(status, {"x-should-retry": hint}) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "1.5"}, 0.0015),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "100", "retry-after": "30"}, 0.1),
        ({"retry-after-ms": "junk", "retry-after": "2"}, 2.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": ""}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_parse_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(NOW + 12, tz=timezone.utc)
    assert parse_retry_after({"retry-after": format_datetime(when, usegmt=True)}, now=NOW) == 12
    past = datetime.fromtimestamp(NOW - 60, tz=timezone.utc)
    assert parse_retry_after({"retry-after": format_datetime(past, usegmt=True)}, now=NOW) == 0


def test_backoff_doubles_and_caps() -> None:
    policy = RetryPolicy()
    assert [policy.delay(n, now=NOW, rand=lambda: 0.0) for n in range(7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        8.0,
        8.0,
    ]


@pytest.mark.parametrize("rand", [0.0, 0.3, 0.999999])
def test_jitter_stays_within_three_quarters_and_one(rand: float) -> None:
    delay = RetryPolicy().delay(1, now=NOW, rand=lambda: rand)
    assert 0.75 <= delay <= 1.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "60"}, 60.0),
        ({"retry-after-ms": "5"}, 0.005),
        ({"retry-after": "61"}, 0.5),  # too long to wait: back off instead
        ({"retry-after": "0"}, 0.5),  # zero is not a usable hint
        ({"retry-after": "later"}, 0.5),
    ],
)
def test_server_delay_honoured_only_within_sixty_seconds(
    headers: dict[str, str], expected: float
) -> None:
    assert RetryPolicy().delay(0, headers, now=NOW, rand=lambda: 0.0) == expected


def test_zero_retries_policy() -> None:
    assert RetryPolicy(max_retries=0).max_retries == 0
