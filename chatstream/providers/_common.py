"""What the HTTP providers share: in-stream error mapping, usage, thinking blocks, keys, JSON.

Only rules that are the same for every provider live here; each wire format stays in its module.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, SecretStr

from .._json import loads
from ..errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ProviderError,
    RateLimitError,
    ServerError,
    StreamProtocolError,
)
from ..messages import UsageMetadata
from ..transport.http import HTTPClient, Timeout, error_class, redact

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from ..ratelimit import RateLimiter

__all__ = [
    "URL",
    "ErrorEvent",
    "Headers",
    "TimeoutSetting",
    "dump_arguments",
    "env_secret",
    "http_client",
    "loads",
    "map_stream_errors",
    "redact_url",
    "request_target",
    "require_key",
    "stream_error",
    "thinking_block",
    "usage_metadata",
]

_EXCERPT = 500
"""Characters of an in-stream error object kept as the error's body."""

# In-stream error objects carry no HTTP status, so their class comes from the type or code
# they name (OpenAI, Anthropic, vLLM, llama.cpp spellings); anything else is a server failure.
_ERROR_KINDS: dict[str, type[ProviderError]] = {
    "invalid_request_error": BadRequestError,
    "BadRequestError": BadRequestError,
    "context_length_exceeded": BadRequestError,
    "exceed_context_size_error": BadRequestError,
    "request_too_large": BadRequestError,
    "authentication_error": AuthenticationError,
    "invalid_api_key": AuthenticationError,
    "permission_error": PermissionDeniedError,
    "billing_error": ProviderError,
    "not_found_error": NotFoundError,
    "NotFoundError": NotFoundError,
    "model_not_found": NotFoundError,
    "rate_limit_exceeded": RateLimitError,
    "rate_limit_error": RateLimitError,
    "overloaded_error": OverloadedError,
    "server_is_overloaded": OverloadedError,
    "service_unavailable_error": OverloadedError,
    "unavailable_error": OverloadedError,
}


class ErrorEvent(Exception):
    """An error object the server sent inside a 200 stream (raised by a provider's `_to_chunk`)."""

    def __init__(self, error: Any) -> None:
        super().__init__("error event")
        self.error = error


def stream_error(error: Any, *, provider: str, secrets: Sequence[str] = ()) -> ProviderError:
    """The chatstream error for an in-stream error object, with ``secrets`` scrubbed.

    Understood: ``{"type", "message"}`` (Anthropic), ``{"message", "type", "code"}`` (OpenAI;
    an int ``code`` is the HTTP status for vLLM and llama.cpp) and a bare string (Ollama).
    """
    body = redact(json.dumps(error, ensure_ascii=False), secrets)
    if not isinstance(error, dict):
        message = redact(error, secrets) if isinstance(error, str) else body
        return ServerError(message, provider=provider, body=body[:_EXCERPT])
    message = redact(str(error.get("message") or ""), secrets) or (
        "the server reported an error mid-stream"
    )
    code, kind = error.get("code"), error.get("type")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        cls = error_class(code)
    else:
        cls = _ERROR_KINDS.get(str(code), _ERROR_KINDS.get(str(kind), ServerError))
    label = code if code not in (None, "") else kind
    return cls(
        str(message),
        provider=provider,
        code=None if label is None else str(label),
        body=body[:_EXCERPT],
    )


@contextmanager
def map_stream_errors(provider: str, secrets: Sequence[str] = ()) -> Iterator[None]:
    """Translate what goes wrong inside a 200 stream into chatstream errors.

    HTTP statuses are mapped by the transport; this covers an `ErrorEvent` (an error object
    where a chunk was expected) and data that is not JSON. ``secrets`` (the request's
    credentials, which a server may echo) are scrubbed from both, as from HTTP error bodies.
    """
    try:
        yield
    except ErrorEvent as event:
        raise stream_error(event.error, provider=provider, secrets=secrets) from None
    except json.JSONDecodeError as exc:
        raise StreamProtocolError(
            f"a data event of the stream is not JSON ({exc.msg})",
            line=redact(exc.doc[:200], secrets),
        ) from exc


def dump_arguments(value: Any) -> str | None:
    """Tool-call arguments as JSON text: a string is kept, an object (Ollama, Anthropic) dumped."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def usage_metadata(
    input_tokens: int,
    output_tokens: int,
    *,
    total_tokens: int | None = None,
    input_details: Mapping[str, int] | None = None,
    output_details: Mapping[str, int] | None = None,
) -> UsageMetadata:
    """Token counts in chatstream's shape; empty detail dicts are left out."""
    usage = UsageMetadata(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total_tokens or input_tokens + output_tokens,
    )
    if input_details:
        usage["input_token_details"] = dict(input_details)
    if output_details:
        usage["output_token_details"] = dict(output_details)
    return usage


def thinking_block(index: int, key: str, value: str) -> dict[str, Any]:
    """A streamed piece of a thinking content block.

    Every provider streams reasoning the same way: ``{"type": "thinking", key: value, "index":
    index}`` where ``key`` is ``"thinking"`` (text) or ``"signature"``. Pieces with the same
    ``index`` merge into one block; the visible text streams beside them as plain strings.
    """
    return {"type": "thinking", key: value, "index": index}


def env_secret(name: str) -> SecretStr | None:
    """The environment variable ``name`` as a secret, ``None`` when unset or empty."""
    value = os.environ.get(name)
    return SecretStr(value) if value else None


def require_key(key: SecretStr | None, *, provider: str, hint: str) -> str:
    """The API key's value, or an `AuthenticationError` (``status`` ``None``) saying what to set.

    Raising the same class as a refused key lets one ``except AuthenticationError`` cover both.
    """
    value = key.get_secret_value() if key is not None else ""
    if not value:
        raise AuthenticationError(hint, provider=provider)
    return value


def _as_timeout(value: Any) -> Any:
    # A number is a total limit, as in httpx and the openai SDK (`timeout=30`).
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Timeout(total=float(value))
    return value


TimeoutSetting = Annotated[Timeout, BeforeValidator(_as_timeout)]
"""The type of every model's ``timeout``: a `Timeout`, or a number of seconds for the total."""


_REDACTED = "**********"
"""What a secret shows as (pydantic's `SecretStr` shows the same)."""

_SHORTEST_SECRET = 6
"""Header and URL credentials shorter than this are not scrubbed from text (see below)."""

_SECRET_HEADER_PARTS = ("auth", "key", "token", "secret", "cookie", "signature", "password")
"""Words that make a header's value a secret: Authorization, x-api-key, api-key, X-Auth-Token..."""


def is_secret_header(name: str) -> bool:
    """Whether a header's value is a credential (by its name, case-insensitively)."""
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_HEADER_PARTS)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with every credential's value replaced by asterisks."""
    return {name: _REDACTED if is_secret_header(name) else value for name, value in headers.items()}


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo (``http://user:KEY@host``) replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{_REDACTED}@{host}"))


class _HeaderDict(dict[str, str]):
    """A headers dict whose repr hides credentials (models show their fields in reprs)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(redact_headers(self))


class _URLStr(str):
    """A URL whose repr hides the password of its userinfo."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str.__repr__(redact_url(str(self)))


Headers = Annotated[dict[str, str], AfterValidator(_HeaderDict), PlainSerializer(redact_headers)]
"""The type of every ``default_headers``: credentials never show in a repr or a dump."""

URL = Annotated[str, AfterValidator(_URLStr), PlainSerializer(redact_url)]
"""The type of every ``base_url``: a password in it never shows in a repr or a dump."""


def request_target(
    base_url: str,
    path: str,
    headers: dict[str, str],
    default_headers: Mapping[str, str],
    secrets: tuple[str, ...],
) -> tuple[str, dict[str, str], tuple[str, ...]]:
    """The URL, headers and secrets of a request to ``base_url + path``.

    The userinfo of ``base_url`` is taken out of the URL, so that no URL in an error or a log
    carries a password; it becomes a Basic ``Authorization`` header unless the request has
    one already (an API key). ``default_headers`` go over ``headers``; every credential's
    value joins ``secrets``, to be scrubbed from whatever the server echoes.
    """
    # Every call of a model asks the same question: the answer is kept (by value, so that a
    # model whose settings are changed gets a new one). The caller owns the dict it gets.
    url, merged, found = _target(
        base_url, path, tuple(headers.items()), tuple(default_headers.items()), secrets
    )
    return url, dict(merged), found


@functools.lru_cache(maxsize=256)
def _target(
    base_url: str,
    path: str,
    headers: tuple[tuple[str, str], ...],
    default_headers: tuple[tuple[str, str], ...],
    secrets: tuple[str, ...],
) -> tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]]:
    parts = urlsplit(base_url.rstrip("/") + path)
    found = list(secrets)
    merged = {**dict(headers), **dict(default_headers)}
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        if not any(name.lower() == "authorization" for name in merged):
            merged["Authorization"] = f"Basic {token}"
        found += [password, token]
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    found += [value for name, value in merged.items() if is_secret_header(name)]
    # The whole header value and its bare token: a server may echo either. Very short values
    # ("1") are left alone: scrubbing them would mangle every message.
    found += [value.split(" ", 1)[1] for value in found if " " in value]
    kept = [item for item in found if len(item) >= _SHORTEST_SECRET or item in secrets]
    return (
        urlunsplit(parts),
        tuple(merged.items()),
        tuple(dict.fromkeys(item for item in kept if item)),
    )


class _TransportSettings(Protocol):
    @property
    def timeout(self) -> Timeout: ...
    @property
    def max_retries(self) -> int: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def rate_limiter(self) -> RateLimiter | None: ...


def http_client(provider: str, settings: _TransportSettings) -> HTTPClient:
    """The HTTP client of a model, from its transport settings and its rate limiter.

    The limiter, if any, is told of every response. No connection is opened until the first
    request.
    """
    limiter = settings.rate_limiter
    return HTTPClient(
        provider=provider,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        max_connections=settings.max_connections,
        on_response=None if limiter is None else limiter.observe,
    )
