"""Response caches: a hit replays the recorded stream through the same run as a live call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from chatstream import AIMessageChunk, CallbackHandler, RateLimitError, Run
from chatstream.cache import MemoryCache, SQLiteCache, get_default_cache, set_default_cache
from chatstream.providers.fake import FakeChatModel, FakeResponse
from chatstream.providers.openai import ChatOpenAI
from chatstream.testing import OpenAIServer, ScriptedReply

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

REPLY = ScriptedReply(text_chunks=["Hel", "lo", " there"], usage={"prompt_tokens": 3})


class Tokens(CallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, chunk: AIMessageChunk, run: Run) -> None:
        self.tokens.append(token)


@pytest.fixture
def no_default_cache() -> Iterator[None]:
    before = get_default_cache()
    set_default_cache(None)
    yield
    set_default_cache(before)


async def stream(model: Any, text: str = "hi", **kwargs: Any) -> list[AIMessageChunk]:
    return [chunk async for chunk in model.astream(text, **kwargs)]


async def test_a_hit_replays_the_recorded_chunks_without_the_server() -> None:
    cache = MemoryCache()
    async with OpenAIServer([REPLY] * 3) as server:
        async with ChatOpenAI(base_url=server.base_url, cache=cache) as model:
            live = await stream(model)
            tokens = Tokens()
            replayed = await stream(model, config={"callbacks": [tokens]})
            patches = [patch async for patch in model.astream_log("hi")]
    assert len(server.requests) == 1
    assert replayed == live  # the same chunks, the same chunking
    assert tokens.tokens == [chunk.text for chunk in live]
    added = [op["value"] for patch in patches for op in patch.ops if op["op"] == "add"]
    assert added == live
    assert patches[-1].ops[0]["value"]["generations"][0][0]["text"] == "Hello there"


async def test_the_key_is_the_call_settings_and_input() -> None:
    model = FakeChatModel(responses=["one", "two", "three", "four"], cache=MemoryCache())
    assert (await model.ainvoke("q")).text == "one"
    assert (await model.ainvoke("q")).text == "one"  # a hit
    assert (await model.ainvoke("q", temperature=0.3)).text == "two"  # other settings
    assert (await model.ainvoke("other")).text == "three"  # other input
    assert (await model.ainvoke("q", config={"cache": False})).text == "four"  # opted out
    assert (await model.ainvoke("q")).text == "one"


async def test_errors_and_partial_streams_are_never_cached() -> None:
    failing = FakeResponse(text="a b c", error=RateLimitError("slow"), error_after=1)
    model = FakeChatModel(responses=[failing, "fine", "again"], cache=MemoryCache())
    with pytest.raises(RateLimitError):
        await model.ainvoke("q")
    async with model.astream("q") as chunks:
        async for _ in chunks:
            break  # an early close: the rest never came, nothing is recorded
    assert model.cache is not None and len(model.cache) == 0  # type: ignore[arg-type]
    assert (await model.ainvoke("q")).text == "again"
    assert (await model.ainvoke("q")).text == "again"


async def test_a_sqlite_cache_outlives_its_object(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    async with OpenAIServer([REPLY] * 2) as server:
        first = SQLiteCache(path)
        async with ChatOpenAI(base_url=server.base_url, cache=first) as model:
            live = await stream(model)
        first.close()
        second = SQLiteCache(path)  # a new process would see the same file
        async with ChatOpenAI(base_url=server.base_url, cache=second) as model:
            replayed = await stream(model)
        second.close()
    assert len(server.requests) == 1
    assert replayed == live


async def test_the_default_cache_serves_models_without_one(no_default_cache: None) -> None:
    cache = MemoryCache()
    set_default_cache(cache)
    model = FakeChatModel(responses=["one", "two"])
    assert [(await model.ainvoke("q")).text for _ in range(2)] == ["one", "one"]
    never = FakeChatModel(responses=["one", "two"], cache=False)
    assert [(await never.ainvoke("q")).text for _ in range(2)] == ["one", "two"]


async def test_replay_timing_keeps_the_chunks() -> None:
    model = FakeChatModel(responses=["a b c"], delay=0.002, cache=MemoryCache(replay_timing=True))
    live = await stream(model)
    assert await stream(model) == live


async def test_memory_cache_is_an_lru() -> None:
    cache = MemoryCache(max_entries=2)
    model = FakeChatModel(responses=["1", "2", "3", "4", "5", "6"], cache=cache)
    texts = [(await model.ainvoke(text)).text for text in ("a", "b", "a", "c", "b", "a")]
    # "a" is a hit once; "c" evicts "b" (least recently used), then "b" evicts "a".
    assert texts == ["1", "2", "1", "3", "4", "5"]
    assert len(cache) == 2
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(0)
