"""OpenAI's Batch API: a JSONL file of ``/v1/chat/completions`` requests, uploaded, then a batch.

``POST /files`` (multipart, ``purpose=batch``) → ``POST /batches`` → ``GET /batches/{id}`` until
completed, failed, expired or cancelled → ``GET /files/{id}/content`` of the output and error
files, whose lines carry each request's ``custom_id``. Request bodies and answers are built and
read by `chatstream.providers.openai` itself (``_to_wire``, ``_to_chunk``, ``_usage``).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any, final

from ..errors import InvalidInputError, ProviderError
from ..messages import AIMessageChunk
from ..providers._common import http_client
from ..providers.openai import PROVIDER as PROVIDER
from ..providers.openai import ChatOpenAI, _to_chunk, _to_wire, _usage
from ..transport.http import error_class
from ..transport.ndjson import NDJSONDecoder
from ._backend import missing_result, row_result
from ._split import Limits
from ._status import JobStatus

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from ..messages import AIMessage, BaseMessage, UsageMetadata
    from ..outputs import RowResult
    from ._manifest import JobRecord, Manifest, StoredRow

__all__ = ["OpenAIBatches"]

ENDPOINT = "/v1/chat/completions"
"""The endpoint every request of a job goes to."""

LIMITS = Limits(max_requests=50_000, max_bytes=200 * 1024 * 1024)
"""One batch: at most 50,000 requests, an input file of at most 200 MB."""

_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})

_SEARCH_PAGES = 10
"""Pages of the batch list searched, on resume, for a batch made just before a crash."""

_EXCERPT = 500


@final
class OpenAIBatches:
    """The Batch API of the OpenAI server a `ChatOpenAI` talks to."""

    provider = PROVIDER
    limits = LIMITS
    overhead = 0

    def __init__(self, model: ChatOpenAI) -> None:
        self.model = model
        self._client = http_client(PROVIDER, model)

    def meta(self) -> dict[str, str]:
        """Provider, model name and server (with no userinfo: it may hold a password)."""
        url, _, _ = self._target("")
        return {"provider": PROVIDER, "model": self.model.model, "base_url": url}

    def check_id(self, custom_id: str, where: str) -> None:
        """Any non-empty string is a custom id (unique within the batch)."""
        if not custom_id:
            raise InvalidInputError("a custom id must not be empty", where=where)

    def request(self, messages: list[BaseMessage], settings: Mapping[str, Any]) -> dict[str, Any]:
        """The Chat Completions body `ChatOpenAI` would send, not streamed."""
        if (settings.get("n") or 1) > 1:
            raise InvalidInputError("a batch row is one answer: n must be 1", where="n")
        body = _to_wire(messages, {**settings, "model": self.model.model, "stream_usage": False})
        body.pop("stream", None)
        return body

    def encode(self, custom_id: str, request: Mapping[str, Any]) -> bytes:
        """One line of the input file."""
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": request}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    async def start(self, manifest: Manifest, job: JobRecord) -> JobRecord:
        """Upload the job's file, then create its batch, recording each step."""
        resumed = job.state == "uploaded"
        if job.state == "planned":
            rows = await manifest.requests(job)
            lines = [self.encode(cid, json.loads(body)) for cid, body in rows]
            upload = await self._upload(b"".join(lines), f"chatstream-batch-{job.index}.jsonl")
            job = await manifest.update(job, state="uploaded", file_id=str(upload["id"]))
        assert job.file_id is not None  # recorded with the "uploaded" state
        # A process killed after asking for the batch, before recording its id, left a batch
        # that only its input file names: look for it rather than create a second one.
        batch = await self._find(job.file_id) if resumed else None
        if batch is None:
            body = {
                "input_file_id": job.file_id,
                "endpoint": ENDPOINT,
                "completion_window": "24h",
                "metadata": {"chatstream_job": str(job.index)},
            }
            batch = await self._call("POST", "/batches", json=body)
        return await manifest.update(
            job,
            state="submitted",
            batch_id=str(batch["id"]),
            status=str(batch.get("status")),
            info=_info(batch),
            submitted_at=time.time(),
        )

    async def refresh(self, job: JobRecord) -> tuple[str, bool, dict[str, Any]]:
        """``GET /batches/{id}``."""
        batch = await self._call("GET", f"/batches/{job.batch_id}")
        status = str(batch.get("status"))
        return status, status in _ENDED, _info(batch)

    def status(self, job: JobRecord) -> JobStatus:
        """Counts from ``request_counts`` (``total``, ``completed``, ``failed``)."""
        counts = job.info.get("request_counts") or {}
        ended = job.state in ("ended", "collected")
        succeeded, errored = int(counts.get("completed") or 0), int(counts.get("failed") or 0)
        left = max(job.row_count - succeeded - errored, 0) if ended else 0
        return JobStatus(
            job.index,
            job.batch_id,
            job.status or job.state,
            ended,
            job.row_count,
            succeeded,
            errored + (left if job.status == "failed" else 0),
            left if job.status == "expired" else 0,
            left if job.status == "cancelled" else 0,
        )

    async def results(self, job: JobRecord) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """The lines of the output file, then of the error file."""
        for key in ("output_file_id", "error_file_id"):
            file_id = job.info.get(key)
            if not file_id:
                continue
            url, headers, scrub = self._target(f"/files/{file_id}/content")
            stream = self._client.open_stream(
                url,
                json=None,
                headers=headers,
                decoder=NDJSONDecoder(),
                secrets=scrub,
                method="GET",
            )
            async with stream as lines:
                async for line in lines:
                    if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                        yield line["custom_id"], line

    def row(self, stored: StoredRow, job: JobRecord) -> RowResult:
        """A result line: a 2xx ``response`` is an answer; another status or ``error`` fails."""
        times = _times(job.info)
        result = stored.result
        if result is None:
            return row_result(stored, None, missing_result(PROVIDER, job), None, times)
        response = result.get("response")
        if isinstance(response, dict) and 200 <= int(response.get("status_code") or 0) < 300:
            body = response.get("body")
            message, usage = _message(body if isinstance(body, dict) else {}, stored.run_id)
            return row_result(stored, message, None, usage, times)
        return row_result(stored, None, _error(response, result.get("error")), None, times)

    async def cancel(self, job: JobRecord) -> None:
        """``POST /batches/{id}/cancel``."""
        await self._call("POST", f"/batches/{job.batch_id}/cancel")

    async def aclose(self) -> None:
        """Close the HTTP client's connections."""
        await self._client.aclose()

    # -- HTTP ---------------------------------------------------------------------------------

    def _target(self, path: str) -> tuple[str, dict[str, str], tuple[str, ...]]:
        url, headers, scrub = self.model._target(path, accept="application/json")
        headers.pop("Content-Type")  # set per request: JSON, or a multipart upload
        return url, headers, scrub

    async def _call(self, method: str, path: str, *, json: Any = None) -> dict[str, Any]:
        url, headers, scrub = self._target(path)
        if json is not None:
            headers["Content-Type"] = "application/json"
        answer = await self._client.request_json(
            method, url, headers=headers, json=json, secrets=scrub
        )
        if not isinstance(answer, dict):
            raise ProviderError(
                f"{method} {path} answered {type(answer).__name__}, not an object",
                provider=PROVIDER,
            )
        return answer

    async def _upload(self, data: bytes, filename: str) -> dict[str, Any]:
        url, headers, scrub = self._target("/files")
        boundary = f"chatstream-{secrets.token_hex(16)}"
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        body = _multipart(boundary, {"purpose": "batch"}, filename, data)
        answer = await self._client.request_json(
            "POST", url, headers=headers, data=body, secrets=scrub
        )
        if not isinstance(answer, dict) or "id" not in answer:
            raise ProviderError("the file upload answered no file id", provider=PROVIDER)
        return answer

    async def _find(self, file_id: str) -> dict[str, Any] | None:
        after = None
        for _ in range(_SEARCH_PAGES):
            query = "?limit=100" + (f"&after={after}" if after else "")
            page = await self._call("GET", f"/batches{query}")
            batches = [b for b in page.get("data") or [] if isinstance(b, dict)]
            for batch in batches:
                if batch.get("input_file_id") == file_id:
                    return batch
            if not page.get("has_more") or not batches:
                return None
            after = batches[-1].get("id")
        return None


def _multipart(boundary: str, fields: Mapping[str, str], filename: str, data: bytes) -> bytes:
    """A ``multipart/form-data`` body (RFC 7578): the fields, then the file."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    )
    return b"".join([*parts, head.encode(), data, f"\r\n--{boundary}--\r\n".encode()])


_TIMES = ("created_at", "in_progress_at", "completed_at", "failed_at", "expired_at", "cancelled_at")


def _info(batch: Mapping[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of a batch object."""
    info = {
        key: batch.get(key)
        for key in ("request_counts", "output_file_id", "error_file_id", *_TIMES)
        if batch.get(key) is not None
    }
    errors = batch.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    if data:
        info["errors"] = "; ".join(
            str(item.get("message")) for item in data if isinstance(item, dict)
        )
    return info


def _times(info: Mapping[str, Any]) -> tuple[float | None, float | None]:
    ends = [info.get(key) for key in _TIMES[2:]]
    end = next((float(t) for t in ends if isinstance(t, (int, float))), None)
    start = info.get("created_at")
    return (float(start) if isinstance(start, (int, float)) else None), end


def _message(body: Mapping[str, Any], run_id: str) -> tuple[AIMessage, UsageMetadata | None]:
    """The answer in a ``chat.completion`` body, read as `ChatOpenAI` reads one."""
    chunk = _to_chunk(body) or AIMessageChunk(content="")
    usage = _usage(body)
    if usage is not None:
        chunk = chunk + AIMessageChunk(content="", usage_metadata=usage)
    message = chunk.to_message()
    if message.id is None:
        message = message.model_copy(update={"id": f"run-{run_id}"})
    return message, usage


def _error(response: Any, error: Any) -> ProviderError:
    """A failed line: an error ``response`` (status and body) or a line-level ``error``."""
    if isinstance(response, dict):
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        detail = body.get("error") if isinstance(body, dict) else None
        detail = detail if isinstance(detail, dict) else {}
        cls = error_class(status) if 400 <= status <= 599 else ProviderError
        return cls(
            str(detail.get("message") or f"the request failed with status {status}"),
            provider=PROVIDER,
            status=status or None,
            request_id=response.get("request_id"),
            code=detail.get("code") or detail.get("type"),
            body=json.dumps(body, ensure_ascii=False)[:_EXCERPT],
        )
    detail = error if isinstance(error, dict) else {}
    code = detail.get("code")
    return ProviderError(
        str(detail.get("message") or "the request failed"),
        provider=PROVIDER,
        # One word for rows the window closed on, whichever provider: "expired".
        code="expired" if code == "batch_expired" else (None if code is None else str(code)),
        body=json.dumps(error, ensure_ascii=False)[:_EXCERPT],
    )
