"""`ChatOllama`: Ollama's native chat API (``POST /api/chat``), streamed as NDJSON.

The wire format is in ``protocols.md`` section 3 ("Ollama native"): the request in 3.1, the
line stream and its final ``done`` line in 3.2, tool calls in 3.3, errors in 3.4.
"""

from __future__ import annotations

import os
from secrets import token_hex
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, final

from pydantic import Field, PrivateAttr, SecretStr

from .._compat import override
from ..errors import InputTypeError, InvalidInputError, StreamInterruptedError
from ..messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolCallChunk,
    ToolMessage,
)
from ..model import BaseChatModel
from ..settings import PerCall, Stop
from ..tools import ToolSupport
from ..transport.http import HTTPClient, PoolStats, Timeout
from ..transport.ndjson import NDJSONDecoder
from ._chunks import new_chunk
from ._common import (
    URL,
    ErrorEvent,
    Headers,
    TimeoutSetting,
    dump_arguments,
    http_client,
    request_target,
    thinking_block,
    usage_metadata,
)
from ._http import Request, copy_settings, stream_chunks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

__all__ = ["ChatOllama", "Timeout"]

PROVIDER = "ollama"
DEFAULT_BASE_URL = "http://localhost:11434"

_DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
"""Timings of the ``done`` line, in nanoseconds, kept in ``response_metadata`` by name."""

_THINKING_INDEX = 0
"""Ollama streams one thinking text per answer, before the content: one block, index 0."""


# -- request ------------------------------------------------------------------------------------

_ROLES = frozenset({"system", "user", "assistant", "tool"})
"""The roles a `ChatMessage` may have (the server lower-cases them)."""


def _to_wire(messages: list[BaseMessage], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The request body for ``messages`` under ``settings`` (protocols.md §3.1).

    Args:
        messages: The conversation.
        settings: ``model`` and the call's resolved settings (``None`` means unset), each
            put at its wire path: ``options`` (model options) first, then the convenience
            settings that set one option each (``max_tokens`` is ``options.num_predict``).

    Raises:
        InvalidInputError: A `ChatMessage` role Ollama has no place for, or an image given
            by URL; ``where`` names the message.
        InputTypeError: A message type Ollama cannot take.
    """
    tool_names = {
        call["id"]: call["name"]
        for message in messages
        if isinstance(message, AIMessage)
        for call in message.tool_calls
    }
    body: dict[str, Any] = {
        "model": settings["model"],
        "messages": [
            _message_to_wire(message, f"messages[{position}]", tool_names)
            for position, message in enumerate(messages)
        ],
        "stream": True,
    }
    copy_settings(body, settings, ChatOllama.settings_spec.wire)
    if (response_format := settings.get("response_format")) is not None:
        body["format"] = _format_to_wire(response_format)
    return body


def _format_to_wire(response_format: Mapping[str, Any]) -> str | dict[str, Any]:
    """OpenAI's ``response_format`` as Ollama's ``format``: ``"json"`` or the schema itself."""
    match response_format:
        case {"type": "json_schema", "json_schema": {"schema": dict(schema)}}:
            return schema
        case {"type": "json_object"}:
            return "json"
        case _:
            raise InvalidInputError(
                "expected {'type': 'json_object'} or a json_schema format",
                where="response_format",
            )


def _message_to_wire(
    message: BaseMessage, where: str, tool_names: Mapping[str | None, str]
) -> dict[str, Any]:
    if isinstance(message, AIMessageChunk):
        message = message.to_message()
    match message:
        case HumanMessage():
            return _with_images({"role": "user"}, message.content, where)
        case AIMessage():
            return _assistant_to_wire(message)
        case SystemMessage():
            return {"role": "system", "content": message.text}
        case ToolMessage():
            wire = {"role": "tool", "content": message.text, "tool_call_id": message.tool_call_id}
            name = message.name or tool_names.get(message.tool_call_id)
            if name:
                wire["tool_name"] = name  # what servers before tool_call_id pair results by
            return wire
        case ChatMessage(role=role) if role.lower() in _ROLES:
            return _with_images({"role": role.lower()}, message.content, where)
        case ChatMessage(role=role):
            raise InvalidInputError(
                f"Ollama has no {role!r} role (use system, user, assistant or tool)", where=where
            )
        case _:
            raise InputTypeError(f"ChatOllama cannot send a {type(message).__name__}", where=where)


def _with_images(
    wire: dict[str, Any], content: str | list[dict[str, Any]], where: str
) -> dict[str, Any]:
    if isinstance(content, str):
        wire["content"] = content
        return wire
    texts, images = [], []
    for block in content:
        match block:
            case {"type": "text", "text": str(text)}:
                texts.append(text)
            case {"type": "image_url", "image_url": image_url}:
                images.append(_base64_image(image_url, where))
            case {"type": "image", "source": {"type": "base64", "data": str(data)}}:
                images.append(data)
    wire["content"] = "".join(texts)
    if images:
        wire["images"] = images
    return wire


def _base64_image(image_url: str | dict[str, Any], where: str) -> str:
    url = image_url if isinstance(image_url, str) else str(image_url.get("url", ""))
    head, comma, data = url.partition(",")
    if not (url.startswith("data:") and comma and head.endswith(";base64")):
        raise InvalidInputError(
            "Ollama takes images as base64 data (a data: URL), not as web addresses", where=where
        )
    return data


def _assistant_to_wire(message: AIMessage) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": "assistant", "content": message.text}
    if isinstance(message.content, list):
        thinking = "".join(
            str(block.get("thinking") or "")
            for block in message.content
            if block.get("type") == "thinking"
        )
        if thinking:
            wire["thinking"] = thinking
    # Arguments travel as objects; a broken call goes back with none, so its result still pairs.
    calls = [(call["id"], call["name"], call["args"]) for call in message.tool_calls]
    calls += [(call["id"], call["name"] or "", {}) for call in message.invalid_tool_calls]
    if calls:
        wire["tool_calls"] = [
            {"function": {"name": name, "arguments": args}} | ({"id": call_id} if call_id else {})
            for call_id, name, args in calls
        ]
    return wire


# -- response -----------------------------------------------------------------------------------


def _new_call_id() -> str:
    # The shape Ollama gives its own ids (server/routes.go toolCallId): call_ + 8 characters.
    return "call_" + token_hex(4)


def _to_chunk(
    line: Any, *, calls_before: int = 0, new_id: Callable[[], str] = _new_call_id
) -> AIMessageChunk | None:
    """The chunk for one decoded line, or ``None`` when it holds nothing to stream.

    Content streams as plain strings; thinking as ``{"type": "thinking", "thinking": ...,
    "index": 0}`` blocks, as `ChatAnthropic` streams it. Each tool call arrives whole, and its
    object arguments become one JSON fragment. The ``done`` line carries the finish reason,
    the usage (absent counts are 0) and the durations.

    Args:
        line: One NDJSON value.
        calls_before: Tool calls seen earlier in the response: the index of this line's first
            call, and what makes ``done_reason`` ``stop`` read ``tool_calls``.
        new_id: Makes an id for a call that has none (servers before ids existed).

    Raises:
        ErrorEvent: The line is an error report; every line is checked for one first (§3.4).
    """
    match line:
        case {"error": error} if error:
            raise ErrorEvent(error)
        case {"done": True}:
            content, calls = _message_parts(line.get("message"), calls_before, new_id)
            metadata = _done_metadata(line, had_calls=bool(calls_before or calls))
            usage = usage_metadata(
                int(line.get("prompt_eval_count") or 0), int(line.get("eval_count") or 0)
            )
            return new_chunk(content, None, calls, {}, metadata, usage)
        case {"message": dict(message)}:
            content, calls = _message_parts(message, calls_before, new_id)
            if not (content or calls):
                return None
            return new_chunk(content, None, calls, {}, {})
        case _:
            return None


def _message_parts(
    message: Any, calls_before: int, new_id: Callable[[], str]
) -> tuple[str | list[dict[str, Any]], list[ToolCallChunk]]:
    if not isinstance(message, dict):
        return "", []
    text = message.get("content") or ""
    content: str | list[dict[str, Any]] = text
    thinking = message.get("thinking")
    if thinking:
        content = [thinking_block(_THINKING_INDEX, "thinking", thinking)]
        if text:
            content.append({"type": "text", "text": text})
    wire_calls = message.get("tool_calls") or ()
    calls = [
        ToolCallChunk(
            name=(call.get("function") or {}).get("name"),
            args=dump_arguments((call.get("function") or {}).get("arguments")) or "{}",
            id=call.get("id") or new_id(),
            # Calls come whole: each needs an index of its own, whatever the server sent.
            index=calls_before + position,
        )
        for position, call in enumerate(wire_calls)
    ]
    return content, calls


def _done_metadata(line: Mapping[str, Any], *, had_calls: bool) -> dict[str, Any]:
    reason = line.get("done_reason") or "stop"  # omitted when empty (Go omitempty)
    # The native API has no tool-call reason: a stop after tool calls reads as the others do.
    metadata: dict[str, Any] = {
        "finish_reason": "tool_calls" if had_calls and reason == "stop" else reason,
        "done_reason": reason,
    }
    if line.get("model"):
        metadata["model_name"] = line["model"]
    if line.get("created_at"):
        metadata["created_at"] = line["created_at"]
    for name in _DURATIONS:
        if isinstance(line.get(name), int):
            metadata[name] = line[name]
    return metadata


@final
class _StreamState:
    """What one response has shown so far: how many tool calls, and whether it is done."""

    __slots__ = ("calls", "done")

    def __init__(self) -> None:
        self.calls = 0
        self.done = False

    def feed(self, line: Any) -> Sequence[AIMessageChunk]:
        """The chunks of one decoded line."""
        chunk = _to_chunk(line, calls_before=self.calls)
        if chunk is None:
            return ()
        self.calls += len(chunk.tool_call_chunks)
        self.done = "done_reason" in chunk.response_metadata
        return (chunk,)

    def check_end(self) -> None:
        """Raise unless the ``done`` line came (§3.4: a stream without it is truncated)."""
        if not self.done:
            raise StreamInterruptedError(
                "the stream ended without its done line: the response was cut short"
            )

    def final_chunks(self) -> Sequence[AIMessageChunk]:
        """Nothing: the done line itself carries the usage."""
        return ()


def _host_url(host: str) -> str:
    """The base URL for an ``OLLAMA_HOST`` value, read as Ollama reads it.

    Scheme and port are optional: ``"gpu-box"`` is ``http://gpu-box:11434``, ``":8080"`` is
    ``http://127.0.0.1:8080``; with an explicit ``http``/``https`` the port defaults to 80/443
    (envconfig.Host in the Ollama sources).
    """
    scheme, separator, rest = host.strip().partition("://")
    port = "11434"
    if not separator:
        scheme, rest = "http", host.strip()
    elif scheme in ("http", "https"):
        port = "80" if scheme == "http" else "443"
    hostport, slash, path = rest.partition("/")
    name = hostport
    if hostport.startswith("[") and "]" in hostport:
        name, _, tail = hostport[1:].partition("]")
        port = tail[1:] if tail.startswith(":") and tail[1:].isdigit() else port
    elif hostport.count(":") == 1:
        name, given = hostport.split(":")
        port = given if given.isdigit() and int(given) <= 65535 else port
    name = name or "127.0.0.1"
    if ":" in name:
        name = f"[{name}]"
    return f"{scheme}://{name}:{port}" + (f"/{path.rstrip('/')}" if slash and path else "")


def _default_base_url() -> str:
    host = os.environ.get("OLLAMA_HOST", "").strip()
    return _host_url(host) if host else DEFAULT_BASE_URL


# -- the model ----------------------------------------------------------------------------------


@final
class ChatOllama(BaseChatModel):
    """A chat model served by Ollama's native ``/api/chat`` (NDJSON streaming).

    Content streams as plain string chunks and thinking as ``{"type": "thinking", ...}``
    blocks, exactly as with `chatstream.providers.anthropic.ChatAnthropic`. Tool calls arrive
    whole (arguments JSON-dumped into one fragment; an id is made when the server sends none).
    The native API reports ``done_reason: "stop"`` after tool calls; it is normalised to
    ``finish_reason: "tool_calls"`` like the other providers, the raw value stays in
    ``done_reason``. Durations of the ``done`` line are kept in ``response_metadata`` in
    nanoseconds, under their Ollama names.

    Example:
        >>> model = ChatOllama(model="llama3.2", temperature=0)  # doctest: +SKIP
        >>> model.invoke("Say hi").content  # doctest: +SKIP
        'Hi!'
    """

    tool_support: ClassVar[ToolSupport] = ToolSupport(
        tool_choices=frozenset({"auto"}), strict=False
    )
    """The API has no ``tool_choice`` and no strict schemas: a call cannot be forced."""

    model: str = "llama3.2"
    """The model to call (``name:tag``; the tag defaults to ``latest``)."""
    base_url: URL = Field(default_factory=_default_base_url)
    """The server; default: ``OLLAMA_HOST`` (``http://`` and port 11434 added when missing, as
    Ollama does), else ``http://localhost:11434``."""
    api_key: SecretStr | None = None
    """A bearer token, for a server behind an authenticating proxy; none by default."""
    options: Annotated[dict[str, Any] | None, PerCall()] = None
    """Model options (``num_ctx``, ``top_k``, ``repeat_penalty``, ...)."""
    temperature: Annotated[float | None, PerCall("options.temperature")] = None
    """Sampling temperature (the ``temperature`` option)."""
    top_p: Annotated[float | None, PerCall("options.top_p")] = None
    """Nucleus sampling mass (the ``top_p`` option)."""
    seed: Annotated[int | None, PerCall("options.seed")] = None
    """Sampling seed (the ``seed`` option)."""
    max_tokens: Annotated[int | None, PerCall("options.num_predict")] = None
    """Most tokens to generate (the ``num_predict`` option)."""
    stop: Annotated[Stop, PerCall("options.stop")] = None
    """Stop sequences (a string is one; the ``stop`` option); a call's replace them."""
    format: Annotated[Literal["json"] | dict[str, Any] | None, PerCall()] = None
    """``"json"``, or a JSON schema the answer must follow."""
    response_format: Annotated[dict[str, Any] | None, PerCall(converted=True)] = None
    """A format in OpenAI's shape (what ``with_structured_output`` sets), sent as ``format``:
    ``{"type": "json_object"}`` is ``"json"``, a ``json_schema`` format its schema."""
    tools: Annotated[list[dict[str, Any]] | None, PerCall()] = None
    """Tools in OpenAI's format (``{"type": "function", "function": {...}}``)."""
    keep_alive: Annotated[str | float | None, PerCall()] = None
    """How long the model stays loaded after the call (``"5m"``, seconds; 0 unloads)."""
    think: Annotated[bool | Literal["low", "medium", "high", "max"] | None, PerCall()] = None
    """Whether (or how hard) a thinking model thinks; ``None`` leaves the model's default."""
    timeout: TimeoutSetting = Field(default_factory=Timeout)
    """Connect, idle (headers and between lines) and total limits, in seconds; a number is a
    total limit (``timeout=30``)."""
    max_retries: int = Field(default=2, ge=0)
    """Retries of a request that failed before streaming (connection, 408, 409, 429, 5xx)."""
    max_connections: int = Field(default=100, ge=1)
    """Connection pool size per event loop, shared by the models with the same
    ``max_connections`` on that loop (a new model reuses their idle connections)."""
    default_headers: Headers = Field(default_factory=dict)
    """Headers added to every request (credentials among them never show in a repr)."""

    _client: HTTPClient = PrivateAttr()

    @override
    def model_post_init(self, context: Any, /) -> None:
        """Create the HTTP client from the transport settings (no connection is opened)."""
        self._client = http_client(PROVIDER, self)

    def pool_stats(self) -> PoolStats:
        """Connection counts of this model's pool on the running event loop.

        The pool is shared with the models of the same ``max_connections`` on that loop.
        """
        return self._client.stats()

    def _target(self) -> tuple[str, dict[str, str], tuple[str, ...]]:
        headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        secrets = (key,) if key else ()
        return request_target(self.base_url, "/api/chat", headers, self.default_headers, secrets)

    @override
    def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **settings: Any
    ) -> AsyncIterator[AIMessageChunk]:
        # The shared stream itself, closed by whoever consumes it: no generator of its own.
        url, headers, secrets = self._target()
        payload = _to_wire(messages, {**settings, "stop": stop, "model": self.model})
        request = Request(url, payload, headers, secrets)
        return stream_chunks(self._client, request, NDJSONDecoder(), _StreamState())

    @override
    async def _aclose(self) -> None:
        await self._client.aclose()
