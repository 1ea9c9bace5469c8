"""`ChatAnthropic`: Anthropic's Messages API (``POST /v1/messages``), streamed.

The wire format is in ``protocols.md`` section 2 ("Anthropic Messages"): the request body in
2.2, the event stream and its accumulation rules in 2.4, errors in 2.5.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated, Any, final

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
from ..transport.http import HTTPClient, PoolStats, Timeout
from ..transport.sse import SSEDecoder
from ._chunks import new_chunk
from ._common import (
    URL,
    ErrorEvent,
    Headers,
    TimeoutSetting,
    env_secret,
    http_client,
    loads,
    request_target,
    require_key,
    thinking_block,
    usage_metadata,
)
from ._http import Request, copy_settings, stream_chunks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from ..transport.sse import Event

__all__ = ["ChatAnthropic", "Timeout"]

PROVIDER = "anthropic"
DEFAULT_BASE_URL = "https://api.anthropic.com"

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""``stop_reason`` → the ``finish_reason`` every provider reports; others pass unchanged."""


# -- request ------------------------------------------------------------------------------------

_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant"}
"""`ChatMessage` roles the API can take, and the role each becomes."""


def _to_wire(messages: list[BaseMessage], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The request body for ``messages`` under ``settings`` (protocols.md §2.2).

    Leading system messages become the top-level ``system``; tool results become
    ``tool_result`` blocks of a user turn; consecutive turns of one role are merged.

    Args:
        messages: The conversation.
        settings: ``model`` and the call's resolved settings (``None`` means unset): each
            goes to the body under its wire name, ``tools`` and ``tool_choice`` converted to
            Anthropic's form, and ``extra_body`` merged over everything else.

    Raises:
        InvalidInputError: A system message after the conversation started, or a
            `ChatMessage` role the API has no place for; ``where`` names the message.
        InputTypeError: A message type the API cannot take.
    """
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        role, blocks = _message_to_wire(message, position)
        if role == "system":
            if turns:
                raise InvalidInputError(
                    "a system message must come before every other message (Anthropic takes "
                    "one system prompt, sent apart from the conversation)",
                    where=f"messages[{position}]",
                )
            system += blocks
        elif turns and turns[-1]["role"] == role:
            turns[-1]["content"] = _join_turn(turns[-1]["content"], blocks, role)
        else:
            turns.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": settings["model"],
        "max_tokens": settings["max_tokens"],
        "messages": [{"role": t["role"], "content": _compact(t["content"])} for t in turns],
        "stream": True,
    }
    if system:
        plain = all(block.keys() == {"type", "text"} for block in system)
        body["system"] = "\n\n".join(b["text"] for b in system) if plain else system
    copy_settings(body, settings, ChatAnthropic.settings_spec.wire)
    if settings.get("tools"):
        body["tools"] = [_tool_to_wire(tool) for tool in settings["tools"]]
    choice, parallel = settings.get("tool_choice"), settings.get("parallel_tool_calls")
    if choice is not None or parallel is False:
        body["tool_choice"] = _tool_choice_to_wire(choice or "auto")
        if parallel is False and body["tool_choice"]["type"] != "none":
            # One call at a time is a property of the choice here (§2.2).
            body["tool_choice"]["disable_parallel_tool_use"] = True
    body.update(settings.get("extra_body") or {})
    return body


def _message_to_wire(message: BaseMessage, position: int) -> tuple[str, list[dict[str, Any]]]:
    """The role and content blocks of one message."""
    if isinstance(message, AIMessageChunk):
        message = message.to_message()
    match message:
        case HumanMessage():
            return "user", _user_blocks(message.content)
        case AIMessage():
            return "assistant", _assistant_blocks(message)
        case SystemMessage():
            return "system", _text_blocks(message.content)
        case ToolMessage():
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content
                if isinstance(message.content, str)
                else _user_blocks(message.content),
            }
            if message.status == "error":
                result["is_error"] = True
            return "user", [result]
        case ChatMessage(role=role) if role.lower() == "system":
            return "system", _text_blocks(message.content)
        case ChatMessage(role=role) if role.lower() in _ROLES:
            return _ROLES[role.lower()], _user_blocks(message.content)
        case ChatMessage(role=role):
            raise InvalidInputError(
                f"Anthropic has no {role!r} role (use user, assistant or system)",
                where=f"messages[{position}]",
            )
        case _:
            raise InputTypeError(
                f"ChatAnthropic cannot send a {type(message).__name__}",
                where=f"messages[{position}]",
            )


def _text_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [_unindexed(block) for block in content if block.get("type") == "text"]


def _user_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return _text_blocks(content)
    blocks = []
    for block in content:
        if block.get("type") == "image_url":
            block = _image(block["image_url"])
        blocks.append(_unindexed(block))
    return blocks


def _image(image_url: str | dict[str, Any]) -> dict[str, Any]:
    """An ``image`` block for an OpenAI-style image URL (a ``data:`` URL or a web address)."""
    url = image_url if isinstance(image_url, str) else str(image_url.get("url", ""))
    head, comma, data = url.partition(",")
    if url.startswith("data:") and comma and head.endswith(";base64"):
        media_type = head[len("data:") : -len(";base64")]
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(message: AIMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for block in _user_blocks(message.content):
        kind = block.get("type")
        if (kind == "text" and not block.get("text")) or (
            # Thinking without a signature (from another provider) would be refused.
            kind == "thinking" and not block.get("signature")
        ):
            continue
        blocks.append(block)
    for call in message.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call["id"], "name": call["name"], "input": call["args"]}
        )
    # A broken call is kept, with no input, so that the tool_result answering it still pairs.
    for broken in message.invalid_tool_calls:
        blocks.append({"type": "tool_use", "id": broken["id"], "name": broken["name"], "input": {}})
    return blocks


def _unindexed(block: dict[str, Any]) -> dict[str, Any]:
    # Streamed blocks carry their stream index; the API refuses the extra key.
    return {k: v for k, v in block.items() if k != "index"} if "index" in block else block


def _join_turn(
    earlier: list[dict[str, Any]], blocks: list[dict[str, Any]], role: str
) -> list[dict[str, Any]]:
    joined = earlier + blocks
    if role == "user":
        # tool_result blocks must open the turn that answers the tool calls (§2.2).
        joined.sort(key=lambda block: block.get("type") != "tool_result")
    return joined


def _compact(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A lone plain text block as a string, which is what the API's own examples send."""
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"} and blocks[0]["type"] == "text":
        return str(blocks[0]["text"])
    return blocks


def _tool_to_wire(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A tool in Anthropic's shape; OpenAI's ``{"type": "function", ...}`` shape is converted."""
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        return dict(tool)
    wire = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        wire["description"] = function["description"]
    if function.get("strict") is not None:
        wire["strict"] = function["strict"]
    return wire


def _tool_choice_to_wire(choice: str | Mapping[str, Any]) -> dict[str, Any]:
    """The API's ``tool_choice`` for a mode, a tool's name, or a dict (the API's or OpenAI's)."""
    if isinstance(choice, str):
        kinds = {"auto": "auto", "any": "any", "required": "any", "none": "none"}
        if choice in kinds:
            return {"type": kinds[choice]}
        return {"type": "tool", "name": choice}
    function = choice.get("function")
    if choice.get("type") == "function" and isinstance(function, dict):
        return {"type": "tool", "name": function["name"]}
    return dict(choice)


# -- response -----------------------------------------------------------------------------------


def _to_chunk(event: Any) -> AIMessageChunk | None:
    """The chunk for one decoded event, or ``None`` when it holds nothing to stream.

    Text streams as plain strings; thinking as ``{"type": "thinking", "thinking" |
    "signature": ..., "index": i}`` blocks that merge by the block index; a ``tool_use`` block
    as tool-call fragments under that index. Usage, and the ``{}`` input of a tool call that
    got no fragment, come from `_StreamState`, which sees the whole stream. Unknown events
    and blocks are ignored (§2.4: new ones may be added).

    Raises:
        ErrorEvent: An ``error`` event.
    """
    match event:
        case {"type": "content_block_delta", "index": int(index), "delta": dict(delta)}:
            return _delta_chunk(index, delta)
        case {"type": "content_block_start", "index": int(index), "content_block": dict(block)}:
            return _block_chunk(index, block)
        case {"type": "message_start", "message": dict(message)}:
            metadata = {}
            if message.get("model"):
                metadata["model_name"] = message["model"]
            if message.get("id"):
                metadata["id"] = message["id"]
            return new_chunk("", message.get("id") or None, [], {}, metadata)
        case {"type": "message_delta", "delta": {"stop_reason": str(reason)} as delta}:
            metadata = {"finish_reason": _FINISH_REASONS.get(reason, reason), "stop_reason": reason}
            for key in ("stop_sequence", "stop_details"):
                if delta.get(key) is not None:
                    metadata[key] = delta[key]
            return new_chunk("", None, [], {}, metadata)
        case {"type": "error", "error": error}:
            raise ErrorEvent(error)
        case _:
            return None  # ping, content_block_stop, message_stop, and event types to come


def _delta_chunk(index: int, delta: Mapping[str, Any]) -> AIMessageChunk | None:
    match delta:
        case {"type": "text_delta", "text": str(text)} if text:
            return new_chunk(text, None, [], {}, {})
        case {"type": "input_json_delta", "partial_json": str(part)} if part:
            call = ToolCallChunk(name=None, args=part, id=None, index=index)
            return new_chunk("", None, [call], {}, {})
        case {"type": "thinking_delta", "thinking": str(text)} if text:
            return new_chunk([thinking_block(index, "thinking", text)], None, [], {}, {})
        case {"type": "signature_delta", "signature": str(signature)}:
            return new_chunk([thinking_block(index, "signature", signature)], None, [], {}, {})
        case {"type": "citations_delta", "citation": citation}:
            return new_chunk("", None, [], {"citations": [citation]}, {})
        case _:
            return None


def _block_chunk(index: int, block: Mapping[str, Any]) -> AIMessageChunk | None:
    match block:
        case {"type": "text", "text": str(text)} if text:
            return new_chunk(text, None, [], {}, {})
        case {"type": "tool_use", "id": str(call_id), "name": str(name)}:
            call = ToolCallChunk(name=name, args="", id=call_id, index=index)
            return new_chunk("", None, [call], {}, {})
        case {"type": "thinking", "thinking": str(text)} if text:
            return new_chunk([thinking_block(index, "thinking", text)], None, [], {}, {})
        case {"type": "redacted_thinking"}:
            # Opaque, but it must go back unchanged with the next turn: kept whole.
            return new_chunk([{**block, "index": index}], None, [], {}, {})
        case _:
            return None


_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


@final
class _StreamState:
    """What one response has shown so far: open tool blocks, the usage, and how it ended."""

    __slots__ = ("done", "finished", "tools", "usage")

    def __init__(self) -> None:
        self.finished = False
        """A ``message_delta`` gave the stop reason."""
        self.done = False
        """``message_stop`` arrived."""
        self.tools: dict[int, str | None] = {}
        """Open ``tool_use`` blocks by index: their start input as JSON until a fragment came."""
        self.usage: dict[str, int] = {}

    def feed(self, event: Event) -> Sequence[AIMessageChunk]:
        """The chunks of one SSE event."""
        if not event.data:
            return ()
        data = loads(event.data)
        if event.event == "error":
            # The event's name decides, not its data's shape: servers that speak this API
            # send ``{"code": 500, "message": ..., "type": "server_error"}`` as well (§2.5).
            error = data.get("error", data) if isinstance(data, dict) else data
            raise ErrorEvent(error)
        return self.feed_value(data)

    def feed_value(self, data: Any) -> Sequence[AIMessageChunk]:
        """The chunks of one decoded event object."""
        if type(data) is not dict:
            return ()
        chunk = _to_chunk(data)
        kind = data.get("type")
        if kind == "content_block_delta":
            if chunk is None:
                return ()
            if chunk.tool_call_chunks:
                if data["index"] not in self.tools:
                    return ()  # the input of a block that is no tool call (a server tool)
                self.tools[data["index"]] = None
            return (chunk,)
        found = [] if chunk is None else [chunk]
        if kind == "content_block_start":
            if chunk is not None and chunk.tool_call_chunks:
                start = data["content_block"].get("input")
                self.tools[data["index"]] = json.dumps(start or {}, ensure_ascii=False)
        elif kind == "content_block_stop":
            found += self._close_tools([data.get("index")])
        elif kind == "message_start":
            self._count((data.get("message") or {}).get("usage"))
        elif kind == "message_delta":
            self._count(data.get("usage"))
            # max_tokens can end a tool block without its content_block_stop (§2.4).
            found[:0] = self._close_tools(list(self.tools))
            self.finished = self.finished or chunk is not None
        elif kind == "message_stop":
            self.done = True
        return found

    def _close_tools(self, indexes: list[Any]) -> list[AIMessageChunk]:
        closed = []
        for index in indexes:
            start = self.tools.pop(index, None)
            if start is not None:  # no fragment came: the input is the start's, ``{}``
                call = ToolCallChunk(name=None, args=start, id=None, index=index)
                closed.append(new_chunk("", None, [call], {}, {}))
        return closed

    def _count(self, usage: Any) -> None:
        # Counts are cumulative: each report replaces the last, never adds to it (§2.4).
        if isinstance(usage, dict):
            for key in _USAGE_KEYS:
                value = usage.get(key)
                if isinstance(value, int):
                    self.usage[key] = value

    def check_end(self) -> None:
        """Raise unless the stream ended normally: after a stop reason or ``message_stop``."""
        if not (self.finished or self.done):
            raise StreamInterruptedError(
                "the stream ended before the model finished (no stop_reason and no "
                "message_stop): the response was cut short"
            )

    def final_chunks(self) -> Sequence[AIMessageChunk]:
        """The usage of the whole response, streamed once, at the end."""
        if not self.usage:
            return ()
        usage = self.usage
        cache_read = usage.get("cache_read_input_tokens", 0)
        cache_creation = usage.get("cache_creation_input_tokens", 0)
        details = {"cache_read": cache_read, "cache_creation": cache_creation}
        total = usage_metadata(
            usage.get("input_tokens", 0) + cache_read + cache_creation,
            usage.get("output_tokens", 0),
            input_details={name: count for name, count in details.items() if count},
        )
        return (new_chunk("", None, [], {}, {}, total),)


# -- the model ----------------------------------------------------------------------------------


@final
class ChatAnthropic(BaseChatModel):
    """A chat model served by Anthropic's Messages API.

    Text streams as plain string chunks. With extended thinking (``thinking={"type":
    "enabled", "budget_tokens": 2048}``), thinking streams as content blocks
    ``{"type": "thinking", "thinking": ..., "index": i}`` (and its ``signature``), so a merged
    answer's content is a list: the thinking blocks, then ``{"type": "text", ...}`` blocks;
    ``message.text`` is the text alone. Sent back in the conversation, thinking blocks go to the
    API unchanged, as it requires. ``finish_reason`` is normalised (``end_turn`` and
    ``stop_sequence`` → ``stop``, ``max_tokens`` → ``length``, ``tool_use`` → ``tool_calls``);
    the raw value stays in ``stop_reason``.

    A missing API key raises `chatstream.errors.AuthenticationError` (``status`` ``None``) at
    the first call, naming ``ANTHROPIC_API_KEY``.

    Example:
        >>> model = ChatAnthropic(model="claude-sonnet-4-5", max_tokens=256)  # doctest: +SKIP
        >>> model.invoke("Say hi").content  # doctest: +SKIP
        'Hi!'
    """

    model: str = "claude-sonnet-4-5"
    """The model to call."""
    api_key: SecretStr | None = Field(default_factory=lambda: env_secret("ANTHROPIC_API_KEY"))
    """The API key (sent as ``x-api-key``); default: ``ANTHROPIC_API_KEY``. Never shown."""
    base_url: URL = Field(
        default_factory=lambda: os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
    )
    """The API root, without ``/v1``; default: ``ANTHROPIC_BASE_URL``, else Anthropic's."""
    anthropic_version: str = "2023-06-01"
    """The ``anthropic-version`` header (the API version)."""
    max_tokens: Annotated[int, PerCall(), Field(ge=1)] = 1024
    """Most tokens to generate; the API requires it (with thinking, above the budget)."""
    temperature: Annotated[float | None, PerCall()] = None
    """Sampling temperature, 0 to 1."""
    top_p: Annotated[float | None, PerCall()] = None
    """Nucleus sampling mass."""
    top_k: Annotated[int | None, PerCall()] = None
    """Sample from the ``top_k`` likeliest tokens only."""
    stop: Annotated[Stop, PerCall("stop_sequences")] = None
    """Stop sequences (a string is one; sent as ``stop_sequences``); a call's replace them."""
    tools: Annotated[list[dict[str, Any]] | None, PerCall(converted=True)] = None
    """Tools in Anthropic's format (``name``, ``description``, ``input_schema``) or OpenAI's."""
    tool_choice: Annotated[str | dict[str, Any] | None, PerCall(converted=True)] = None
    """``"auto"``, ``"any"`` (or ``"required"``), ``"none"``, a tool's name, or the API's dict."""
    parallel_tool_calls: Annotated[bool | None, PerCall(converted=True)] = None
    """``False`` sends ``disable_parallel_tool_use``: at most one tool call per answer."""
    thinking: Annotated[dict[str, Any] | None, PerCall()] = None
    """Extended thinking, e.g. ``{"type": "enabled", "budget_tokens": 2048}``."""
    timeout: TimeoutSetting = Field(default_factory=Timeout)
    """Connect, idle (headers and between chunks) and total limits, in seconds; a number is
    a total limit (``timeout=30``)."""
    max_retries: int = Field(default=2, ge=0)
    """Retries of a request that failed before streaming (connection, 408, 409, 429, 5xx, 529)."""
    max_connections: int = Field(default=100, ge=1)
    """Connection pool size per event loop, shared by the models with the same
    ``max_connections`` on that loop (a new model reuses their idle connections)."""
    default_headers: Headers = Field(default_factory=dict)
    """Headers added to every request (``anthropic-beta``, ...); credentials never show."""
    extra_body: Annotated[dict[str, Any] | None, PerCall(converted=True)] = None
    """Fields merged into the request body last (``metadata``, ``service_tier``, ...)."""

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

    def _target(
        self, path: str = "/v1/messages", *, accept: str = "text/event-stream"
    ) -> tuple[str, dict[str, str], tuple[str, ...]]:
        """The URL of ``path``, the credential headers and the secrets to scrub.

        `chatstream.batch` uses it too, for the provider's other endpoints.
        """
        key = require_key(
            self.api_key,
            provider=PROVIDER,
            hint="no Anthropic API key: set the ANTHROPIC_API_KEY environment variable or "
            "pass ChatAnthropic(api_key=...)",
        )
        headers = {
            "x-api-key": key,
            "anthropic-version": self.anthropic_version,
            "Content-Type": "application/json",
            "Accept": accept,
        }
        return request_target(self.base_url, path, headers, self.default_headers, (key,))

    @override
    def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **settings: Any
    ) -> AsyncIterator[AIMessageChunk]:
        # The shared stream itself, closed by whoever consumes it: no generator of its own.
        url, headers, secrets = self._target()
        payload = _to_wire(messages, {**settings, "stop": stop, "model": self.model})
        request = Request(url, payload, headers, secrets)
        return stream_chunks(self._client, request, SSEDecoder(), _StreamState())

    @override
    async def _aclose(self) -> None:
        await self._client.aclose()
