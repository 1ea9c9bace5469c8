from __future__ import annotations

import ast
import contextvars
import inspect
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from chatstream import (
    AIMessage,
    AIMessageChunk,
    BaseChatModel,
    BaseMessage,
    ChatStreamError,
    RateLimitError,
)
from chatstream.providers.fake import FakeChatModel, FakeResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .conftest import Tracked

TWINS = [
    ("invoke", "ainvoke"),
    ("stream", "astream"),
    ("batch", "abatch"),
    ("batch_as_completed", "abatch_as_completed"),
    ("generate", "agenerate"),
    ("stream_log", "astream_log"),
    ("map", "amap"),
    ("close", "aclose"),
]


@pytest.mark.parametrize(("sync_name", "async_name"), TWINS)
def test_sync_twin_has_the_same_signature(sync_name: str, async_name: str) -> None:
    sync_sig = inspect.signature(getattr(BaseChatModel, sync_name))
    async_sig = inspect.signature(getattr(BaseChatModel, async_name))
    # After ``self``, which the twins (functions of chatstream._sync_twins) annotate.
    assert list(sync_sig.parameters.values())[1:] == list(async_sig.parameters.values())[1:]


@pytest.mark.parametrize(("sync_name", "async_name"), TWINS)
def test_sync_twin_only_hands_over_to_the_bridge(sync_name: str, async_name: str) -> None:
    source = textwrap.dedent(inspect.getsource(getattr(BaseChatModel, sync_name)))
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.FunctionDef)
    body = function.body[1:]  # after the docstring
    lines = {line for node in body for line in range(node.lineno, (node.end_lineno or 0) + 1)}
    assert len(lines) <= 5
    calls = [node for node in ast.walk(function) if isinstance(node, ast.Attribute)]
    assert any(isinstance(n.value, ast.Name) and n.value.id == "sync" for n in calls)
    assert any(n.attr == async_name for n in calls)


def test_invoke_call_stream_batch_generate() -> None:
    model = FakeChatModel(answers={"a": "one two", "b": "three"})
    assert model.invoke("a").content == "one two"
    assert model("b").content == "three"
    assert [c.content for c in model.stream("a")] == ["one", " two", ""]
    assert [m.content for m in model.batch(["a", "b"], max_concurrency=1)] == ["one two", "three"]
    assert sorted((i, r.content) for i, r in model.batch_as_completed(["a", "b"])) == [  # type: ignore[union-attr]
        (0, "one two"),
        (1, "three"),
    ]
    result = model.generate([["a"], ["b"]])
    assert [g[0].text for g in result.generations] == ["one two", "three"]


def test_sync_results_match_async_results() -> None:
    import anyio

    model = FakeChatModel(answers={"q": "alpha beta gamma", "r": "delta"})

    async def run_async() -> tuple[Any, ...]:
        return (
            await model.ainvoke("q"),
            [c async for c in model.astream("q")],
            await model.abatch(["q", "r"]),
            await model.agenerate([["q"], ["r"]]),
        )

    a_invoke, a_stream, a_batch, a_generate = anyio.run(run_async)
    s_invoke, s_stream = model.invoke("q"), list(model.stream("q"))
    s_batch, s_generate = model.batch(["q", "r"]), model.generate([["q"], ["r"]])

    def same(x: AIMessage, y: AIMessage) -> bool:
        return x.model_dump(exclude={"id"}) == y.model_dump(exclude={"id"})

    assert same(a_invoke, s_invoke)
    assert a_stream == s_stream
    assert all(same(x, y) for x, y in zip(a_batch, s_batch, strict=True))
    assert a_generate.llm_output == s_generate.llm_output
    assert [g[0].text for g in a_generate.generations] == [
        g[0].text for g in s_generate.generations
    ]


def test_stream_yields_each_chunk_as_it_arrives(tracked: Tracked) -> None:
    tracked.pause = 0.02
    progress = [(chunk.content, tracked.finished) for chunk in tracked.stream("hi")]
    # The first two chunks arrive while the provider is still producing (the last may not).
    assert progress[:2] == [("Hello", 0), (" world", 0)]
    assert [content for content, _ in progress] == ["Hello", " world", "!"]
    assert tracked.finished == 1


def test_breaking_out_of_stream_closes_the_async_stream(tracked: Tracked) -> None:
    tracked.pause = 0.01
    for chunk in tracked.stream("hi"):
        assert chunk.content == "Hello"
        break
    # The generator was closed when the loop dropped it, and closing waits for the async side.
    assert (tracked.closed, tracked.finished) == (1, 0)


def test_closing_a_slow_stream_cancels_it(tracked: Tracked) -> None:
    tracked.pieces = ["a", "b"]
    tracked.pause = 0.01
    iterator = tracked.stream("hi")
    assert next(iterator).content == "a"
    tracked.pause = 30  # the next chunk would take 30 s: closing must not wait for it
    iterator.close()
    assert tracked.closed == 1
    assert tracked.active == 0


def test_errors_cross_the_bridge_with_partial_output() -> None:
    model = FakeChatModel(
        responses=[FakeResponse(text="a b c", error=RateLimitError("429"), error_after=2)]
    )
    with pytest.raises(RateLimitError) as info:
        model.invoke("x")
    assert info.value.partial is not None
    assert info.value.partial.content == "a b"
    received: list[object] = []
    with pytest.raises(RateLimitError):
        received.extend(chunk.content for chunk in model.stream("x"))
    assert received == ["a", " b"]


def test_many_threads_at_once() -> None:
    model = FakeChatModel(answers={f"q{i}": f"answer {i}" for i in range(40)}, delay=0.001)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: model.invoke(f"q{i}").content, range(40)))
        streamed = list(
            pool.map(lambda i: "".join(str(c.content) for c in model.stream(f"q{i}")), range(40))
        )
    assert answers == [f"answer {i}" for i in range(40)]
    assert streamed == answers


@pytest.mark.allow_blocking
async def test_sync_api_inside_a_running_event_loop() -> None:
    # A notebook cell or an async web handler calling sync code: the loop is running here.
    model = FakeChatModel(responses=["still works"])
    assert model.invoke("x").content == "still works"
    assert "".join(str(c.content) for c in model.stream("x")) == "still works"
    assert model.generate([["x"]]).generations[0][0].text == "still works"


def test_sync_call_from_the_bridge_thread_is_a_clear_error() -> None:
    inner = FakeChatModel(responses=["inner"])

    class Nested(BaseChatModel):
        async def _astream(
            self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
        ) -> AsyncIterator[AIMessageChunk]:
            yield AIMessageChunk(inner.invoke("x").content)

    with pytest.raises(ChatStreamError, match="own event loop thread"):
        Nested().invoke("x")


def test_context_variables_reach_the_async_call() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")

    class Reader(BaseChatModel):
        async def _astream(
            self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
        ) -> AsyncIterator[AIMessageChunk]:
            yield AIMessageChunk(request_id.get())

    token = request_id.set("req-7")
    try:
        assert Reader().invoke("x").content == "req-7"
        assert [c.content for c in Reader().stream("x")] == ["req-7"]
    finally:
        request_id.reset(token)


def test_bridge_runs_on_one_daemon_thread() -> None:
    FakeChatModel(responses=["x"]).invoke("x")
    bridges = [t for t in threading.enumerate() if t.name == "chatstream-sync"]
    assert len(bridges) == 1
    assert bridges[0].daemon


class Counting(BaseChatModel):
    """Streams as fast as it may, counting what it has produced."""

    produced: int = 0

    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        for _ in range(20_000):
            self.produced += 1
            yield AIMessageChunk("x")


def test_a_sync_stream_is_bounded_and_closes_when_dropped() -> None:
    import time

    from chatstream.sync import _BUFFER

    model = Counting()
    stream = model.stream("q")
    next(stream)
    time.sleep(0.2)  # a slow consumer: the producer must stop at the bound, not run ahead
    assert model.produced <= 2 * _BUFFER + 1
    stream.close()
    produced = model.produced
    time.sleep(0.05)
    assert model.produced == produced  # closed: nothing runs on
    assert produced < 20_000


def test_a_slow_consumer_still_gets_every_chunk_in_order() -> None:
    import time

    model = Counting()
    seen = 0
    for i, chunk in enumerate(model.stream("q")):
        assert chunk.content == "x"
        seen = i + 1
        if i % 4000 == 0:
            time.sleep(0.02)  # the producer fills the queue and waits to be woken
    assert seen == model.produced == 20_000


def test_a_stream_that_fails_to_open_raises_instead_of_hanging() -> None:
    from chatstream.errors import InputTypeError

    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            list(FakeChatModel(responses=["a"]).stream(42))  # type: ignore[arg-type]
        except BaseException as exc:  # recorded for the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], InputTypeError)


def test_an_interrupted_sync_call_cancels_its_async_call() -> None:
    import signal

    import anyio

    from chatstream import sync

    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)  # Ctrl-C while the caller waits
        with pytest.raises(KeyboardInterrupt):
            sync.run(forever)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert started.is_set()
    assert cancelled.wait(5)  # the async call did not run on for its 30 s


def test_a_sync_call_keeps_its_own_context_changes() -> None:
    from chatstream import sync

    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="caller")

    async def change() -> str:
        marker.set("bridge")
        return marker.get()

    assert sync.run(change) == "bridge"
    assert marker.get() == "caller"  # the call ran in a copy of the caller's context


def test_items_made_before_a_wait_are_seen_during_it() -> None:
    import anyio

    class Burst(BaseChatModel):
        """Three chunks at once, then a long wait for the next (as a network read may)."""

        async def _astream(
            self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
        ) -> AsyncIterator[AIMessageChunk]:
            for piece in "abc":
                yield AIMessageChunk(piece)
            await anyio.sleep(30)
            yield AIMessageChunk("late")

    stream = Burst().stream("q")
    seen: list[object] = []
    reader = threading.Thread(target=lambda: seen.extend(next(stream).content for _ in "abc"))
    reader.start()
    reader.join(timeout=5)
    assert seen == ["a", "b", "c"]  # not held back until more come or the buffer fills
    stream.close()
