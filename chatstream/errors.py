"""The one exception hierarchy of chatstream.

::

    ChatStreamError
    ├── ProviderError                 the provider answered with an error
    │   ├── AuthenticationError         401: missing or wrong API key
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404: unknown model or endpoint
    │   ├── BadRequestError             400, 409, 413, 422: the request was refused
    │   ├── RateLimitError              429 (retry_after)
    │   ├── OverloadedError             503, 529, overloaded_error events
    │   └── ServerError                 other 5xx and mid-stream server errors
    ├── APIConnectionError            the provider could not be reached
    │   └── APITimeoutError             connect, idle or total deadline passed
    ├── StreamProtocolError           malformed SSE/NDJSON/JSON (the offending line attached)
    ├── StreamInterruptedError        the stream broke after some chunks (partial attached)
    ├── ClosedError                   a closed model or stream was used
    ├── OutputParserError (ValueError)  structured output that did not parse (raw message kept)
    ├── StepLimitError                the tool loop hit max_steps (the conversation kept)
    ├── InvalidInputError (ValueError)  input that cannot become messages or a prompt
    │   ├── MissingVariableError (KeyError)   a prompt variable without a value
    │   ├── InvalidParameterError (TypeError) an unknown per-call parameter
    │   └── UnsupportedFeatureError           a tool choice or output method the provider lacks
    └── InputTypeError (TypeError)    input of a type chatstream cannot use

Every error raised while a stream was running carries the chunks merged so far in
``partial``; nothing that was received is lost. No message, repr or attribute holds a secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .messages import AIMessage, AIMessageChunk, BaseMessage

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ChatStreamError",
    "ClosedError",
    "InputTypeError",
    "InvalidInputError",
    "InvalidParameterError",
    "MissingVariableError",
    "NotFoundError",
    "OutputParserError",
    "OverloadedError",
    "PermissionDeniedError",
    "ProviderError",
    "RateLimitError",
    "ServerError",
    "StepLimitError",
    "StreamInterruptedError",
    "StreamProtocolError",
    "UnsupportedFeatureError",
]


class ChatStreamError(Exception):
    """Base of every error chatstream raises."""

    partial: AIMessageChunk | None = None
    """The chunks streamed before the error, merged; ``None`` when nothing had arrived."""


class ProviderError(ChatStreamError):
    """The provider answered with an error (an HTTP status or an error event mid-stream).

    Attributes:
        provider: Which provider answered (``"openai"``, ``"anthropic"``, ...).
        status: The HTTP status, or ``None`` for an error event inside a 200 stream.
        request_id: The provider's request id header, when it sent one.
        code: The provider's own error code or type (``"invalid_api_key"``, ...).
        body: An excerpt of the response body (at most a few hundred characters).
        retry_after: Seconds the provider asked to wait before retrying, when it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.request_id = request_id
        self.code = code
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = ", ".join(
            f"{label} {value}"
            for label, value in (
                ("provider", self.provider),
                ("status", self.status),
                ("request id", self.request_id),
                ("code", self.code),
            )
            if value is not None
        )
        return f"{self.message} ({where})" if where else self.message


class AuthenticationError(ProviderError):
    """The API key is missing, wrong or expired (HTTP 401)."""


class PermissionDeniedError(ProviderError):
    """The key may not use this model or endpoint (HTTP 403).

    Named so that it does not shadow the built-in ``PermissionError``.
    """


class NotFoundError(ProviderError):
    """The model or endpoint does not exist (HTTP 404)."""


class BadRequestError(ProviderError):
    """The provider refused the request as malformed or too large (HTTP 400, 409, 413, 422)."""


class RateLimitError(ProviderError):
    """Too many requests or tokens (HTTP 429); ``retry_after`` says how long to wait."""


class OverloadedError(ProviderError):
    """The provider is temporarily overloaded (HTTP 503/529 or an ``overloaded_error`` event)."""


class ServerError(ProviderError):
    """The provider failed internally (HTTP 5xx or an error event mid-stream)."""


class APIConnectionError(ChatStreamError):
    """The provider could not be reached, or the connection broke."""


class APITimeoutError(APIConnectionError):
    """A connect, idle (between chunks) or total deadline passed."""


class StreamProtocolError(ChatStreamError):
    """The stream was not valid SSE, NDJSON or JSON.

    Attributes:
        line: The offending line or event data (an excerpt when long).
    """

    def __init__(self, message: str, *, line: str | None = None) -> None:
        super().__init__(message)
        self.line = line


class StreamInterruptedError(ChatStreamError):
    """The stream broke after some chunks had arrived; ``partial`` holds them merged."""

    def __init__(self, message: str, *, partial: AIMessageChunk | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class ClosedError(ChatStreamError):
    """A model, stream or bridge was used after it was closed."""


class OutputParserError(ChatStreamError, ValueError):
    """A structured answer that is not valid JSON or does not match its schema.

    Attributes:
        raw: The model's whole answer, as it came (its text or tool call holds the output).
        text: The output that failed to parse: the JSON text as the model wrote it.
    """

    def __init__(self, message: str, *, raw: AIMessage, text: str) -> None:
        super().__init__(message)
        self.raw = raw
        self.text = text


class StepLimitError(ChatStreamError):
    """The tool loop made ``max_steps`` model calls and the model still called tools.

    Attributes:
        messages: The whole conversation so far, the last tool results included.
    """

    def __init__(self, message: str, *, messages: list[BaseMessage]) -> None:
        super().__init__(message)
        self.messages = messages


class InvalidInputError(ChatStreamError, ValueError):
    """Input that cannot become messages, a prompt or a call.

    Attributes:
        where: Which part of the input was wrong (``"input[2]"``, ``"temperature"``, ...).
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


class InputTypeError(ChatStreamError, TypeError):
    """Input of a type chatstream cannot use.

    Attributes:
        where: Which part of the input had the wrong type (``"input[0]"``, ...).
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


class MissingVariableError(InvalidInputError, KeyError):
    """A prompt template variable was given no value.

    Attributes:
        variable: The variable's name.
    """

    def __init__(self, variable: str, *, available: list[str]) -> None:
        super().__init__(
            f"missing value for prompt variable {variable!r} (given: {sorted(available)})",
            where=variable,
        )
        self.variable = variable

    def __str__(self) -> str:
        # KeyError.__str__ would show the message in quotes; keep it readable.
        return str(self.args[0])


class InvalidParameterError(InvalidInputError, TypeError):
    """A per-call parameter the model does not know (``model.invoke(x, temprature=0)``)."""


class UnsupportedFeatureError(InvalidInputError):
    """The provider cannot honour what was asked, so it refuses rather than ignore it.

    For example a forced ``tool_choice`` on Ollama (whose API has none), or
    ``with_structured_output(method="json_mode")`` on Anthropic. ``where`` names the argument.
    """
