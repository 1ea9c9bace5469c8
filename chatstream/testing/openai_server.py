"""`OpenAIServer`: a local, scriptable ``POST /v1/chat/completions`` server for tests.

It reproduces OpenAI's validation, error bodies, streaming framing and chunk sequence, plus the
deviations of OpenAI-compatible servers selected through `Faults`.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any, final

from aiohttp import web

from chatstream._compat import override

from ._base import LocalServer, RecordedRequest
from ._openai_validation import RequestError, validate_chat_request
from ._script import Faults, ScriptedReply, ScriptedToolCall, estimate_prompt_tokens
from ._sse_writer import SSEEvent, SSEWriter, dump_json

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Faults", "OpenAIServer", "RecordedRequest", "ScriptedReply", "ScriptedToolCall"]

#: Status -> (type, code, message) of OpenAI's error object for scripted HTTP errors.
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "request_forbidden",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    408: ("timeout", None, "Request timed out."),
    409: ("conflict", None, "The request conflicts with another request in progress."),
    422: ("invalid_request_error", None, "The request could not be processed."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests on {model}. Please try again in 1s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: (
        "service_unavailable_error",
        "server_is_overloaded",
        "The server is overloaded or not ready yet.",
    ),
}
_STREAM_ERROR = {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": None,
    "code": None,
}
_RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-limit-tokens": "30000000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-remaining-tokens": "29999990",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-reset-tokens": "0s",
}


@final
class OpenAIServer(LocalServer):
    """A faithful local OpenAI Chat Completions server (``POST /v1/chat/completions``).

    Example:
        ``async with OpenAIServer(replies=[ScriptedReply.from_text("Hi")]) as server:`` then
        point a client at ``server.base_url`` (``http://127.0.0.1:PORT/v1``).

    Replies are used in turn, cycling; a request with ``n > 1`` takes ``n`` consecutive
    replies, one per choice. Other paths answer OpenAI's JSON 404.

    Args:
        replies: Replies used in turn; defaults to a short greeting.
        faults: Fault switches; defaults to none.
        api_key: When set, requests need ``Authorization: Bearer <api_key>``.
        model: The ``model`` reported in responses; defaults to echoing the request's.
        system_fingerprint: The reported ``system_fingerprint``.
        completion_id: A fixed ``id`` for every response (default: a random ``chatcmpl-...``).
        created: A fixed ``created`` timestamp (default: now), for byte-exact transcripts.
    """

    base_path = "/v1"

    def __init__(
        self,
        replies: Sequence[ScriptedReply] = (),
        faults: Faults | None = None,
        *,
        api_key: str | None = None,
        model: str | None = None,
        system_fingerprint: str = "fp_chatstream",
        completion_id: str | None = None,
        created: int | None = None,
    ) -> None:
        super().__init__(replies, faults, api_key=api_key)
        self.model = model
        self.system_fingerprint = system_fingerprint
        self.completion_id = completion_id
        self.created = created

    @override
    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    @override
    async def _decorate_response(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in _RATE_LIMIT_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("openai-version", "2020-10-01")
        response.headers.setdefault("openai-processing-ms", "42")
        await super()._decorate_response(request, response)

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        message = f"Invalid URL ({request.method} {request.path})"
        return self._error(404, message, "invalid_request_error", None, None)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._receive(request)
        faults = self.faults
        denied = self._check_auth(recorded)
        if denied is not None:
            return denied
        body = recorded.body
        try:
            validate_chat_request(body)
        except RequestError as error:
            return self._error(
                error.status, error.message, "invalid_request_error", error.param, error.code
            )
        if self._take_failure():
            return self._scripted_error(body.get("model"))
        replies = [self._next_reply() for _ in range(body.get("n") or 1)]
        prompt_tokens = estimate_prompt_tokens(body["messages"])
        meta = {
            "id": self.completion_id or f"chatcmpl-{secrets.token_urlsafe(21)}",
            "created": self.created if self.created is not None else int(time.time()),
            "model": self.model or body["model"],
        }
        legacy = "functions" in body and "tools" not in body
        if body.get("stream") is True:
            options = body.get("stream_options") or {}
            return await self._stream(
                request, meta, replies, prompt_tokens, legacy, faults, options
            )
        completion = _completion(
            meta, replies, prompt_tokens, legacy, faults, self.system_fingerprint
        )
        text = dump_json(completion, faults) if faults.spaced_json else _pretty(completion)
        if faults.comments:
            # DeepSeek keeps a waiting non-streaming connection alive with blank lines.
            text = "\n\n" + text
        return web.Response(text=text, content_type="application/json")

    def _check_auth(self, recorded: RecordedRequest) -> web.Response | None:
        if self.api_key is None:
            return None
        header = recorded.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() == "bearer" and key.strip() == self.api_key:
            return None
        if scheme.lower() != "bearer" or not key.strip():
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return self._error(401, message, "invalid_request_error", None, None)
        masked = key.strip()[:3] + "*" * 10 + key.strip()[-4:]
        message = (
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return self._error(401, message, "invalid_request_error", None, "invalid_api_key")

    def _error(
        self, status: int, message: str, type_: str, param: str | None, code: str | None
    ) -> web.Response:
        if self.faults.fastapi_detail_error:
            detail = "Invalid API key" if status == 401 else message
            return web.Response(
                status=status, text=_pretty({"detail": detail}), content_type="application/json"
            )
        error = {"message": message, "type": type_, "param": param, "code": code}
        return web.Response(
            status=status, text=_pretty({"error": error}), content_type="application/json"
        )

    def _scripted_error(self, model: Any) -> web.Response:
        faults = self.faults
        status = faults.http_error or 500
        body = faults.error_body
        if isinstance(body, str):
            kind = "text/html" if body.lstrip().startswith("<") else "text/plain"
            return web.Response(status=status, text=body, content_type=kind)
        if isinstance(body, dict):
            return web.Response(status=status, text=_pretty(body), content_type="application/json")
        default = ("invalid_request_error", None, "Request failed.")
        if status >= 500:
            default = ("server_error", None, _STATUS_ERRORS[500][2])
        type_, code, message = _STATUS_ERRORS.get(status, default)
        return self._error(status, message.format(model=model), type_, None, code)

    async def _stream(
        self,
        request: web.Request,
        meta: dict[str, Any],
        replies: list[ScriptedReply],
        prompt_tokens: int,
        legacy: bool,
        faults: Faults,
        options: dict[str, Any],
    ) -> web.StreamResponse:
        include_usage = options.get("include_usage") is True
        obfuscate = faults.obfuscation and options.get("include_obfuscation") is not False
        head = {"id": meta["id"], "object": "chat.completion.chunk", "created": meta["created"]}
        head |= {"model": meta["model"], "system_fingerprint": self.system_fingerprint}
        head["service_tier"] = "default"

        def chunk(choices: list[dict[str, Any]], usage: Any, with_usage: bool) -> SSEEvent:
            body = dict(head)
            if obfuscate:
                body["obfuscation"] = secrets.token_urlsafe(8)
            body["choices"] = choices
            if with_usage:
                body["usage"] = usage
            return SSEEvent(dump_json(body, faults))

        events: list[SSEEvent] = []
        emitted = 0
        for index, delta, finish, pieces in _interleave(replies, legacy, faults):
            emitted += pieces
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            if faults.usage_every_chunk:
                running = {"prompt_tokens": prompt_tokens, "completion_tokens": emitted}
                running["total_tokens"] = prompt_tokens + emitted
                events.append(chunk([choice], running, True))
            else:
                events.append(chunk([choice], None, include_usage))
        if include_usage:
            events.append(chunk([], _usage(replies, prompt_tokens), True))
        done = SSEEvent("[DONE]")
        if not faults.omit_done:
            events.append(done)
        error_object = faults.error_event or _STREAM_ERROR
        error = SSEEvent(dump_json({"error": error_object}, faults))
        if faults.legacy_error_field:
            # Old llama.cpp wrote the bare error object under its own field, then [DONE].
            error_events = [SSEEvent(dump_json(error_object, faults), field="error"), done]
        else:
            error_events = [error, done] if faults.done_after_error else [error]

        response = web.StreamResponse(status=200)
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        writer = SSEWriter(response, request, faults, lambda: self._closing)
        await self._run_stream(writer, events, error_events)
        return response


def _pretty(value: Any) -> str:
    # OpenAI pretty-prints non-streaming JSON bodies.
    return json.dumps(value, indent=2, ensure_ascii=False)


def _choice_deltas(
    reply: ScriptedReply, legacy: bool, faults: Faults
) -> list[tuple[dict[str, Any], str | None, int]]:
    """Return one choice's ``(delta, finish_reason, pieces)`` sequence, role chunk first."""
    finish = reply.finish_reason
    calls = reply.tool_calls[:1] if legacy else reply.tool_calls
    role: dict[str, Any] = {"role": "assistant"}
    if reply.refusal_chunks:
        role |= {"content": None, "refusal": ""}
    elif reply.text_chunks or not calls:
        role |= {"content": "", "refusal": None}
    else:
        role["content"] = None
    deltas: list[tuple[dict[str, Any], str | None, int]] = [(role, None, 0)]
    deltas += [({faults.reasoning_key: piece}, None, 1) for piece in reply.reasoning_chunks]
    deltas += [({"refusal": piece}, None, 1) for piece in reply.refusal_chunks]
    deltas += [({"content": piece}, None, 1) for piece in reply.text_chunks]
    if legacy and calls:
        if finish == "tool_calls":
            finish = "function_call"
        # Recorded legacy streams open the function call on the role chunk itself.
        role["function_call"] = {"name": calls[0].name, "arguments": ""}
        deltas += [
            ({"function_call": {"arguments": piece}}, None, 1) for piece in calls[0].argument_chunks
        ]
    else:
        per_call: list[list[tuple[dict[str, Any], str | None, int]]] = []
        for k, call in enumerate(calls):
            opening = {"index": k, "id": call.id, "type": "function"}
            opening["function"] = {"name": call.name, "arguments": ""}
            per_call.append([({"tool_calls": [opening]}, None, 0)])
            per_call[-1] += [
                ({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}, None, 1)
                for piece in call.argument_chunks
            ]
        if faults.interleave_tool_calls:
            longest = max(map(len, per_call), default=0)
            deltas += [
                fragments[i] for i in range(longest) for fragments in per_call if i < len(fragments)
            ]
        else:
            deltas += [delta for fragments in per_call for delta in fragments]
    if faults.role_every_chunk:
        deltas = [deltas[0]] + [({"role": "assistant"} | d, f, p) for d, f, p in deltas[1:]]
    if faults.finish_on_content_chunk and len(deltas) > 1:
        delta, _, pieces = deltas[-1]
        deltas[-1] = (delta, finish, pieces)
    else:
        deltas.append(({"role": "assistant"} if faults.role_every_chunk else {}, finish, 0))
    return deltas


def _interleave(
    replies: list[ScriptedReply], legacy: bool, faults: Faults
) -> list[tuple[int, dict[str, Any], str | None, int]]:
    """Round-robin the choices' deltas by choice index, as ``n > 1`` streams arrive."""
    per_choice = [_choice_deltas(reply, legacy, faults) for reply in replies]
    out: list[tuple[int, dict[str, Any], str | None, int]] = []
    for step in range(max(map(len, per_choice))):
        for index, deltas in enumerate(per_choice):
            if step < len(deltas):
                out.append((index, *deltas[step]))
    return out


def _usage(replies: list[ScriptedReply], prompt_tokens: int) -> dict[str, Any]:
    prompt, _ = replies[0].token_counts(prompt_tokens)
    completion = sum(reply.token_counts(prompt_tokens)[1] for reply in replies)
    reasoning = sum(len(reply.reasoning_chunks) for reply in replies)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    extra = replies[0].usage or {}
    usage |= {k: v for k, v in extra.items() if k not in ("prompt_tokens", "completion_tokens")}
    return usage


def _completion(
    meta: dict[str, Any],
    replies: list[ScriptedReply],
    prompt_tokens: int,
    legacy: bool,
    faults: Faults,
    fingerprint: str,
) -> dict[str, Any]:
    choices = []
    for index, reply in enumerate(replies):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text or None,
            "refusal": reply.refusal or None,
            "annotations": [],
        }
        if reply.reasoning_chunks:
            message[faults.reasoning_key] = reply.reasoning
        finish = reply.finish_reason
        if legacy and reply.tool_calls:
            call = reply.tool_calls[0]
            message["function_call"] = {"name": call.name, "arguments": call.arguments}
            finish = "function_call" if finish == "tool_calls" else finish
        elif reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in reply.tool_calls
            ]
        choices.append(
            {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
        )
    return {
        "id": meta["id"],
        "object": "chat.completion",
        "created": meta["created"],
        "model": meta["model"],
        "choices": choices,
        "usage": _usage(replies, prompt_tokens),
        "service_tier": "default",
        "system_fingerprint": fingerprint,
    }
