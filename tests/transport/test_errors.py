"""Status and body to errors: classes, messages, codes, request ids, excerpts, redaction."""

from __future__ import annotations

import json

import pytest

from chatstream.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ProviderError,
    RateLimitError,
    ServerError,
)
from chatstream.transport._errors import (
    BODY_EXCERPT,
    body_excerpt,
    describe_body,
    error_class,
    redact,
    request_id,
    status_error,
)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, BadRequestError),
        (413, BadRequestError),
        (422, BadRequestError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, OverloadedError),
        (529, OverloadedError),
        (418, ProviderError),
        (302, ProviderError),
    ],
)
def test_error_class(status: int, cls: type[ProviderError]) -> None:
    assert error_class(status) is cls


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"error": {"message": "m", "type": "t", "code": "c"}}', ("m", "c")),
        ('{"error": {"message": "m", "type": "t", "code": null}}', ("m", "t")),
        ('{"error": {"message": "m", "type": "BadRequestError", "code": 400}}', ("m", "400")),
        (
            '{"type": "error", "error": {"type": "overloaded_error", "message": "m"}}',
            ("m", "overloaded_error"),
        ),
        ('{"error": "model not found"}', ("model not found", None)),
        ('{"detail": "Invalid API key"}', ("Invalid API key", None)),
        ('{"detail": [{"loc": ["body"], "msg": "x"}]}', ('[{"loc": ["body"], "msg": "x"}]', None)),
        ('{"object": "error", "message": "m", "code": 400}', ("m", "400")),
        ("<html>Bad Gateway</html>", (None, None)),
        ("[1, 2]", (None, None)),
        ("", (None, None)),
    ],
)
def test_describe_body(body: str, expected: tuple[str | None, str | None]) -> None:
    assert describe_body(body) == expected


def test_body_excerpt_is_bounded() -> None:
    assert body_excerpt("short") == "short"
    cut = body_excerpt("x" * 2000)
    assert len(cut) == BODY_EXCERPT
    assert cut.endswith("…")


def test_request_id_headers() -> None:
    assert request_id({"x-request-id": "a"}) == "a"
    assert request_id({"request-id": "b"}) == "b"
    assert request_id({}) is None


def test_status_error_fields_and_redaction() -> None:
    body = json.dumps({"error": {"message": "bad key sk-SECRET here", "code": "invalid_api_key"}})
    error = status_error(
        401,
        "Unauthorized",
        {"x-request-id": "req_1"},
        body,
        provider="openai",
        retry_after=None,
        secrets=["sk-SECRET"],
    )
    assert isinstance(error, AuthenticationError)
    assert (error.status, error.request_id, error.code) == (401, "req_1", "invalid_api_key")
    assert error.message == "bad key *** here"
    assert error.body is not None
    assert "sk-SECRET" not in error.body
    assert "sk-SECRET" not in str(error)


def test_status_error_without_a_readable_body() -> None:
    error = status_error(502, "Bad Gateway", {}, "<html/>", provider="p", retry_after=3.0)
    assert isinstance(error, ServerError)
    assert error.message == "HTTP 502 Bad Gateway"
    assert error.retry_after == 3.0
    assert error.body == "<html/>"


def test_redact_ignores_empty_secrets() -> None:
    assert redact("abc", ["", "b"]) == "a***c"
