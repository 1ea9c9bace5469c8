"""Anthropic's Message Batches API: one ``POST /v1/messages/batches`` of ``{custom_id, params}``.

``GET /v1/messages/batches/{id}`` until ``processing_status`` is ``ended``, then the JSONL at its
``results_url``, one ``{"custom_id", "result": {"type": succeeded|errored|canceled|expired}}`` a
line. Request params and answers are built and read by `chatstream.providers.anthropic` itself
(``_to_wire``; a whole message is replayed through its stream reader, ``_StreamState``).
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, final
from urllib.parse import urlsplit

from ..errors import InvalidInputError, ProviderError
from ..messages import AIMessageChunk, merge_chunks
from ..providers._common import http_client, request_target, stream_error
from ..providers.anthropic import PROVIDER, ChatAnthropic, _StreamState, _to_wire
from ..transport.ndjson import NDJSONDecoder
from ._backend import missing_result, row_result
from ._split import Limits
from ._status import JobStatus

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from ..messages import AIMessage, BaseMessage
    from ..outputs import RowResult
    from ._manifest import JobRecord, Manifest, StoredRow

__all__ = ["AnthropicBatches"]

LIMITS = Limits(max_requests=100_000, max_bytes=256 * 1024 * 1024)
"""One message batch: at most 100,000 requests, 256 MB of request body."""

_ENVELOPE = len(b'{"requests":[]}')
"""The create call's body around the requests (each request adds its JSON and a comma)."""

_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
"""What the API takes as a ``custom_id``."""

_COUNTS = ("succeeded", "errored", "expired", "canceled")


@final
class AnthropicBatches:
    """The Message Batches API of the server a `ChatAnthropic` talks to."""

    provider = PROVIDER
    limits = LIMITS
    overhead = _ENVELOPE

    def __init__(self, model: ChatAnthropic) -> None:
        self.model = model
        self._client = http_client(PROVIDER, model)

    def meta(self) -> dict[str, str]:
        """Provider, model name and server (with no userinfo: it may hold a password)."""
        url, _, _ = request_target(self.model.base_url, "", {}, {}, ())
        return {"provider": PROVIDER, "model": self.model.model, "base_url": url}

    def check_id(self, custom_id: str, where: str) -> None:
        """1 to 64 letters, digits, ``_`` or ``-``."""
        if not _CUSTOM_ID.fullmatch(custom_id):
            raise InvalidInputError(
                f"Anthropic takes 1 to 64 letters, digits, '_' or '-' as a custom id, not "
                f"{custom_id!r}",
                where=where,
            )

    def request(self, messages: list[BaseMessage], settings: Mapping[str, Any]) -> dict[str, Any]:
        """The Messages API params `ChatAnthropic` would send, not streamed."""
        params = _to_wire(messages, {**settings, "model": self.model.model})
        params.pop("stream", None)
        return params

    def encode(self, custom_id: str, request: Mapping[str, Any]) -> bytes:
        """One entry of the request list, with the comma that separates it."""
        entry = {"custom_id": custom_id, "params": request}
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b","

    async def start(self, manifest: Manifest, job: JobRecord) -> JobRecord:
        """Create the message batch and record its id."""
        rows = await manifest.requests(job)
        entries = b"".join(self.encode(cid, json.loads(params)) for cid, params in rows)
        body = b'{"requests":[' + entries[:-1] + b"]}"
        batch = await self._call("POST", "/v1/messages/batches", data=body)
        return await manifest.update(
            job,
            state="submitted",
            batch_id=str(batch["id"]),
            status=str(batch.get("processing_status")),
            info=_info(batch),
            submitted_at=time.time(),
        )

    async def refresh(self, job: JobRecord) -> tuple[str, bool, dict[str, Any]]:
        """``GET /v1/messages/batches/{id}``."""
        batch = await self._call("GET", f"/v1/messages/batches/{job.batch_id}")
        status = str(batch.get("processing_status"))
        return status, status == "ended", _info(batch)

    def status(self, job: JobRecord) -> JobStatus:
        """Counts from ``request_counts``, which name every outcome."""
        counts = job.info.get("request_counts") or {}
        succeeded, errored, expired, canceled = (int(counts.get(k) or 0) for k in _COUNTS)
        ended = job.state in ("ended", "collected")
        return JobStatus(
            job.index,
            job.batch_id,
            job.status or job.state,
            ended,
            job.row_count,
            succeeded,
            errored,
            expired,
            canceled,
        )

    async def results(self, job: JobRecord) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """The lines at ``results_url``."""
        # The URL's path on the configured server: the key goes nowhere else, whatever the
        # URL's host says.
        path = urlsplit(str(job.info.get("results_url") or "")).path
        path = path or f"/v1/messages/batches/{job.batch_id}/results"
        url, headers, scrub = self._target(path)
        stream = self._client.open_stream(
            url, json=None, headers=headers, decoder=NDJSONDecoder(), secrets=scrub, method="GET"
        )
        async with stream as lines:
            async for line in lines:
                if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                    yield line["custom_id"], line

    def row(self, stored: StoredRow, job: JobRecord) -> RowResult:
        """A result line by its type: succeeded, errored, canceled or expired."""
        times = _times(job.info)
        result = (stored.result or {}).get("result")
        if not isinstance(result, dict):
            return row_result(stored, None, missing_result(PROVIDER, job), None, times)
        kind = result.get("type")
        if kind == "succeeded" and isinstance(result.get("message"), dict):
            message = message_of(result["message"], stored.run_id)
            return row_result(stored, message, None, message.usage_metadata, times)
        if kind == "errored":
            error = result.get("error")
            # The API nests it: {"type": "error", "error": {"type": ..., "message": ...}}.
            if isinstance(error, dict) and isinstance(error.get("error"), dict):
                error = error["error"]
            return row_result(stored, None, stream_error(error, provider=PROVIDER), None, times)
        why = {
            "expired": "the batch expired before this request ran",
            "canceled": "the batch was canceled before this request ran",
        }.get(str(kind), f"an unknown result type {kind!r}")
        error = ProviderError(why, provider=PROVIDER, code=str(kind))
        return row_result(stored, None, error, None, times)

    async def cancel(self, job: JobRecord) -> None:
        """``POST /v1/messages/batches/{id}/cancel``."""
        await self._call("POST", f"/v1/messages/batches/{job.batch_id}/cancel")

    async def aclose(self) -> None:
        """Close the HTTP client's connections."""
        await self._client.aclose()

    # -- HTTP ---------------------------------------------------------------------------------

    def _target(self, path: str) -> tuple[str, dict[str, str], tuple[str, ...]]:
        url, headers, scrub = self.model._target(path, accept="application/json")
        headers.pop("Content-Type")  # set per request, when there is a body
        return url, headers, scrub

    async def _call(self, method: str, path: str, *, data: bytes | None = None) -> dict[str, Any]:
        url, headers, scrub = self._target(path)
        if data is not None:
            headers["Content-Type"] = "application/json"
        answer = await self._client.request_json(
            method, url, headers=headers, data=data, secrets=scrub
        )
        if not isinstance(answer, dict) or "id" not in answer:
            raise ProviderError(f"{method} {path} answered no message batch", provider=PROVIDER)
        return answer


def message_of(message: Mapping[str, Any], run_id: str) -> AIMessage:
    """A whole Messages API ``message`` as the `AIMessage` `ChatAnthropic` streams for it.

    The message is replayed as the event stream it stands for, through the provider's own
    reader, so that a batch answer and a streamed one are the same message (thinking
    blocks, tool calls, finish reason, usage with cache tokens).
    """
    state = _StreamState()
    chunks: list[AIMessageChunk] = []
    for event in _events(message):
        chunks += state.feed_value(event)
    chunks += state.final_chunks()
    merged = merge_chunks(chunks) if chunks else AIMessageChunk(content="")
    answer = merged.to_message()
    if answer.id is None:
        answer = answer.model_copy(update={"id": f"run-{run_id}"})
    return answer


def _events(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
    head = {key: message.get(key) for key in ("id", "model")}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {**head, "usage": usage}}]
    for index, block in enumerate(message.get("content") or []):
        if not isinstance(block, dict):
            continue
        start = block
        if block.get("type") == "thinking":
            start = {"type": "thinking", "thinking": block.get("thinking", "")}
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        if block.get("type") == "thinking" and block.get("signature"):
            delta = {"type": "signature_delta", "signature": block["signature"]}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    delta = {key: message.get(key) for key in ("stop_reason", "stop_sequence")}
    events.append({"type": "message_delta", "delta": delta, "usage": usage})
    events.append({"type": "message_stop"})
    return events


def _info(batch: Mapping[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of a message batch object."""
    keys = ("request_counts", "results_url", "created_at", "ended_at", "expires_at")
    return {key: batch.get(key) for key in keys if batch.get(key) is not None}


def _times(info: Mapping[str, Any]) -> tuple[float | None, float | None]:
    return _epoch(info.get("created_at")), _epoch(info.get("ended_at"))


def _epoch(value: Any) -> float | None:
    """An RFC 3339 time (``2024-09-24T18:37:24.100435Z``) as seconds since the epoch."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
