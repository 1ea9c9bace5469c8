"""Models travel: they pickle and deepcopy before and after use, across spawn and fork."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from typing import TYPE_CHECKING, Any

import pytest

from chatstream import BaseChatModel
from chatstream.providers.anthropic import ChatAnthropic
from chatstream.providers.fake import FakeChatModel
from chatstream.providers.llamacpp import ChatLlamaCpp
from chatstream.providers.offline import ChatOffline
from chatstream.providers.ollama import ChatOllama
from chatstream.providers.openai import ChatOpenAI
from chatstream.testing import (
    AnthropicServer,
    OllamaServer,
    OpenAIServer,
    ScriptedReply,
    serve_in_thread,
)

if TYPE_CHECKING:
    from collections.abc import Callable

SECRET = "sk-travel-0123456789-secret"
HELLO = ScriptedReply(text_chunks=["Hel", "lo"])

SERVERS: dict[type[BaseChatModel], Callable[[], Any]] = {
    ChatOpenAI: lambda: OpenAIServer([HELLO] * 4, api_key=SECRET),
    ChatAnthropic: lambda: AnthropicServer([HELLO] * 4, api_key=SECRET),
    ChatOllama: lambda: OllamaServer([HELLO] * 4, api_key=SECRET),
}


def travel(model: BaseChatModel, how: str) -> BaseChatModel:
    if how == "pickle":
        copied = pickle.loads(pickle.dumps(model))
        assert isinstance(copied, BaseChatModel)
        return copied
    return copy.deepcopy(model)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("cls", list(SERVERS))
def test_an_http_model_travels_before_and_after_use(cls: type[BaseChatModel], how: str) -> None:
    with serve_in_thread(SERVERS[cls]()) as server:
        model = cls(base_url=server.base_url, api_key=SECRET, default_headers={"X-Token": SECRET})
        fresh = travel(model, how)
        assert fresh.invoke("hi").text == "Hello"
        assert model.invoke("hi").text == "Hello"  # used: its pool holds a live session
        used = travel(model, how)
        assert used.invoke("hi").text == "Hello"
        assert used.__dict__ == model.__dict__  # the same settings (private state is not)
        for copied in (fresh, used):
            assert SECRET not in repr(copied)
            key = copied.__dict__["api_key"]  # still a SecretStr, still the key
            assert key.get_secret_value() == SECRET
        model.close()
        assert used.invoke("hi").text == "Hello"  # its own pool: closing the original is no matter
        used.close()
        fresh.close()


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_in_process_models_travel(how: str) -> None:
    fake = FakeChatModel(responses=["a b"], temperature=0.5)
    assert fake.invoke("q").text == "a b"
    assert travel(fake, how).invoke("q").text == "a b"
    offline = ChatOffline()
    offline.invoke("q")
    assert "offline" in travel(offline, how).invoke("q").text
    local = ChatLlamaCpp(max_tokens=4)
    assert travel(local, how).__dict__ == local.__dict__


def _call_in_child(payload: bytes, queue: Any) -> None:
    model = pickle.loads(payload)
    try:
        queue.put(model.invoke("hi").text)
    except Exception as exc:  # reported to the parent, which fails the test
        queue.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_used_model_works_in_a_child_process(method: str) -> None:
    context: Any = multiprocessing.get_context(method)  # typeshed's BaseContext lacks Process
    with serve_in_thread(OpenAIServer([HELLO] * 4, api_key=SECRET)) as server:
        model = ChatOpenAI(base_url=server.base_url, api_key=SECRET)
        assert model.invoke("hi").text == "Hello"  # the parent's pool and loop are live now
        queue = context.Queue()
        child = context.Process(target=_call_in_child, args=(pickle.dumps(model), queue))
        child.start()
        answer = queue.get(timeout=60)
        child.join(timeout=30)
        assert model.invoke("hi").text == "Hello"  # the parent is unaffected
        model.close()
    assert answer == "Hello"
    assert child.exitcode == 0
