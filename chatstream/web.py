"""Serve a model's stream, or its run log, as server-sent events from an aiohttp app.

``chat_handler`` streams chunks; ``log_handler`` streams JSON-patch lists (each with its ``seq``
as the SSE id) and keeps them in a `ReplayStore` so that ``resume_handler`` can give a client
that reconnects with ``Last-Event-ID`` what it missed. A client that goes away cancels its model
stream at once. Example::

    app = web.Application()
    store = ReplayStore()
    app.router.add_post("/chat", chat_handler(model))
    app.router.add_post("/log", log_handler(model, store))
    app.router.add_get("/log/{run_id}", resume_handler(store))
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, final

import anyio
from aiohttp import web

from .errors import ChatStreamError, InputTypeError, InvalidInputError, ProviderError
from .inputs import to_messages
from .messages import AIMessageChunk, BaseMessage, merge_chunks

if TYPE_CHECKING:
    from .model import BaseChatModel
    from .runlog import RunLogPatch

__all__ = ["MAX_BODY", "ReplayStore", "chat_handler", "log_handler", "resume_handler"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 256 * 1024
"""Default largest request body, in bytes."""

_WATCH_INTERVAL = 0.05
"""Seconds between checks that the client is still connected while the model is quiet."""


def _sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    lines = f"id: {event_id}\n" if event_id is not None else ""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"{lines}event: {event}\ndata: {payload}\n\n".encode()


def _error_data(error: BaseException) -> dict[str, Any]:
    data: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, ProviderError):
        data["status"] = error.status
    partial = getattr(error, "partial", None)
    if isinstance(partial, AIMessageChunk):
        data["partial"] = partial.model_dump(mode="json")
    return data


def _bad_request(status: int, message: str, where: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "where": where}}, status=status)


async def _read_input(request: web.Request, max_body: int) -> list[BaseMessage] | web.Response:
    """The request's model input, or the 4xx response that explains what was wrong."""
    if request.content_length is not None and request.content_length > max_body:
        return _bad_request(413, f"the body is over {max_body} bytes")
    raw = await request.content.read(max_body + 1)
    if len(raw) > max_body:
        return _bad_request(413, f"the body is over {max_body} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _bad_request(400, f"the body is not JSON: {exc}")
    if not isinstance(body, dict) or ("messages" in body) == ("input" in body):
        return _bad_request(400, "send a JSON object with either 'messages' or 'input'")
    where = "messages" if "messages" in body else "input"
    value: Any = body[where]  # JSON of any shape: to_messages checks it
    try:
        return to_messages(value, where=where)  # now, so that a 400 names the bad item
    except (InvalidInputError, InputTypeError) as exc:
        return _bad_request(400, str(exc), exc.where)


async def _open_sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must pass events on as they come
        }
    )
    await response.prepare(request)
    return response


async def _until_disconnected(request: web.Request) -> None:
    # aiohttp does not cancel handlers on disconnect unless the app asks it to, so watch.
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await anyio.sleep(_WATCH_INTERVAL)


async def _relay(request: web.Request, events: AsyncGenerator[bytes, None]) -> web.StreamResponse:
    """Write ``events`` as they come; a client that leaves cancels the stream behind them."""
    response = await _open_sse(request)
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            await _until_disconnected(request)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            async with aclosing(events):
                async for event in events:
                    await response.write(event)
        except ConnectionError:  # the client left between two checks
            pass
        group.cancel_scope.cancel()
    return response


def chat_handler(model: BaseChatModel, *, max_body: int = MAX_BODY) -> Handler:
    """A handler that streams the answer: ``chunk`` events, then ``end`` (or ``error``).

    The body is ``{"messages": [...]}`` or ``{"input": "..."}``. ``end`` carries the merged
    message and its usage; ``error`` the error's type, message and partial output.
    """

    async def events(value: list[BaseMessage]) -> AsyncGenerator[bytes, None]:
        chunks: list[AIMessageChunk] = []
        try:
            async with model.astream(value) as stream:
                async for chunk in stream:
                    chunks.append(chunk)
                    yield _sse("chunk", chunk.model_dump(mode="json"))
        except ChatStreamError as exc:
            yield _sse("error", _error_data(exc))
            return
        message = merge_chunks(chunks).to_message()
        yield _sse(
            "end", {"message": message.model_dump(mode="json"), "usage": message.usage_metadata}
        )

    async def handle(request: web.Request) -> web.StreamResponse:
        value = await _read_input(request, max_body)
        if isinstance(value, web.Response):
            return value
        return await _relay(request, events(value))

    return handle


@final
class ReplayStore:
    """Recent run logs kept in memory so that a client can resume a stream it lost.

    Each run keeps at most ``max_patches`` (the oldest are forgotten first) for ``ttl`` seconds
    after it ends; at most ``max_runs`` runs are kept.
    """

    def __init__(self, *, ttl: float = 300.0, max_patches: int = 10_000, max_runs: int = 1_000):
        self.ttl = ttl
        self.max_patches = max_patches
        self.max_runs = max_runs
        self._runs: OrderedDict[str, _Replay] = OrderedDict()

    def _prune(self) -> None:
        now = time.monotonic()
        for run_id in [key for key, replay in self._runs.items() if replay.expired(now, self.ttl)]:
            del self._runs[run_id]
        while len(self._runs) > self.max_runs:
            self._runs.popitem(last=False)

    def open(self, run_id: str) -> _Replay:
        """Start keeping a run's patches."""
        self._prune()
        replay = self._runs[run_id] = _Replay(self.max_patches)
        return replay

    def get(self, run_id: str) -> _Replay | None:
        """A run's kept patches, while they are still kept."""
        self._prune()
        return self._runs.get(run_id)


class _Replay:
    """The kept patches of one run, and whether it has ended."""

    def __init__(self, max_patches: int) -> None:
        self.patches: deque[tuple[int, bytes]] = deque(maxlen=max_patches)
        self.ended_at: float | None = None
        self.final: bytes | None = None

    def expired(self, now: float, ttl: float) -> bool:
        return self.ended_at is not None and now - self.ended_at > ttl

    def after(self, seq: int) -> list[bytes] | None:
        """Patches after ``seq``; ``None`` when some of them were already forgotten."""
        if self.patches and self.patches[0][0] > seq + 1:
            return None
        return [event for number, event in self.patches if number > seq]


def log_handler(
    model: BaseChatModel, store: ReplayStore | None = None, *, max_body: int = MAX_BODY
) -> Handler:
    """A handler that streams the run log: ``patch`` events whose data is ``to_json()``.

    Each event's SSE id is the patch's ``seq``; the run id is in the first patch (``/id``).
    The stream ends with an ``end`` event, or an ``error`` event after the patch recording it.
    With a `store`, the patches are kept for `resume_handler`.
    """

    async def events(value: list[BaseMessage]) -> AsyncGenerator[bytes, None]:
        replay: _Replay | None = None
        final = _sse("error", {"type": "Cancelled", "message": "the client went away"})
        try:
            async with model.astream_log(value) as patches:
                async for patch in patches:
                    event = _patch_event(patch)
                    if replay is None and store is not None:
                        replay = store.open(str(patch.ops[0]["value"]["id"]))
                    if replay is not None:
                        replay.patches.append((patch.seq or 0, event))
                    yield event
            final = _sse("end", {})
        except ChatStreamError as exc:
            final = _sse("error", _error_data(exc))
        finally:  # a resuming client learns how the run ended, cancellation included
            if replay is not None:
                replay.final, replay.ended_at = final, time.monotonic()
        yield final

    async def handle(request: web.Request) -> web.StreamResponse:
        value = await _read_input(request, max_body)
        if isinstance(value, web.Response):
            return value
        return await _relay(request, events(value))

    return handle


def _patch_event(patch: RunLogPatch) -> bytes:
    return _sse("patch", patch.to_json(), str(patch.seq))


def resume_handler(store: ReplayStore) -> Handler:
    """A ``GET .../{run_id}`` handler replaying the patches after ``Last-Event-ID``.

    An unknown run, an id that is not a number, or patches that were already forgotten get one
    ``error`` event saying so.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        run_id = request.match_info.get("run_id", "")
        replay = store.get(run_id)
        last = request.headers.get("Last-Event-ID", "0")
        response = await _open_sse(request)
        if replay is None:
            problem = f"run {run_id!r} is unknown or has expired"
        elif not last.isdigit():
            problem = f"Last-Event-ID {last!r} is not a patch number"
        elif (events := replay.after(int(last))) is None:
            problem = f"the patches after {last} are no longer kept"
        else:
            for event in events:
                await response.write(event)
            if replay.final is not None:
                await response.write(replay.final)
            return response
        await response.write(_sse("error", {"type": "ResumeError", "message": problem}))
        return response

    return handle
