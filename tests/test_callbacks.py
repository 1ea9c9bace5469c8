from __future__ import annotations

import logging
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from chatstream import AIMessageChunk, CallbackHandler, LLMResult, RateLimitError, Run
from chatstream.providers.fake import FakeChatModel, FakeResponse


class Recorder(CallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_chat_model_start(self, run: Run) -> None:
        self.events.append(("start", run.messages[-1].text))

    def on_llm_new_token(self, token: str, chunk: AIMessageChunk, run: Run) -> None:
        self.events.append(("token", token))

    def on_llm_end(self, result: LLMResult, run: Run) -> None:
        self.events.append(("end", result.generations[0][0].text))

    def on_llm_error(self, error: BaseException, partial: AIMessageChunk | None, run: Run) -> None:
        self.events.append(("error", (type(error).__name__, partial and partial.content)))


class AsyncRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def on_llm_new_token(self, token: str, chunk: AIMessageChunk, run: Run) -> None:
        await anyio.lowlevel.checkpoint()
        self.events.append(("token", token))

    async def on_llm_end(self, result: LLMResult, run: Run) -> None:
        self.events.append(("end", result.llm_output))


EXPECTED = [("start", "q"), ("token", "a"), ("token", " b"), ("token", ""), ("end", "a b")]


async def test_sync_handler_sees_every_event_in_order() -> None:
    recorder = Recorder()
    model = FakeChatModel(responses=["a b"], callbacks=[recorder])
    await model.ainvoke("q")
    assert recorder.events == EXPECTED


async def test_async_handler_and_per_call_handlers() -> None:
    on_model, on_call = Recorder(), AsyncRecorder()
    model = FakeChatModel(responses=["a b"], callbacks=[on_model])
    chunks = [c async for c in model.astream("q", config={"callbacks": [on_call]})]
    assert len(chunks) == 3
    assert on_model.events == EXPECTED
    assert on_call.events[:3] == [("token", "a"), ("token", " b"), ("token", "")]
    assert on_call.events[3] == (
        "end",
        {
            "token_usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            "model_name": "fake-chat-model",
        },
    )


async def test_error_reaches_handlers_with_partial_output() -> None:
    recorder = Recorder()
    model = FakeChatModel(
        responses=[FakeResponse(text="a b c", error=RateLimitError("429"), error_after=2)],
        callbacks=[recorder],
    )
    with pytest.raises(RateLimitError):
        await model.ainvoke("q")
    assert recorder.events[-1] == ("error", ("RateLimitError", "a b"))


class Broken(CallbackHandler):
    def __init__(self, raise_error: bool) -> None:
        self.raise_error = raise_error

    def on_llm_new_token(self, token: str, chunk: AIMessageChunk, run: Run) -> None:
        raise RuntimeError("handler bug")


class BrokenAsync:
    raise_error = False

    async def on_llm_new_token(self, token: str, chunk: AIMessageChunk, run: Run) -> None:
        raise RuntimeError("async handler bug")


async def test_a_failing_handler_does_not_break_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = FakeChatModel(responses=["a b"], callbacks=[Broken(raise_error=False), BrokenAsync()])
    with caplog.at_level(logging.WARNING, logger="chatstream.callbacks"):
        assert (await model.ainvoke("q")).content == "a b"
    messages = [record.getMessage() for record in caplog.records]
    assert any("Broken.on_llm_new_token" in m and "handler bug" in m for m in messages)
    assert any("BrokenAsync.on_llm_new_token" in m for m in messages)


async def test_raise_error_handler_fails_the_call() -> None:
    model = FakeChatModel(responses=["a b c d"], callbacks=[Broken(raise_error=True)])
    with pytest.raises(RuntimeError, match="handler bug"):
        await model.ainvoke("q")


class Slow(CallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, chunk: AIMessageChunk, run: Run) -> None:
        time.sleep(0.02)  # blocking: must run off the event loop (blockbuster would fail here)
        self.tokens.append(token)


async def test_a_slow_sync_handler_does_not_stall_the_loop() -> None:
    slow = Slow()
    model = FakeChatModel(responses=["a b c d e"], callbacks=[slow])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.005)
            ticks += 1

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        await model.ainvoke("q")
        group.cancel_scope.cancel()
    assert slow.tokens == ["a", " b", " c", " d", " e", ""]  # all delivered before ainvoke returned
    assert ticks >= 5  # the loop kept running while the handler slept ~120 ms


def test_handlers_work_through_the_sync_api() -> None:
    recorder = Recorder()
    FakeChatModel(responses=["a b"]).invoke("q", config={"callbacks": [recorder]})
    assert recorder.events == EXPECTED


class CallsAModel(CallbackHandler):
    """A sync handler that itself calls a model (sync) whose handlers are sync too."""

    def __init__(self) -> None:
        self.inner = FakeChatModel(responses=["inner answer"], callbacks=[Recorder()])
        self.answers: list[str] = []

    def on_llm_end(self, result: LLMResult, run: Run) -> None:
        self.answers.append(self.inner.invoke("nested").text)


def test_a_sync_handler_calling_a_model_does_not_deadlock() -> None:
    handler = CallsAModel()
    model = FakeChatModel(responses=["outer"], callbacks=[handler])
    done = threading.Event()
    failures: list[BaseException] = []

    def call() -> None:
        try:
            model.invoke("q")
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            done.set()

    threading.Thread(target=call, daemon=True).start()
    # A deadlock never sets the event; a working call sets it at once (the bound only ends a hang).
    assert done.wait(timeout=30), "the call deadlocked on its own handler's nested call"
    assert failures == []
    assert handler.answers == ["inner answer"]


class Blocking(CallbackHandler):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def on_llm_new_token(self, token: str, chunk: AIMessageChunk, run: Run) -> None:
        self.entered.set()
        self.release.wait(timeout=30)


async def test_a_blocked_sync_handler_of_one_call_does_not_hold_up_another() -> None:
    blocking = Blocking()
    quick = Recorder()
    stuck = FakeChatModel(responses=["a b"], callbacks=[blocking])
    other = FakeChatModel(responses=["x y"], callbacks=[quick])
    async with anyio.create_task_group() as group:
        group.start_soon(stuck.ainvoke, "q")
        await anyio.to_thread.run_sync(blocking.entered.wait)
        # The first call's handler is blocked; the second call's handlers run on a lane of
        # their own, so it completes, with every event delivered, while the first waits.
        assert (await other.ainvoke("q")).content == "x y"
        assert quick.events[-1] == ("end", "x y")
        assert not blocking.release.is_set()
        blocking.release.set()
    assert stuck.callbacks == [blocking]


async def test_sync_handlers_stay_in_order_per_call_across_concurrent_calls() -> None:
    recorders = [Recorder() for _ in range(8)]
    models = [FakeChatModel(responses=["a b"], callbacks=[r]) for r in recorders]
    async with anyio.create_task_group() as group:
        for model in models:
            group.start_soon(model.ainvoke, "q")
    assert all(recorder.events == EXPECTED for recorder in recorders)
    # Each lane's thread ends once its call is over (it may still be returning: wait a bit).
    with anyio.move_on_after(10):
        while [t for t in threading.enumerate() if t.name == "chatstream-callbacks"]:
            await anyio.sleep(0.01)
    assert not [t for t in threading.enumerate() if t.name == "chatstream-callbacks"]
