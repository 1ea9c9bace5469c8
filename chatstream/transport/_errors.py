"""Translate HTTP failures into the `chatstream.errors` tree, once, at the transport boundary.

A status and body become a `ProviderError` subclass; an aiohttp or OS exception becomes a
connection, timeout or interruption error. No aiohttp type leaves ``transport/``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import aiohttp

from chatstream.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ChatStreamError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ProviderError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "BODY_EXCERPT",
    "body_excerpt",
    "describe_body",
    "error_class",
    "map_client_error",
    "redact",
    "request_id",
    "status_error",
]

BODY_EXCERPT = 500
"""Characters of a response body kept on an error."""

_STATUS_CLASSES: dict[int, type[ProviderError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: BadRequestError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    503: OverloadedError,
    529: OverloadedError,
}


def error_class(status: int) -> type[ProviderError]:
    """The error class for an HTTP status (other 5xx: `ServerError`; anything else: the base)."""
    cls = _STATUS_CLASSES.get(status)
    if cls is not None:
        return cls
    return ServerError if 500 <= status <= 599 else ProviderError


def request_id(headers: Mapping[str, str]) -> str | None:
    """The provider's request id: OpenAI's ``x-request-id`` or Anthropic's ``request-id``."""
    return headers.get("x-request-id") or headers.get("request-id")


def body_excerpt(text: str) -> str:
    """The first `BODY_EXCERPT` characters of a body, marked when cut."""
    return text if len(text) <= BODY_EXCERPT else text[: BODY_EXCERPT - 1] + "…"


def describe_body(text: str) -> tuple[str | None, str | None]:
    """The message and code of an error body, for the common JSON envelopes.

    Understood: ``{"error": {"message", "code"|"type"}}`` (OpenAI, Anthropic, vLLM, llama.cpp;
    an int ``code`` is kept as text), ``{"error": "..."}`` (Ollama), ``{"detail": ...}``
    (FastAPI servers) and an unwrapped ``{"message", "code"}``. Anything else gives
    ``(None, None)`` and the caller falls back to the status line.
    """
    try:
        data = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    if isinstance(error, str):
        return error, None
    if isinstance(error, dict):
        return _text(error.get("message")), _code(error)
    detail = data.get("detail")
    if detail is not None:
        return (detail if isinstance(detail, str) else json.dumps(detail)), None
    return _text(data.get("message")), _code(data)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _code(error: Mapping[str, Any]) -> str | None:
    code = error.get("code")
    if code is None or code == "":
        code = error.get("type")
    return None if code is None or isinstance(code, (dict, list)) else str(code)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret found in ``text`` with ``***`` (servers echo keys back)."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def status_error(
    status: int,
    reason: str | None,
    headers: Mapping[str, str],
    body: str,
    *,
    provider: str,
    retry_after: float | None,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """Build the error for an HTTP error response.

    Args:
        status: The HTTP status.
        reason: The status line's reason phrase.
        headers: The response headers.
        body: The response body as text (only an excerpt is kept).
        provider: The provider's name, recorded on the error.
        retry_after: The delay the server asked for, if any.
        secrets: Values to scrub from the message and body (the request's credentials).
    """
    secrets = tuple(secrets)
    message, code = describe_body(body)
    if message is None:
        message = f"HTTP {status} {reason or ''}".rstrip()
    return error_class(status)(
        redact(message, secrets),
        provider=provider,
        status=status,
        request_id=request_id(headers),
        code=code,
        body=redact(body_excerpt(body), secrets),
        retry_after=retry_after,
    )


def map_client_error(exc: BaseException, *, in_body: bool, url: str) -> ChatStreamError:
    """The chatstream error for an exception raised by aiohttp or the socket.

    Args:
        exc: What aiohttp raised.
        in_body: Whether the response had started (the stream broke) or not (no answer).
        url: The request URL, for the message (it never holds a credential).
    """
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        phase = "waiting for the next chunk" if in_body else "waiting for the server"
        return APITimeoutError(f"timed out {phase} ({url}): {_why(exc)}")
    if isinstance(exc, aiohttp.InvalidURL):
        return InvalidInputError(f"not a usable URL: {url}", where="base_url")
    if in_body:
        return StreamInterruptedError(f"the response stream from {url} broke: {_why(exc)}")
    return APIConnectionError(f"could not get a response from {url}: {_why(exc)}")


def _why(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
