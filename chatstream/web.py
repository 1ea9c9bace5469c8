"""Serve a model's stream, or its run log, as server-sent events from an aiohttp app.

``chat_handler`` streams chunks and cancels the model the moment its client goes away.
``log_handler`` streams the run log: JSON-patch lists, each with its ``seq`` as the SSE id. With
a `ReplayStore` the run runs in the store's task group rather than in the request: it outlives
a client that drops for the store's ``grace`` seconds, and ``resume_handler`` lets any number
of clients follow it (``Last-Event-ID`` says where to pick up) to its ``end``. Example::

    app = web.Application()
    store = ReplayStore(grace=30, ttl=300)
    store.install(app)  # the store's runs live, and are cancelled at shutdown, with the app
    app.router.add_post("/chat", chat_handler(model))
    app.router.add_post("/log", log_handler(model, store))
    app.router.add_get("/log/{run_id}", resume_handler(store))
    app.router.add_delete("/log/{run_id}", cancel_handler(store))
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web

from ._replay import ReplayStore
from .errors import ChatStreamError, InputTypeError, InvalidInputError, ProviderError
from .inputs import to_messages
from .messages import AIMessageChunk, BaseMessage

if TYPE_CHECKING:
    from ._replay import _Replay
    from .model import BaseChatModel
    from .runlog import RunLogPatch
    from .streams import ChatStream

__all__ = [
    "MAX_BODY",
    "RUN_ID_HEADER",
    "ReplayStore",
    "cancel_handler",
    "chat_handler",
    "log_handler",
    "resume_handler",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 256 * 1024
"""Default largest request body, in bytes."""

RUN_ID_HEADER = "Chatstream-Run-Id"
"""The response header that names the run a kept run-log stream follows."""

_WATCH_INTERVAL = 0.05
"""Seconds between checks that the client is still connected while the model is quiet."""

_log = logging.getLogger("chatstream.web")


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


def _json_error(status: int, message: str, where: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "where": where}}, status=status)


async def _read_input(request: web.Request, max_body: int) -> list[BaseMessage] | web.Response:
    """The request's model input, or the 4xx response that explains what was wrong."""
    if request.content_length is not None and request.content_length > max_body:
        return _json_error(413, f"the body is over {max_body} bytes")
    raw = await request.content.read(max_body + 1)
    if len(raw) > max_body:
        return _json_error(413, f"the body is over {max_body} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _json_error(400, f"the body is not JSON: {exc}")
    if not isinstance(body, dict) or ("messages" in body) == ("input" in body):
        return _json_error(400, "send a JSON object with either 'messages' or 'input'")
    where = "messages" if "messages" in body else "input"
    value: Any = body[where]  # JSON of any shape: to_messages checks it
    try:
        return to_messages(value, where=where)  # now, so that a 400 names the bad item
    except (InvalidInputError, InputTypeError) as exc:
        return _json_error(400, str(exc), exc.where)


async def _open_sse(request: web.Request, run_id: str | None = None) -> web.StreamResponse:
    headers = {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # proxies must pass events on as they come
    }
    if run_id is not None:  # a client that drops before the first patch can still resume
        headers[RUN_ID_HEADER] = run_id
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    return response


async def _until_disconnected(request: web.Request) -> None:
    # aiohttp does not cancel handlers on disconnect unless the app asks it to, so watch.
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await anyio.sleep(_WATCH_INTERVAL)


async def _while_connected(request: web.Request, write: Callable[[], Awaitable[None]]) -> None:
    """Run ``write``; a client that leaves cancels it (and what it awaits) at once."""
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            await _until_disconnected(request)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            await write()
        except ConnectionError:  # the client left between two checks
            pass
        group.cancel_scope.cancel()


async def _relay(request: web.Request, events: AsyncGenerator[bytes, None]) -> web.StreamResponse:
    """Write ``events`` as they come; a client that leaves cancels the stream behind them."""
    response = await _open_sse(request)

    async def write() -> None:
        async with aclosing(events):
            async for event in events:
                await response.write(event)

    await _while_connected(request, write)
    return response


async def _one_event(request: web.Request, event: bytes) -> web.StreamResponse:
    response = await _open_sse(request)
    await response.write(event)
    return response


def _resume_error(message: str) -> bytes:
    return _sse("error", {"type": "ResumeError", "message": message})


def chat_handler(model: BaseChatModel, *, max_body: int = MAX_BODY) -> Handler:
    """A handler that streams the answer: ``chunk`` events, then ``end`` (or ``error``).

    The body is ``{"messages": [...]}`` or ``{"input": "..."}``. ``end`` carries the run's
    ``run_id``, its final ``message`` (`Run.final_message`, whose id is ``run-<run_id>`` unless
    the provider gave one) and ``usage``; ``error`` the error's type, message and partial
    output. A client that goes away cancels the model's stream at once.
    """

    async def events(value: list[BaseMessage]) -> AsyncGenerator[bytes, None]:
        try:
            async with model.astream(value) as stream:
                async for chunk in stream:
                    yield _sse("chunk", chunk.model_dump(mode="json"))
        except ChatStreamError as exc:
            yield _sse("error", _error_data(exc))
            return
        message = stream.message
        yield _sse(
            "end",
            {
                "run_id": str(stream.run.id),
                "message": message.model_dump(mode="json"),
                "usage": stream.run.usage,
            },
        )

    async def handle(request: web.Request) -> web.StreamResponse:
        value = await _read_input(request, max_body)
        if isinstance(value, web.Response):
            return value
        return await _relay(request, events(value))

    return handle


def _patch_event(patch: RunLogPatch) -> bytes:
    return _sse("patch", patch.to_json(), str(patch.seq))


def _end_event(run_id: str) -> bytes:
    return _sse("end", {"run_id": run_id})


def _cancelled_event(reason: str) -> bytes:
    return _sse("error", {"type": "Cancelled", "message": reason})


async def _drive(stream: ChatStream[RunLogPatch], replay: _Replay) -> bytes:
    """Run a logged run to its end in the store's task group, publishing each patch event."""
    try:
        async with stream:
            async for patch in stream:
                replay.publish(patch.seq or 0, _patch_event(patch))
    except ChatStreamError as exc:
        return _sse("error", _error_data(exc))
    except Exception:  # not a chatstream error, so its text may hold anything: log it instead
        _log.exception("run %s failed", replay.run_id)
        return _sse("error", {"type": "InternalError", "message": "the run failed on the server"})
    return _end_event(replay.run_id)


async def _follow(request: web.Request, replay: _Replay, after: int) -> web.StreamResponse:
    """Stream a kept run from the patch after ``after``: live patches as they come, then end."""
    # Counted before the first await, so that the run never sees a moment with no client.
    with replay.attached():
        response = await _open_sse(request, replay.run_id)

        async def write() -> None:
            seq = after
            while True:
                events = replay.since(seq)
                if events is None:  # fell behind the kept window (or asked for too old a patch)
                    await response.write(
                        _resume_error(f"the patches after {seq} are no longer kept")
                    )
                    return
                if events:
                    seq = events[-1][0]
                    await response.write(b"".join(event for _, event in events))
                elif replay.final is not None:
                    await response.write(replay.final)
                    return
                else:  # no await since `since`, so no patch can slip in unseen
                    await replay.wait()

        await _while_connected(request, write)
    return response


def log_handler(
    model: BaseChatModel, store: ReplayStore | None = None, *, max_body: int = MAX_BODY
) -> Handler:
    """A handler that streams the run log: ``patch`` events whose data is ``to_json()``.

    Each event's SSE id is the patch's ``seq``; the run id is in the first patch (``/id``) and,
    for a kept run, in the `RUN_ID_HEADER` response header. The stream ends with ``end``
    (``{"run_id": ...}``), or an ``error`` event after the patch recording it.

    Without a `store`, the run runs in the request and a client that goes away cancels it. With
    one (installed on the app), the run runs in the store's task group and its patches are kept
    for `resume_handler`: a client that drops leaves it running for the store's ``grace``
    seconds. A client that falls more than the store's ``max_patches`` behind gets an ``error``
    event; a new run while the store is full of live runs gets a 503.
    """

    async def events(value: list[BaseMessage]) -> AsyncGenerator[bytes, None]:
        try:
            async with model.astream_log(value) as patches:
                async for patch in patches:
                    yield _patch_event(patch)
        except ChatStreamError as exc:
            yield _sse("error", _error_data(exc))
            return
        yield _end_event(str(patches.run.id))

    async def handle(request: web.Request) -> web.StreamResponse:
        value = await _read_input(request, max_body)
        if isinstance(value, web.Response):
            return value
        if store is None:
            return await _relay(request, events(value))
        try:
            stream = model.astream_log(value)
        except ChatStreamError as exc:
            return await _one_event(request, _sse("error", _error_data(exc)))
        try:
            replay = store.start(str(stream.run.id), partial(_drive, stream), _cancelled_event)
        except Exception:  # the run never started (the store is not running): release it
            await stream.aclose()
            raise
        if replay is None:
            await stream.aclose()
            return _json_error(503, "too many live runs; try again later")
        return await _follow(request, replay, 0)

    return handle


def resume_handler(store: ReplayStore) -> Handler:
    """A ``GET .../{run_id}`` handler that follows a kept run from after ``Last-Event-ID``.

    It sends the kept patches after that id, then the live ones as the run makes them, then
    the run's ``end`` (or ``error``) event, just as `log_handler` does; any number of clients
    may follow one run. An unknown or expired run, an id that is not a number, or patches that
    were already forgotten get one ``error`` event (``ResumeError``) saying so.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        run_id = request.match_info.get("run_id", "")
        replay = store.get(run_id)
        last = request.headers.get("Last-Event-ID", "0")
        if replay is None:
            problem = f"run {run_id!r} is unknown or has expired"
        elif not last.isdigit():
            problem = f"Last-Event-ID {last!r} is not a patch number"
        else:
            return await _follow(request, replay, int(last))
        return await _one_event(request, _resume_error(problem))

    return handle


def cancel_handler(store: ReplayStore) -> Handler:
    """A ``DELETE .../{run_id}`` handler that cancels a kept run now (a UI's Stop button).

    Its followers get an ``error`` event (``Cancelled``). Answers 202, or 404 for a run the
    store does not keep.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        run_id = request.match_info.get("run_id", "")
        replay = store.get(run_id)
        if replay is None:
            return _json_error(404, f"run {run_id!r} is unknown or has expired")
        replay.cancel("a client cancelled the run")
        return web.json_response({"run_id": run_id}, status=202)  # its followers see it end

    return handle
