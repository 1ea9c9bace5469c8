"""`AnthropicBatchServer`: a local Anthropic Message Batches API for tests.

``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``, ``GET /v1/messages/batches``,
``POST /v1/messages/batches/{id}/cancel`` and the results (``GET .../{id}/results``, JSONL). A
batch moves on only when it is polled, so a test needs no clock: each
``GET /v1/messages/batches/{id}`` processes ``rows_per_poll`` requests, and the poll after the
last one ends the batch. Answers are the messages `AnthropicServer` would send.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, final

from aiohttp import web

from chatstream._compat import override

from ._batch_base import BatchServer, json_response
from ._script import ScriptedReply, estimate_prompt_tokens
from .anthropic_server import _STOP_REASONS, _blocks, _invalid_request, _random_id

__all__ = ["AnthropicBatchServer", "ScriptedReply"]

_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_OUTCOMES = ("succeeded", "errored", "canceled", "expired")


@dataclass
class _Batch:
    obj: dict[str, Any]
    requests: list[dict[str, Any]]
    done: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)


@final
class AnthropicBatchServer(BatchServer[_Batch]):
    """A local Anthropic Message Batches API on ``127.0.0.1``.

    Example:
        ``async with AnthropicBatchServer([ScriptedReply.from_text("Hi")]) as server:`` then
        ``ChatAnthropic(base_url=server.base_url, api_key="test")`` and
        `chatstream.batch.submit`.

    Args:
        replies: Answers, used in turn across every request processed; default a greeting.
        api_key: When set, requests need ``x-api-key: <api_key>``.

    Of `Faults`, ``http_error``, ``fail_times`` and ``headers`` apply (set with ``script``): any
    endpoint then answers the error status, as a flaky API does.
        rows_per_poll: Requests processed per poll (``None``: all at once).
        failing: Custom ids whose requests end ``errored`` (an ``api_error``); requests whose
            params the Messages API would refuse end ``errored`` too.
        expire_after: End each batch once it has processed this many requests, the rest
            ``expired``.
        max_requests: Most requests per batch (more: a 400).
        max_bytes: Most bytes of a create call's body (more: a 413).
        stall_create: Stall the response of this batch creation (1 for the first): the batch
            exists, but its creator never hears of it.

    Attributes:
        batches_created: How many batches were created: what a resumed client must not repeat.
    """

    request_id_header = "request-id"

    default_max_requests = 100_000
    default_max_bytes = 256 * 1024 * 1024

    @override
    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages/batches", self._create)
        app.router.add_get("/v1/messages/batches", self._list)
        app.router.add_get("/v1/messages/batches/{id}", self._retrieve)
        app.router.add_get("/v1/messages/batches/{id}/results", self._results)
        app.router.add_post("/v1/messages/batches/{id}/cancel", self._cancel)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    @override
    def _request_id(self) -> str:
        return _random_id("req_01")

    async def _create(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        if len(recorded.raw_body) > self.max_bytes:
            return _error(413, "request_too_large", "Request exceeds the maximum size.")
        body = recorded.body
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return _error(400, "invalid_request_error", "requests: Field required")
        if len(requests) > self.max_requests:
            message = f"requests: at most {self.max_requests} requests per batch"
            return _error(400, "invalid_request_error", message)
        seen: set[str] = set()
        for i, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
                message = f"requests.{i}.custom_id: String should match pattern"
                return _error(400, "invalid_request_error", message)
            if custom_id in seen:
                message = f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}"
                return _error(400, "invalid_request_error", message)
            if not isinstance(item.get("params"), dict):
                return _error(400, "invalid_request_error", f"requests.{i}.params: Field required")
            seen.add(custom_id)
        now = datetime.now(timezone.utc)
        obj: dict[str, Any] = {
            "id": _random_id("msgbatch_01"),
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {"processing": len(requests)} | dict.fromkeys(_OUTCOMES, 0),
            "ended_at": None,
            "created_at": _iso(now),
            "expires_at": _iso(now + timedelta(hours=24)),
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
        return await self._created(obj["id"], _Batch(obj, requests), obj)

    async def _list(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        limit = int(request.query.get("limit", "20"))
        page = [batch.obj for batch in reversed(self._batches.values())][:limit]
        return json_response(
            {
                "data": page,
                "has_more": len(self._batches) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )

    async def _retrieve(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        batch = self._batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "not_found_error", "Message batch not found.")
        self._advance(batch, request)
        return json_response(batch.obj)

    async def _cancel(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        batch = self._batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "not_found_error", "Message batch not found.")
        if batch.obj["processing_status"] == "in_progress":
            batch.obj["processing_status"] = "canceling"
            batch.obj["cancel_initiated_at"] = _iso(datetime.now(timezone.utc))
        return json_response(batch.obj)

    async def _results(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        batch = self._batches.get(request.match_info["id"])
        if batch is None or batch.obj["processing_status"] != "ended":
            return _error(404, "not_found_error", "No results: the batch has not ended.")
        # Reverse order: results join on custom_id, never on position.
        text = "".join(json.dumps(line) + "\n" for line in reversed(batch.results))
        return web.Response(text=text, content_type="application/binary")

    def _advance(self, batch: _Batch, request: web.Request) -> None:
        obj = batch.obj
        status = obj["processing_status"]
        if status == "ended":
            return
        if status == "in_progress":
            for row in self._this_poll(batch.done, len(batch.requests)):
                self._process(batch, batch.requests[row])
                if self._expires_at(batch.done):
                    self._end(batch, "expired", request)
                    return
            if batch.done < len(batch.requests):
                return
        self._end(batch, "canceled", request)  # nothing left when not canceling

    def _process(self, batch: _Batch, item: dict[str, Any]) -> None:
        batch.done += 1
        custom_id, params = item["custom_id"], item["params"]
        problem = _invalid_request(params)
        if custom_id in self.failing:
            problem = "This request was scripted to fail."
        if problem is not None:
            kind = "api_error" if custom_id in self.failing else "invalid_request_error"
            error = {"type": "error", "error": {"type": kind, "message": problem}}
            self._add(batch, custom_id, {"type": "errored", "error": error})
            return
        reply = self._next_reply()
        prompt, completion = reply.token_counts(estimate_prompt_tokens(params["messages"]))
        stop_reason = _STOP_REASONS.get(reply.finish_reason, reply.finish_reason)
        message = {
            "id": _random_id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": [final for _, _, final in _blocks(reply)],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt,
                "output_tokens": max(1, completion),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        self._add(batch, custom_id, {"type": "succeeded", "message": message})

    def _add(self, batch: _Batch, custom_id: str, result: dict[str, Any]) -> None:
        batch.results.append({"custom_id": custom_id, "result": result})
        counts = batch.obj["request_counts"]
        counts["processing"] -= 1
        counts[result["type"]] += 1

    def _end(self, batch: _Batch, rest: str, request: web.Request) -> None:
        """End the batch; the requests not processed end as ``rest``."""
        for item in batch.requests[batch.done :]:
            self._add(batch, item["custom_id"], {"type": rest})
        batch.done = len(batch.requests)
        obj = batch.obj
        obj["processing_status"] = "ended"
        obj["ended_at"] = _iso(datetime.now(timezone.utc))
        base = f"{request.scheme}://{request.host}"
        obj["results_url"] = f"{base}/v1/messages/batches/{obj['id']}/results"

    def _denied(self, headers: dict[str, str]) -> web.Response | None:
        if "anthropic-version" not in headers:
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if self.api_key is not None and headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if self._take_failure():
            status = self.faults.http_error or 500
            kind = "overloaded_error" if status == 529 else "api_error"
            return _error(status, kind, "Internal server error")
        return None

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        return _error(404, "not_found_error", "Not Found")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")
