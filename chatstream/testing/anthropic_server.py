"""`AnthropicServer`: a local, scriptable ``POST /v1/messages`` server for tests.

It reproduces the Messages API's validation, error bodies and streaming event sequence, plus the
deviations selected through `Faults`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import string
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, final

from aiohttp import web

from chatstream._compat import override

from ._base import LocalServer, RecordedRequest
from ._script import Faults, ScriptedReply, ScriptedToolCall, derived_id, estimate_prompt_tokens
from ._sse_writer import SSEEvent, dump_json

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["AnthropicServer", "Faults", "RecordedRequest", "ScriptedReply", "ScriptedToolCall"]

#: Status -> (error.type, message) of scripted HTTP errors (§2.5 of the wire reference).
_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per "
        "minute. Please try again later.",
    ),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
#: ScriptedReply.finish_reason -> stop_reason; anything else is sent as scripted.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_STREAM_ERROR = {"type": "overloaded_error", "message": "Overloaded"}
_BASE62 = string.ascii_letters + string.digits
#: The live API writes ping data with spaces, unlike every other event.
_PING = SSEEvent('{"type": "ping"}', event="ping")

# One content block: (content_block_start payload, its deltas, the finished block).
_Block = tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]


@final
class AnthropicServer(LocalServer):
    """A faithful local Anthropic Messages server (``POST /v1/messages``).

    Example:
        ``async with AnthropicServer(replies=[ScriptedReply.from_text("Hi")]) as server:`` then
        point a client at ``server.base_url`` (``http://127.0.0.1:PORT``, the SDK adds ``/v1``).

    A reply becomes content blocks in this order: one ``thinking`` block from
    ``reasoning_chunks`` (closed by a ``signature_delta``), one ``text`` block from
    ``refusal_chunks`` + ``text_chunks``, one ``tool_use`` block per tool call. Finish reasons map
    ``stop``/``length``/``tool_calls``/``content_filter`` to ``end_turn``/``max_tokens``/
    ``tool_use``/``refusal``; other values (``pause_turn``, ``stop_sequence``, ...) pass
    through. Tool-call ids starting with ``toolu_`` are kept, others become a stable ``toolu_``
    id derived from them. Other paths answer Anthropic's JSON 404.

    Args:
        replies: Replies used in turn, cycling; defaults to a short greeting.
        faults: Fault switches; defaults to none. ``error_event`` replaces the in-stream error
            object, ``omit_done`` drops ``message_stop``.
        api_key: When set, requests need ``x-api-key: <api_key>`` (or ``Authorization: Bearer``).
        model: The ``model`` reported in responses; defaults to echoing the request's.
        message_id: A fixed message ``id`` (default: a random ``msg_01...``).
        ping: Send a ``ping`` event after the first ``content_block_start``, as the API does.
    """

    request_id_header = "request-id"

    def __init__(
        self,
        replies: Sequence[ScriptedReply] = (),
        faults: Faults | None = None,
        *,
        api_key: str | None = None,
        model: str | None = None,
        message_id: str | None = None,
        ping: bool = True,
    ) -> None:
        super().__init__(replies, faults, api_key=api_key)
        self.model = model
        self.message_id = message_id
        self.ping = ping

    @override
    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    @override
    def _request_id(self) -> str:
        return _random_id("req_01")

    @override
    async def _decorate_response(self, request: web.Request, response: web.StreamResponse) -> None:
        reset = (datetime.now(timezone.utc) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for kind, limit in (("requests", 4000), ("tokens", 2000000)):
            prefix = f"anthropic-ratelimit-{kind}"
            response.headers.setdefault(f"{prefix}-limit", str(limit))
            response.headers.setdefault(f"{prefix}-remaining", str(limit - 1))
            response.headers.setdefault(f"{prefix}-reset", reset)
        await super()._decorate_response(request, response)

    def _error(self, status: int, type_: str, message: str) -> web.Response:
        request_id = self._request_id()
        body = {"type": "error", "error": {"type": type_, "message": message}}
        body["request_id"] = request_id
        text = json.dumps(body, separators=(",", ":"))
        response = web.Response(status=status, text=text, content_type="application/json")
        # The same id in header and body, as the API sends it.
        response.headers["request-id"] = request_id
        return response

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return self._error(404, "not_found_error", "Not Found")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._receive(request)
        faults = self.faults
        denied = self._check_auth(recorded)
        if denied is not None:
            return self._error(401, "authentication_error", denied)
        if "anthropic-version" not in recorded.headers:
            return self._error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        body = recorded.body
        problem = _invalid_request(body)
        if problem is not None:
            return self._error(400, "invalid_request_error", problem)
        if self._take_failure():
            return self._scripted_error(body["model"])
        reply = self._next_reply()
        prompt, completion = reply.token_counts(estimate_prompt_tokens(body["messages"]))
        extra = {
            k: v
            for k, v in (reply.usage or {}).items()
            if k not in ("prompt_tokens", "completion_tokens")
        }
        stop_reason = _STOP_REASONS.get(reply.finish_reason, reply.finish_reason)
        stops = body.get("stop_sequences") or [None]
        head = {
            "id": self.message_id or _random_id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": self.model or body["model"],
        }
        outcome = {
            "stop_reason": stop_reason,
            "stop_sequence": stops[0] if stop_reason == "stop_sequence" else None,
        }
        blocks = _blocks(reply)
        output_tokens = max(1, completion)
        if body.get("stream") is True:
            start_usage = {"input_tokens": prompt, "output_tokens": 1} | extra
            events = self._events(head, blocks, start_usage, outcome, output_tokens, faults)
            return await self._stream(request, events, faults)
        usage = {
            "input_tokens": prompt,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "service_tier": "standard",
        } | extra
        message = head | {"content": [final for _, _, final in blocks]} | outcome
        message["usage"] = usage
        return web.Response(text=dump_json(message, faults), content_type="application/json")

    def _check_auth(self, recorded: RecordedRequest) -> str | None:
        """Return the 401 message, or ``None`` when the request may pass."""
        if self.api_key is None:
            return None
        key = recorded.headers.get("x-api-key")
        scheme, _, token = recorded.headers.get("authorization", "").partition(" ")
        if key is None and scheme.lower() == "bearer":
            key = token.strip()
        if key is None:
            return "x-api-key header is required"
        return None if key == self.api_key else "invalid x-api-key"

    def _scripted_error(self, model: Any) -> web.Response:
        status = self.faults.http_error or 500
        verbatim = self._verbatim_error(status)
        if verbatim is not None:
            return verbatim
        default = _STATUS_ERRORS[500] if status >= 500 else _STATUS_ERRORS[400]
        type_, message = _STATUS_ERRORS.get(status, default)
        return self._error(status, type_, message.format(model=model))

    def _events(
        self,
        head: dict[str, Any],
        blocks: list[_Block],
        start_usage: dict[str, Any],
        outcome: dict[str, Any],
        output_tokens: int,
        faults: Faults,
    ) -> list[SSEEvent]:
        def event(payload: dict[str, Any]) -> SSEEvent:
            return SSEEvent(dump_json(payload, faults), event=payload["type"])

        # Key order as recorded: content before model, unlike the non-streaming body.
        message = {"id": head["id"], "type": "message", "role": "assistant", "content": []}
        message |= {"model": head["model"], "stop_reason": None, "stop_sequence": None}
        message["usage"] = start_usage
        events = [event({"type": "message_start", "message": message})]
        if self.ping and not blocks:
            events.append(_PING)
        for index, (start, deltas, _) in enumerate(blocks):
            events.append(
                event({"type": "content_block_start", "index": index, "content_block": start})
            )
            if self.ping and index == 0:
                events.append(_PING)
            events += [
                event({"type": "content_block_delta", "index": index, "delta": delta})
                for delta in deltas
            ]
            if not (faults.unclosed_last_block and index == len(blocks) - 1):
                events.append(event({"type": "content_block_stop", "index": index}))
        usage = {"output_tokens": output_tokens}
        events.append(event({"type": "message_delta", "delta": outcome, "usage": usage}))
        if not faults.omit_done:
            events.append(event({"type": "message_stop"}))
        return events

    async def _stream(
        self, request: web.Request, events: list[SSEEvent], faults: Faults
    ) -> web.StreamResponse:
        error = {"type": "error", "error": faults.error_event or _STREAM_ERROR}
        # The live API spaces error data like ping data.
        error_events = [SSEEvent(json.dumps(error), event="error")]
        response = web.StreamResponse(status=200)
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        response.headers["Cache-Control"] = "no-cache"
        return await self._play(request, response, faults, events, error_events)


def _random_id(prefix: str) -> str:
    # The API's ids: a typed prefix, then 22 base62 characters.
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(22))


def _blocks(reply: ScriptedReply) -> list[_Block]:
    blocks: list[_Block] = []
    if reply.reasoning_chunks:
        # Signatures are opaque; deriving one from the text keeps transcripts reproducible.
        digest = hashlib.sha256(reply.reasoning.encode()).digest() * 3
        signature = base64.b64encode(digest).decode()
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in reply.reasoning_chunks]
        deltas.append({"type": "signature_delta", "signature": signature})
        blocks.append(
            (
                {"type": "thinking", "thinking": "", "signature": ""},
                deltas,
                {"type": "thinking", "thinking": reply.reasoning, "signature": signature},
            )
        )
    pieces = reply.refusal_chunks + reply.text_chunks
    if pieces:
        blocks.append(
            (
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": piece} for piece in pieces],
                {"type": "text", "text": "".join(pieces)},
            )
        )
    for call in reply.tool_calls:
        call_id = call.id
        if not call_id.startswith("toolu_"):
            call_id = derived_id(call.id, "toolu_01", 22, _BASE62)
        head = {"type": "tool_use", "id": call_id, "name": call.name}
        # A tool block always opens with an empty fragment before the argument text.
        fragments = ["", *call.argument_chunks]
        blocks.append(
            (
                head | {"caller": {"type": "direct"}, "input": {}},
                [{"type": "input_json_delta", "partial_json": piece} for piece in fragments],
                head | {"input": call.parsed_arguments},
            )
        )
    return blocks


def _invalid_request(body: Any) -> str | None:
    """Return the API's 400 message for a body it would reject, else ``None``."""
    if not isinstance(body, dict):
        return "There was an error parsing the body of your request: expected a JSON object."
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            return f"{field}: Field required"
    if not isinstance(body["model"], str):
        return "model: Input should be a valid string"
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 0:
        return "max_tokens: Input should be greater than or equal to 0"
    messages = body["messages"]
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    problem = _invalid_messages(messages)
    if problem is not None:
        return problem
    problem = _invalid_tools(body.get("tools"), body.get("tool_choice"))
    if problem is not None:
        return problem
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= max_tokens:
            return "`max_tokens` must be greater than `thinking.budget_tokens`."
    return None


_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_TOOL_CHOICES = ("auto", "any", "tool", "none")


def _invalid_tools(tools: Any, choice: Any) -> str | None:
    """The API's 400 message for tool definitions or a tool choice it refuses, else ``None``."""
    if tools is not None and not isinstance(tools, list):
        return "tools: Input should be a valid list"
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict):
            return f"tools.{i}: Input should be a valid dictionary"
        if "type" in tool and tool["type"] != "custom":
            continue  # a server tool (web search, ...): its own schema
        where = f"tools.{i}.custom"
        if not isinstance(tool.get("name"), str):
            return f"{where}.name: Field required"
        if not _TOOL_NAME.fullmatch(tool["name"]):
            return f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            return f"{where}.input_schema: Field required"
        if schema.get("type") != "object":
            return f"{where}.input_schema.type: Input should be 'object'"
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in _TOOL_CHOICES:
        expected = ", ".join(f"'{c}'" for c in _TOOL_CHOICES)
        return (
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
            f"expected tags: {expected}"
        )
    if kind == "tool":
        names = [t.get("name") for t in tools or () if isinstance(t, dict)]
        if not isinstance(choice.get("name"), str):
            return "tool_choice.tool.name: Field required"
        if choice["name"] not in names:
            return f"Tool '{choice['name']}' not found in provided tools"
    return None


def _invalid_messages(messages: list[Any]) -> str | None:
    pending: set[str] = set()  # tool_use ids the next message must answer
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{i}: Input should be a valid dictionary"
        role = message.get("role")
        if role == "system":
            return (
                'messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if "content" not in message:
            return f"messages.{i}.content: Field required"
        content = message["content"]
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        answered = {str(b.get("tool_use_id")) for b in blocks if b.get("type") == "tool_result"}
        if pending - answered:
            return _unanswered(i - 1, pending - answered)
        if answered - pending:
            return (
                f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{', '.join(sorted(answered - pending))}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )
        pending = {str(b.get("id")) for b in blocks if b.get("type") == "tool_use"}
    return _unanswered(len(messages) - 1, pending) if pending else None


def _unanswered(at: int, ids: set[str]) -> str:
    return (
        f"messages.{at}: `tool_use` ids were found without `tool_result` blocks immediately "
        f"after: {', '.join(sorted(ids))}. Each `tool_use` block must have a corresponding "
        "`tool_result` block in the next message."
    )
