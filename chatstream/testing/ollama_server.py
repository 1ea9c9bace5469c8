"""`OllamaServer`: a local, scriptable Ollama ``POST /api/chat`` server (NDJSON) for tests.

It reproduces Ollama's request handling, error bodies and line sequence, plus the deviations
selected through `Faults`.
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, final

from aiohttp import web

from chatstream._compat import override

from ._base import LocalServer, RecordedRequest
from ._script import Faults, ScriptedReply, ScriptedToolCall, derived_id, estimate_prompt_tokens
from ._sse_writer import SSEEvent, dump_json

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Faults", "OllamaServer", "RecordedRequest", "ScriptedReply", "ScriptedToolCall"]

#: Status -> ``error`` string of scripted HTTP errors; others use the status phrase.
_STATUS_ERRORS = {
    401: "unauthorized",
    404: "model '{model}' not found",
    500: "llama runner process has terminated: exit status 2",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
_STREAM_ERROR = "an error was encountered while running the model"
#: ScriptedReply.finish_reason -> done_reason: the native API has no tool-call reason.
_DONE_REASONS = {"tool_calls": "stop"}
_METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


@final
class OllamaServer(LocalServer):
    """A faithful local Ollama chat server (``POST /api/chat``, NDJSON streaming).

    Example:
        ``async with OllamaServer(replies=[ScriptedReply.from_text("Hi")]) as server:`` then
        point a client at ``server.base_url`` (``http://127.0.0.1:PORT``).

    ``stream`` defaults to true. A reply streams ``reasoning_chunks`` as ``message.thinking``
    lines, then ``refusal_chunks`` + ``text_chunks`` as content lines, then each tool call whole
    in one line (``arguments`` parsed into an object), then the ``done`` line with
    ``done_reason`` (``tool_calls`` becomes ``stop``) and nanosecond metrics, each omitted when
    0. ``usage`` may set ``prompt_tokens``/``completion_tokens`` or any metric by its Ollama name.
    Tool-call ids starting with ``call_`` are kept, others become a stable ``call_xxxxxxxx``.
    An empty ``messages`` list loads (``done_reason: "load"``) or, with ``keep_alive: 0``,
    unloads the model. Other paths answer Gin's plain-text 404.

    Args:
        replies: Replies used in turn, cycling; defaults to a short greeting.
        faults: Fault switches; defaults to none. ``error_event_after`` ends the stream with an
            ``{"error": ...}`` line (text from ``error_event["message"]`` when given),
            ``omit_done`` drops the ``done`` line, ``comments`` adds empty lines.
        api_key: When set, requests need ``Authorization: Bearer <api_key>`` (as behind a proxy).
        models: Installed models; other names get a 404. ``None`` accepts every name.
        created_at: A fixed ``created_at`` for every line (default: now, in nanoseconds).
    """

    request_id_header = None

    def __init__(
        self,
        replies: Sequence[ScriptedReply] = (),
        faults: Faults | None = None,
        *,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        created_at: str | None = None,
    ) -> None:
        super().__init__(replies, faults, api_key=api_key)
        self.models = None if models is None else [_full_name(name) for name in models]
        self.created_at = created_at

    @override
    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self._chat)
        app.router.add_get("/", self._root)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    async def _root(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.Response(text="Ollama is running")

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.Response(status=404, text="404 page not found")

    def _error(self, status: int, message: str) -> web.Response:
        # Gin's c.JSON: compact JSON with a charset.
        text = json.dumps({"error": message}, separators=(",", ":"))
        return web.Response(
            status=status, text=text, content_type="application/json", charset="utf-8"
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._receive(request)
        faults = self.faults
        problem = self._check(recorded)
        if problem is not None:
            return self._error(*problem)
        body = recorded.body
        model = body["model"]
        if self._take_failure():
            return self._scripted_error(model)
        messages = body.get("messages") or []
        if not messages:
            reason = "unload" if body.get("keep_alive") in (0, "0", "0s") else "load"
            line = self._line(model, {"role": "assistant", "content": ""}, done=True)
            return self._json(line | {"done_reason": reason}, faults)
        refused = _invalid_format(body.get("format"))
        if refused is not None:
            # Found while loading the grammar, after the request was accepted: the handler's
            # first streamed value is the error, which it sends as a 500 (server/routes.go).
            return self._error(500, refused)
        reply = self._next_reply()
        calls = [self._tool_call(k, call, faults) for k, call in enumerate(reply.tool_calls)]
        done: dict[str, Any] = {
            "done_reason": _DONE_REASONS.get(reply.finish_reason, reply.finish_reason)
        }
        done |= _metrics(reply, estimate_prompt_tokens(messages))
        if body.get("stream") is False:
            message: dict[str, Any] = {"role": "assistant", "content": reply.refusal + reply.text}
            if reply.reasoning_chunks:
                message["thinking"] = reply.reasoning
            if calls:
                message["tool_calls"] = calls
            return self._json(self._line(model, message, done=True) | done, faults)
        return await self._stream(request, model, reply, calls, done, faults)

    def _check(self, recorded: RecordedRequest) -> tuple[int, str] | None:
        """Return ``(status, error)`` for a request Ollama refuses before streaming."""
        if self.api_key is not None:
            scheme, _, key = recorded.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or key.strip() != self.api_key:
                return 401, "unauthorized"
        raw, body = recorded.raw_body, recorded.body
        if not raw.strip():
            return 400, "missing request body"
        if body is None:
            first = raw.decode(errors="replace").lstrip()[:1]
            return 400, f"invalid character '{first}' looking for beginning of value"
        if not isinstance(body, dict):
            kind = "array" if isinstance(body, list) else type(body).__name__
            return 400, f"json: cannot unmarshal {kind} into Go value of type api.ChatRequest"
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return 400, "model is required"
        messages = body.get("messages")
        if messages is not None and not isinstance(messages, list):
            return 400, (
                f"json: cannot unmarshal {type(messages).__name__} into Go struct field "
                "ChatRequest.messages of type []api.Message"
            )
        if self.models is not None and _full_name(model) not in self.models:
            return 404, f"model '{model}' not found"
        top = body.get("top_logprobs")
        if isinstance(top, int) and not 0 <= top <= 20:
            return 400, "top_logprobs must be between 0 and 20"
        return None

    def _scripted_error(self, model: str) -> web.Response:
        status = self.faults.http_error or 500
        verbatim = self._verbatim_error(status)
        if verbatim is not None:
            return verbatim
        try:
            default = HTTPStatus(status).phrase.lower()
        except ValueError:
            default = "error"
        return self._error(status, _STATUS_ERRORS.get(status, default).format(model=model))

    def _json(self, value: dict[str, Any], faults: Faults) -> web.Response:
        return web.Response(
            text=dump_json(value, faults), content_type="application/json", charset="utf-8"
        )

    def _line(self, model: str, message: dict[str, Any], *, done: bool) -> dict[str, Any]:
        created = self.created_at or _rfc3339_nano(time.time_ns())
        return {"model": model, "created_at": created, "message": message, "done": done}

    def _tool_call(self, index: int, call: ScriptedToolCall, faults: Faults) -> dict[str, Any]:
        function = {"index": index, "name": call.name, "arguments": call.parsed_arguments}
        if faults.omit_tool_call_ids:
            del function["index"]
            return {"function": function}
        call_id = call.id if call.id.startswith("call_") else derived_id(call.id, "call_", 8)
        return {"id": call_id, "function": function}

    async def _stream(
        self,
        request: web.Request,
        model: str,
        reply: ScriptedReply,
        calls: list[dict[str, Any]],
        done: dict[str, Any],
        faults: Faults,
    ) -> web.StreamResponse:
        messages: list[dict[str, Any]] = [
            {"role": "assistant", "content": "", "thinking": piece}
            for piece in reply.reasoning_chunks
        ]
        messages += [
            {"role": "assistant", "content": piece}
            for piece in reply.refusal_chunks + reply.text_chunks
        ]
        messages += [{"role": "assistant", "content": "", "tool_calls": [call]} for call in calls]
        lines = [self._line(model, message, done=False) for message in messages]
        if not faults.omit_done:
            lines.append(self._line(model, {"role": "assistant", "content": ""}, done=True) | done)
        events = [SSEEvent(dump_json(line, faults)) for line in lines]
        custom = (faults.error_event or {}).get("message")
        error = {"error": custom if isinstance(custom, str) else _STREAM_ERROR}
        response = web.StreamResponse(status=200)
        response.content_type = "application/x-ndjson"
        return await self._play(
            request, response, faults, events, [SSEEvent(dump_json(error, faults))]
        )


def _invalid_format(value: Any) -> str | None:
    """Ollama's error for a ``format`` it cannot turn into a grammar (llm/server.go)."""
    if value is None or value in ("", "json"):
        return None
    if not isinstance(value, dict):
        return f'invalid format: {json.dumps(value)}; expected "json" or a valid JSON Schema'
    if _unresolved_refs(value, value):
        return "invalid JSON schema in format"
    return None


def _unresolved_refs(node: Any, root: dict[str, Any]) -> bool:
    if isinstance(node, list):
        return any(_unresolved_refs(item, root) for item in node)
    if not isinstance(node, dict):
        return False
    ref = node.get("$ref")
    if isinstance(ref, str):
        target: Any = root
        for part in ref.removeprefix("#").strip("/").split("/"):
            if not part:
                continue
            if not isinstance(target, dict) or part not in target:
                return True
            target = target[part]
    return any(_unresolved_refs(value, root) for value in node.values())


def _full_name(model: str) -> str:
    # Ollama resolves a bare name to its ``latest`` tag.
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def _metrics(reply: ScriptedReply, prompt_estimate: int) -> dict[str, int]:
    """Return the done line's metrics, durations in ns, each left out when 0 (Go omitempty)."""
    prompt, completion = reply.token_counts(prompt_estimate)
    values = {
        "load_duration": 1_334_875,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": prompt * 13_175_000,
        "eval_count": completion,
        "eval_duration": completion * 16_083_000,
    }
    values |= {k: int(v) for k, v in (reply.usage or {}).items() if k in _METRICS}
    durations = ("load_duration", "prompt_eval_duration", "eval_duration")
    values.setdefault("total_duration", sum(values[k] for k in durations) + 2_500_000)
    return {name: values[name] for name in _METRICS if values[name]}


def _rfc3339_nano(ns: int) -> str:
    # Go's RFC3339Nano: up to 9 fractional digits with trailing zeros trimmed.
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"
