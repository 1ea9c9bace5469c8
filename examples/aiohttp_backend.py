"""A small aiohttp backend: a model's answer and run log over SSE, and the web chat page.

Run: python examples/aiohttp_backend.py --host 127.0.0.1 --port 8080, then open the printed URL.
--self-test serves on a free port, calls each endpoint once, prints what came back and exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import jsonpatch
from aiohttp import web

from chatstream import create_chat_model
from chatstream.defaults import PROVIDERS
from chatstream.transport.sse import SSEDecoder
from chatstream.web import ReplayStore, cancel_handler, chat_handler, log_handler, resume_handler

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from chatstream import BaseChatModel
    from chatstream.transport.sse import Event

WEB_CHAT = Path(__file__).resolve().parent / "web_chat"
"""The static page served at ``/``."""

QUESTION = "What is the purpose of model regularization?"


def create_app(model: BaseChatModel, *, store: ReplayStore | None = None) -> web.Application:
    """The web app: the three stream endpoints under ``/api`` and the page at ``/``.

    Args:
        model: The model that answers every request (tests pass a scripted one).
        store: Where run logs are kept for resuming; a new in-memory store by default. It is
            installed on the app (a store serves one app).

    Returns:
        An app to run with ``web.run_app`` or `open_site`.
    """
    store = ReplayStore() if store is None else store
    app = web.Application()
    store.install(app)  # the runs it keeps run in its task group, started with the app
    app.router.add_post("/api/chat", chat_handler(model))
    app.router.add_post("/api/log", log_handler(model, store))
    app.router.add_get("/api/log/{run_id}", resume_handler(store))
    app.router.add_delete("/api/log/{run_id}", cancel_handler(store))
    app.router.add_get("/", _index)
    app.router.add_static("/", WEB_CHAT)
    return app


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_CHAT / "index.html")


@asynccontextmanager
async def open_site(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends.

    Args:
        app: The app to serve.
        host: The address to listen on.
        port: The port; ``0`` picks a free one.

    Yields:
        The base URL, with the port actually bound (``http://127.0.0.1:41234``).
    """
    # A short shutdown timeout: a browser that keeps a stream open must not hold up Ctrl-C.
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        if ":" in bound_host:
            bound_host = f"[{bound_host}]"
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()


async def serve(model: BaseChatModel, host: str, port: int) -> None:
    """Serve the app until interrupted."""
    async with open_site(create_app(model), host, port) as base:
        print(f"chatstream web chat on {base}/ with {model.model_name} (Ctrl-C stops)", flush=True)
        await anyio.sleep_forever()


class SelfTestError(Exception):
    """An endpoint did not answer as it should."""


def _report(request: str, status: int, what: str) -> None:
    print(f"{request:<38} {status}  {what}")


def _expect(ok: bool, problem: str) -> None:
    if not ok:
        raise SelfTestError(problem)


def _ended(response: aiohttp.ClientResponse, events: list[Event]) -> bool:
    return response.status == 200 and bool(events) and events[-1].event == "end"


async def _events(response: aiohttp.ClientResponse) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = []
    async for data in response.content.iter_any():
        events += decoder.feed(data)
    return events


def _run_state(patches: list[Event]) -> dict[str, Any]:
    """The run's state, rebuilt by applying each patch event's RFC 6902 ops in order."""
    state: dict[str, Any] = {}
    for event in patches:
        state = jsonpatch.apply_patch(state, json.loads(event.data))
    return state


async def self_test(model: BaseChatModel) -> None:
    """Serve on a free port, call each endpoint once and print what came back.

    Raises:
        SelfTestError: An endpoint answered with an error or an unexpected stream.
    """
    async with open_site(create_app(model)) as base, aiohttp.ClientSession() as session:
        print(f"serving {base}/ with {model.model_name}")
        for path in ("/", "/app.js", "/vendor/fast-json-patch.min.js"):
            async with session.get(base + path) as response:
                size = len(await response.read())
            _report(f"GET {path}", response.status, f"{response.content_type}, {size} bytes")
            _expect(response.status == 200 and size > 0, f"GET {path} failed")

        async with session.post(f"{base}/api/chat", json={"input": QUESTION}) as response:
            chat = await _events(response)
        _expect(_ended(response, chat), "POST /api/chat did not end")
        answer = json.loads(chat[-1].data)["message"]["content"]
        _report("POST /api/chat", response.status, f"{len(chat) - 1} chunk events, end: {answer!r}")

        async with session.post(f"{base}/api/log", json={"input": QUESTION}) as response:
            log = await _events(response)
        _expect(_ended(response, log), "POST /api/log did not end")
        patches = log[:-1]
        state = _run_state(patches)
        final = state["final_output"]["generations"][0][0]["text"]
        _report("POST /api/log", response.status, f"{len(patches)} patches, end: {final!r}")
        streamed = "".join(chunk["content"] for chunk in state["streamed_output"])
        _expect(final == streamed, "the run log's final text is not what it streamed")

        url = f"{base}/api/log/{state['id']}"
        async with session.get(url, headers={"Last-Event-ID": "0"}) as response:
            replayed = await _events(response)
        _report("GET /api/log/{run_id}", response.status, f"{len(replayed) - 1} patches replayed")
        same = [event.data for event in replayed] == [event.data for event in log]
        _expect(_ended(response, replayed) and same, "the resumed run log is not the live one")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the web chat, or run the self-test; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="the port (0: any free one)")
    parser.add_argument("--provider", choices=list(PROVIDERS), help="the provider to use")
    parser.add_argument("--self-test", action="store_true", help="call each endpoint, then exit")
    args = parser.parse_args(argv)
    model = create_chat_model(args.provider)
    if args.self_test:
        try:
            anyio.run(self_test, model)
        except SelfTestError as exc:
            print(f"self-test failed: {exc}", file=sys.stderr)
            return 1
        print("self-test passed")
        return 0
    # Python installs no SIGINT handler when it starts with SIGINT ignored (a background job
    # of a non-interactive shell, some job runners), and then Ctrl-C or `kill -INT` would not
    # stop the server: install the usual one, which raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        anyio.run(serve, model, args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
