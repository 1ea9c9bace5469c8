"""The public surface of `chatstream.testing` and `serve_in_thread`, driven by plain sync code."""

from __future__ import annotations

import inspect
import json
import socket
import subprocess
import sys
import threading
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from typing_extensions import assert_type

import chatstream.testing
from chatstream.errors import AuthenticationError
from chatstream.providers.anthropic import ChatAnthropic
from chatstream.providers.ollama import ChatOllama
from chatstream.providers.openai import ChatOpenAI
from chatstream.testing import (
    AnthropicServer,
    FakeChatModel,
    Faults,
    OllamaServer,
    OpenAIServer,
    RecordedRequest,
    ScriptedReply,
    serve_in_thread,
)
from chatstream.testing._base import LocalServer

if TYPE_CHECKING:
    from collections.abc import Callable

    from chatstream.model import BaseChatModel

HELLO = ScriptedReply(text_chunks=["Hel", "lo", " from", " the", " thread", "!"])


def server_threads(name: str) -> list[threading.Thread]:
    """The live threads `serve_in_thread` started for servers of class ``name``."""
    return [t for t in threading.enumerate() if t.name == f"chatstream-testing-{name}"]


# -- the exports ----------------------------------------------------------------------------


def test_all_is_sorted_and_complete() -> None:
    names = chatstream.testing.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    public = {
        name
        for name, value in vars(chatstream.testing).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert set(names) == public


@pytest.mark.parametrize("name", chatstream.testing.__all__)
def test_each_export_is_importable_and_documented(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from chatstream.testing import {name}", namespace)
    obj = namespace[name]
    assert obj is getattr(chatstream.testing, name)
    assert inspect.getdoc(obj), f"{name} has no docstring"
    if inspect.isclass(obj):
        assert getattr(obj, "__final__", False), f"{name} is not @final"


def test_package_docstring_has_an_example() -> None:
    doc = chatstream.testing.__doc__ or ""
    assert "Example:" in doc
    assert "serve_in_thread(" in doc


def test_import_starts_nothing_and_loads_no_pytest() -> None:
    code = (
        "import sys, threading, chatstream.testing; "
        "print(threading.active_count(), "
        "[m for m in ('pytest', 'chatstream.testing.conformance') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1 []"


# -- serve_in_thread, driven by sync clients ------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One server, the sync client that talks to it, and the path that client posts to."""

    make_server: Callable[[], LocalServer]
    make_model: Callable[[str], BaseChatModel]
    path: str


CASES = {
    "openai": Case(
        lambda: OpenAIServer([HELLO]),
        lambda url: ChatOpenAI(base_url=url, api_key="test", model="gpt-test", max_retries=0),
        "/v1/chat/completions",
    ),
    "anthropic": Case(
        lambda: AnthropicServer([HELLO]),
        lambda url: ChatAnthropic(base_url=url, api_key="test", model="claude-test"),
        "/v1/messages",
    ),
    "ollama": Case(
        lambda: OllamaServer([HELLO]),
        lambda url: ChatOllama(base_url=url, model="llama-test"),
        "/api/chat",
    ),
}


@pytest.mark.parametrize("provider", sorted(CASES))
def test_sync_invoke_against_each_server(provider: str) -> None:
    case = CASES[provider]
    with serve_in_thread(case.make_server()) as server:
        with closing(case.make_model(server.base_url)) as model:
            result = model.invoke("Say hi")
        requests = list(server.requests)
    assert result.content == "Hello from the thread!"
    assert [(r.method, r.path) for r in requests] == [("POST", case.path)]
    assert json.dumps(requests[0].body).count("Say hi") == 1
    # After the exit the server has finished every response it started, and lost none.
    assert server.active_streams == 0
    assert server.disconnects == 0
    assert server_threads(type(server).__name__) == []


def test_yields_the_running_server_with_its_type() -> None:
    original = OpenAIServer([HELLO], api_key="sk-test")
    with serve_in_thread(original) as server:
        assert_type(server, OpenAIServer)
        assert server is original
        assert server.base_url.startswith("http://127.0.0.1:")
        with closing(ChatOpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)) as m:
            with pytest.raises(AuthenticationError):
                m.invoke("hi")
        assert_type(server.requests, list[RecordedRequest])
        assert server.requests[0].headers["authorization"] == "Bearer wrong"
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url


def test_script_between_requests_from_the_sync_side() -> None:
    with (
        serve_in_thread(OllamaServer()) as server,
        closing(ChatOllama(base_url=server.base_url, model="llama-test")) as model,
    ):
        server.script([ScriptedReply.from_text("first")])
        assert model.invoke("a").content == "first"
        server.script([ScriptedReply.from_text("second one")])
        assert model.invoke("b").content == "second one"
        assert len(server.requests) == 2


def test_the_thread_runs_only_inside_the_block() -> None:
    assert server_threads("OpenAIServer") == []
    with serve_in_thread(OpenAIServer()) as server:
        (thread,) = server_threads("OpenAIServer")
        assert thread.is_alive()
        assert thread is not threading.current_thread()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass
        port = server.port
    assert not thread.is_alive()
    assert server_threads("OpenAIServer") == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


class Boom(Exception):
    """Raised by a test body on purpose."""


def test_exception_in_body_stops_server_and_closes_its_connections() -> None:
    # A stalled stream keeps a response open at the server when the body raises.
    faults = Faults(stall_after=1)
    request = json.dumps({"model": "llama-test", "messages": [{"role": "user", "content": "x"}]})
    head = (
        "POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(request)}\r\n\r\n"
    )
    received = b""
    with pytest.raises(Boom):  # noqa: PT012 - the body must raise inside the helper
        with serve_in_thread(OllamaServer([HELLO], faults)) as server:
            (thread,) = server_threads("OllamaServer")
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            conn.sendall((head + request).encode())
            while b'"done":false' not in received:
                piece = conn.recv(65536)
                assert piece, "the server closed the stream before stalling"
                received += piece
            assert server.active_streams == 1
            raise Boom
    with conn:
        # The server closed the stalled connection on its way out: EOF, not a timeout.
        rest = b""
        while piece := conn.recv(65536):
            rest += piece
    assert b'"done":true' not in received + rest
    assert not thread.is_alive()
    assert server.active_streams == 0
    # Our own shutdown is not counted as a client leaving.
    assert server.disconnects == 0


def test_start_failure_propagates_and_joins_the_thread() -> None:
    # The bare base class has no routes, so starting it raises inside the server thread.
    with pytest.raises(NotImplementedError):
        with serve_in_thread(LocalServer()):
            pytest.fail("the body ran although the server did not start")
    assert server_threads("LocalServer") == []


def test_start_failure_of_any_async_context_manager_propagates() -> None:
    class Unbindable:
        exited = False

        async def __aenter__(self) -> Unbindable:
            raise OSError(98, "address already in use")

        async def __aexit__(self, *exc_info: object) -> None:
            self.exited = True

    unbindable = Unbindable()
    with pytest.raises(OSError, match="address already in use"):
        with serve_in_thread(unbindable):
            pytest.fail("the body ran although the server did not start")
    assert not unbindable.exited
    assert server_threads("Unbindable") == []


# -- FakeChatModel, the network-free option --------------------------------------------------


def test_fake_chat_model_is_the_providers_one() -> None:
    from chatstream.providers import fake

    assert FakeChatModel is fake.FakeChatModel
    model = FakeChatModel(responses=["Hello there!"])
    assert model.invoke("Hi").content == "Hello there!"
