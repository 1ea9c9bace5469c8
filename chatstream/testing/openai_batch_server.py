"""`OpenAIBatchServer`: a local OpenAI Batch API (files and batches endpoints) for tests.

Uploads (``POST /v1/files``, multipart, ``purpose=batch``), batches (``POST /v1/batches``,
``GET /v1/batches/{id}``, ``GET /v1/batches``, ``POST /v1/batches/{id}/cancel``) and file
contents (``GET /v1/files/{id}/content``). A batch moves on only when it is polled, so a test
steps through ``validating → in_progress → finalizing → completed`` without any clock: each
``GET /v1/batches/{id}`` advances it one step (``rows_per_poll`` requests at a time while in
progress). Answers are the completions `OpenAIServer` would send for the scripted replies.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, final

from aiohttp import web

from chatstream._compat import Unpack, override

from ._batch_base import BatchOptions, BatchServer, json_response
from ._openai_validation import RequestError, validate_chat_request
from ._script import Faults, ScriptedReply, estimate_prompt_tokens
from .openai_server import _completion

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["OpenAIBatchServer", "ScriptedReply"]

ENDPOINT = "/v1/chat/completions"
_WINDOW = 24 * 3600
_ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass
class _Batch:
    """One batch and how far it got."""

    obj: dict[str, Any]
    lines: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0
    output: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


@final
class OpenAIBatchServer(BatchServer[_Batch]):
    """A local OpenAI Batch API on ``127.0.0.1``.

    Example:
        ``async with OpenAIBatchServer([ScriptedReply.from_text("Hi")]) as server:`` then
        ``ChatOpenAI(base_url=server.base_url, api_key="test")`` and `chatstream.batch.submit`.

    Args:
        replies: Answers, used in turn across every request processed; default a greeting.
        api_key: When set, requests need ``Authorization: Bearer <api_key>``.

    Of `Faults`, ``http_error``, ``fail_times`` and ``headers`` apply (set with ``script``): any
    endpoint then answers the error status, as a flaky API does.
        rows_per_poll: Requests processed per poll while in progress (``None``: all at once).
        failing: Custom ids whose requests fail (a 400 ``response`` in the error file).
        expire_after: Expire each batch once it has processed this many requests: the rest
            go to the error file as ``batch_expired``, and the batch ends ``expired``.
        max_requests: Most requests per batch; a larger input file fails validation.
        max_bytes: Most bytes per input file; a larger one fails validation.
        stall_create: Stall the response of this batch creation (1 for the first): the batch
            exists, but its creator never hears of it (a client killed at that moment).

    Attributes:
        files: Uploaded and result files by id (their bytes).
        batches_created: How many batches were created: what a resumed client must not
            repeat.
        uploads: How many files were uploaded.
    """

    base_path = "/v1"

    default_max_requests = 50_000
    default_max_bytes = 200 * 1024 * 1024

    def __init__(
        self,
        replies: Sequence[ScriptedReply] = (),
        *,
        api_key: str | None = None,
        **options: Unpack[BatchOptions],
    ) -> None:
        super().__init__(replies, api_key=api_key, **options)
        self.files: dict[str, bytes] = {}
        self.uploads = 0
        self._file_objects: dict[str, dict[str, Any]] = {}

    @override
    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    # -- files --------------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        form = _multipart(recorded.headers.get("content-type", ""), recorded.raw_body)
        if "file" not in form:
            return _error(400, "Missing required parameter: 'file'.", "file")
        if form.get("purpose", (None, b""))[1] != b"batch":
            return _error(400, "Invalid value for 'purpose': use 'batch' here.", "purpose")
        filename, data = form["file"]
        file = self._store_file(data, filename or "upload.jsonl", "batch")
        self.uploads += 1
        return json_response(file)

    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{secrets.token_hex(12)}"
        self.files[file_id] = data
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self._file_objects[file_id] = obj
        return obj

    async def _content(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        data = self.files.get(request.match_info["id"])
        if data is None:
            return _error(404, f"No such File object: {request.match_info['id']}", "id")
        return web.Response(body=data, content_type="application/octet-stream")

    # -- batches ------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        body = recorded.body if isinstance(recorded.body, dict) else {}
        file_id = body.get("input_file_id")
        if file_id not in self.files or self._file_objects[file_id]["purpose"] != "batch":
            return _error(400, f"Invalid 'input_file_id': {file_id!r}.", "input_file_id")
        if body.get("endpoint") != ENDPOINT:
            return _error(
                400, "Invalid 'endpoint': this server runs /v1/chat/completions.", "endpoint"
            )
        if body.get("completion_window") != "24h":
            return _error(400, "Invalid 'completion_window': only '24h' is supported.", None)
        now = int(time.time())
        obj: dict[str, Any] = {
            "id": f"batch_{secrets.token_hex(12)}",
            "object": "batch",
            "endpoint": ENDPOINT,
            "errors": None,
            "input_file_id": file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "expires_at": now + _WINDOW,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        for key in ("in_progress_at", "finalizing_at", "completed_at", "failed_at"):
            obj[key] = None
        for key in ("expired_at", "cancelling_at", "cancelled_at"):
            obj[key] = None
        return await self._created(obj["id"], _Batch(obj), obj)

    async def _list(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        limit = int(request.query.get("limit", "20"))
        newest = [batch.obj for batch in reversed(self._batches.values())]
        after = request.query.get("after")
        if after is not None:
            ids = [obj["id"] for obj in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        page = newest[:limit]
        return json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(newest) > limit,
            }
        )

    async def _retrieve(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        batch = self._batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, f"No batch found with id '{request.match_info['id']}'.", None)
        self._advance(batch)
        return json_response(batch.obj)

    async def _cancel(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if (denied := self._denied(recorded.headers)) is not None:
            return denied
        batch = self._batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, f"No batch found with id '{request.match_info['id']}'.", None)
        if batch.obj["status"] not in _ENDED:
            batch.obj["status"] = "cancelling"
            batch.obj["cancelling_at"] = int(time.time())
        return json_response(batch.obj)

    # -- processing ---------------------------------------------------------------------------

    def _advance(self, batch: _Batch) -> None:
        """One step of the batch's life; called on every poll."""
        obj = batch.obj
        now = int(time.time())
        match obj["status"]:
            case "validating":
                problem = self._validate(batch)
                if problem is not None:
                    obj["status"], obj["failed_at"] = "failed", now
                    obj["errors"] = {"object": "list", "data": [problem]}
                else:
                    obj["status"], obj["in_progress_at"] = "in_progress", now
                    obj["request_counts"]["total"] = len(batch.lines)
            case "in_progress":
                for row in self._this_poll(batch.done, len(batch.lines)):
                    self._process(batch, batch.lines[row])
                    if self._expires_at(batch.done):
                        self._expire(batch, now)
                        return
                if batch.done >= len(batch.lines):
                    obj["status"], obj["finalizing_at"] = "finalizing", now
            case "finalizing":
                self._finish(batch, "completed", now)
            case "cancelling":
                self._finish(batch, "cancelled", now)
            case _:
                pass  # ended: nothing changes any more

    def _validate(self, batch: _Batch) -> dict[str, Any] | None:
        data = self.files[batch.obj["input_file_id"]]
        if len(data) > self.max_bytes:
            return _problem("file_too_large", f"The input file exceeds {self.max_bytes} bytes.")
        seen: set[str] = set()
        for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:
                return _problem("invalid_json_line", "This line is not valid JSON.", number)
            custom_id = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(custom_id, str) or custom_id in seen:
                return _problem("duplicate_custom_id", "custom_id is missing or repeated.", number)
            if line.get("method") != "POST" or line.get("url") != ENDPOINT:
                return _problem("invalid_url", f"The line must POST to {ENDPOINT}.", number)
            seen.add(custom_id)
            batch.lines.append(line)
        if len(batch.lines) > self.max_requests:
            return _problem("too_many_requests", f"More than {self.max_requests} requests.")
        if not batch.lines:
            return _problem("empty_file", "The input file has no requests.")
        return None

    def _process(self, batch: _Batch, line: dict[str, Any]) -> None:
        batch.done += 1
        custom_id, body = line["custom_id"], line.get("body")
        request_id = f"req_{secrets.token_hex(16)}"
        counts = batch.obj["request_counts"]
        entry: dict[str, Any] = {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id}
        try:
            if custom_id in self.failing:
                raise RequestError(400, "This request was scripted to fail.", None, "scripted")
            validate_chat_request(body)
        except RequestError as error:
            detail: dict[str, Any] = {"message": error.message, "type": "invalid_request_error"}
            detail |= {"param": error.param, "code": error.code}
            response = {"status_code": error.status, "request_id": request_id}
            response["body"] = {"error": detail}
            batch.errors.append(entry | {"response": response, "error": None})
            counts["failed"] += 1
            return
        assert isinstance(body, dict)  # validated
        reply = self._next_reply()
        meta = {
            "id": f"chatcmpl-{secrets.token_urlsafe(21)}",
            "created": int(time.time()),
            "model": body["model"],
        }
        prompt = estimate_prompt_tokens(body["messages"])
        completion = _completion(meta, [reply], prompt, False, Faults(), "fp_chatstream")
        response = {"status_code": 200, "request_id": request_id, "body": completion}
        batch.output.append(entry | {"response": response, "error": None})
        counts["completed"] += 1

    def _expire(self, batch: _Batch, now: int) -> None:
        message = "This request could not be executed before the completion window expired."
        for line in batch.lines[batch.done :]:
            batch.errors.append(
                {
                    "id": f"batch_req_{secrets.token_hex(12)}",
                    "custom_id": line["custom_id"],
                    "response": None,
                    "error": {"code": "batch_expired", "message": message},
                }
            )
        self._finish(batch, "expired", now)

    def _finish(self, batch: _Batch, status: str, now: int) -> None:
        obj = batch.obj
        # Lines come in reverse order: results join on custom_id, never on position.
        for key, lines in (("output_file_id", batch.output), ("error_file_id", batch.errors)):
            if lines:
                data = "".join(json.dumps(line) + "\n" for line in reversed(lines)).encode()
                name = f"{obj['id']}_{key.split('_')[0]}.jsonl"
                obj[key] = self._store_file(data, name, "batch_output")["id"]
        obj["status"], obj[f"{status}_at"] = status, now

    # -- shared -------------------------------------------------------------------------------

    def _denied(self, headers: dict[str, str]) -> web.Response | None:
        """A 401 for a wrong key, the scripted ``Faults.http_error``, or ``None``: go on."""
        if self.api_key is not None:
            scheme, _, key = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or key.strip() != self.api_key:
                return _error(401, "Incorrect API key provided.", None, "invalid_api_key")
        if self._take_failure():
            status = self.faults.http_error or 500
            return _error(status, "The server had an error processing your request.", None)
        return None

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        return _error(404, f"Invalid URL ({request.method} {request.path})", None)


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a ``multipart/form-data`` body by name: ``(filename, bytes)`` each.

    Parsed from the recorded bytes (the base class has read the body already), strictly
    enough for a test: parts need a ``Content-Disposition`` with a name.
    """
    _, _, boundary = content_type.partition("boundary=")
    boundary = boundary.split(";")[0].strip().strip('"')
    if not boundary:
        return {}
    parts: dict[str, tuple[str | None, bytes]] = {}
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        fields = dict(
            item.strip().split("=", 1)
            for item in head.decode("utf-8", "replace").split(";")
            if "=" in item
        )
        name = fields.get("name", "").strip('"')
        if name:
            filename = fields.get("filename")
            parts[name] = (
                None if filename is None else filename.strip('"'),
                data.removesuffix(b"\r\n"),
            )
    return parts


def _problem(code: str, message: str, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def _error(status: int, message: str, param: str | None, code: str | None = None) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return web.Response(
        status=status, text=json.dumps({"error": error}), content_type="application/json"
    )
