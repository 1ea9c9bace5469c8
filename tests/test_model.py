from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from chatstream import (
    AIMessage,
    AIMessageChunk,
    BaseChatModel,
    BaseMessage,
    ClosedError,
    InputTypeError,
    InvalidInputError,
    InvalidParameterError,
    LLMResult,
    RateLimitError,
    StreamInterruptedError,
    merge_chunks,
)
from chatstream.providers.fake import FakeChatModel, FakeResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .conftest import Tracked


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    # The core knows nothing of asyncio: every test here also runs on trio.
    return request.param


async def test_astream_yields_chunks_as_they_arrive(tracked: Tracked) -> None:
    tracked.pause = 0.01
    seen = []
    async for chunk in tracked.astream("hi"):
        # The provider has not finished when its first chunk reaches the caller.
        seen.append((chunk.content, tracked.finished))
    assert seen == [("Hello", 0), (" world", 0), ("!", 0)]
    assert tracked.finished == 1


async def test_ainvoke_is_the_merged_stream() -> None:
    model = FakeChatModel(responses=["The purpose of model regularization is to generalize."])
    chunks = [chunk async for chunk in model.astream("q")]
    message = await model.ainvoke("q")
    assert isinstance(message, AIMessage)
    assert message.content == merge_chunks(chunks).content
    assert message.response_metadata == {"finish_reason": "stop", "model_name": "fake-chat-model"}
    assert message.usage_metadata == {"input_tokens": 1, "output_tokens": 8, "total_tokens": 9}
    assert message.id is not None
    assert message.id.startswith("run-")


async def test_early_break_closes_the_provider_stream_at_once(tracked: Tracked) -> None:
    async with tracked.astream("hi") as stream:
        async for chunk in stream:
            assert chunk.content == "Hello"
            break
    assert (tracked.closed, tracked.finished) == (1, 0)


async def test_aclose_is_idempotent(tracked: Tracked) -> None:
    stream = tracked.astream("hi")
    assert (await stream.__anext__()).content == "Hello"
    await stream.aclose()
    await stream.aclose()
    assert tracked.closed == 1
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_cancellation_runs_the_provider_finally(tracked: Tracked) -> None:
    tracked.pause = 10
    with anyio.move_on_after(0.05):
        await tracked.ainvoke("hi")
    assert (tracked.started, tracked.closed, tracked.finished) == (1, 1, 0)


async def test_cancelling_a_streaming_task(tracked: Tracked) -> None:
    tracked.pause = 0.01
    received: list[str] = []
    first = anyio.Event()

    async def consume() -> None:
        async with tracked.astream("hi") as stream:
            async for chunk in stream:
                received.append(str(chunk.content))
                first.set()
                await anyio.sleep(10)

    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        await first.wait()
        group.cancel_scope.cancel()
    assert received == ["Hello"]
    assert tracked.closed == 1


async def test_provider_error_mid_stream_keeps_partial_output() -> None:
    error = RateLimitError("slow down", provider="fake", status=429)
    model = FakeChatModel(
        responses=[FakeResponse(text="one two three", error=error, error_after=2)]
    )
    with pytest.raises(RateLimitError) as info:
        await model.ainvoke("x")
    assert info.value is error  # unchanged, just annotated
    assert info.value.partial is not None
    assert info.value.partial.content == "one two"

    received = []

    async def consume() -> None:
        async for chunk in model.astream("x"):
            received.append(chunk.content)

    with pytest.raises(RateLimitError) as info:
        await consume()
    assert received == ["one", " two"]
    assert info.value.partial is not None
    assert info.value.partial.content == "one two"


async def test_foreign_error_after_chunks_is_wrapped_with_partial() -> None:
    model = FakeChatModel(
        responses=[FakeResponse(text="a b c", error=KeyError("boom"), error_after=1)]
    )
    with pytest.raises(StreamInterruptedError) as info:
        await model.ainvoke("x")
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.partial is not None
    assert info.value.partial.content == "a"


async def test_foreign_error_before_any_chunk_is_unchanged() -> None:
    model = FakeChatModel(responses=[FakeResponse(text="a b", error=KeyError("boom"))])
    with pytest.raises(KeyError):
        await model.ainvoke("x")


async def test_abatch_keeps_order_and_honours_max_concurrency(tracked: Tracked) -> None:
    tracked.pause = 0.005
    results = await tracked.abatch([f"q{i}" for i in range(7)], max_concurrency=2)
    assert [r.content for r in results] == ["Hello world!"] * 7
    assert tracked.peak == 2
    tracked.peak = 0
    await tracked.abatch(["a", "b", "c"], config={"max_concurrency": 1})
    assert tracked.peak == 1
    tracked.peak = 0
    await tracked.abatch(["a", "b", "c", "d"])
    assert tracked.peak == 4


async def test_abatch_order_with_varying_latency() -> None:
    answers = await Echo().abatch(["a b c d", "x", "y z"])
    assert [a.content for a in answers] == ["abcd", "x", "yz"]


async def test_abatch_first_error_cancels_the_rest(tracked: Tracked) -> None:
    tracked.pause = 10
    tracked.fail_on = "boom"
    with pytest.raises(ValueError, match="failing on 'boom'"):
        await tracked.abatch(["fine", "fine", "boom"])
    assert (tracked.started, tracked.closed, tracked.finished) == (3, 3, 0)


async def test_abatch_bad_input_names_its_position() -> None:
    model = FakeChatModel(responses=["x"])
    with pytest.raises(InputTypeError) as info:
        await model.abatch(["fine", 42])  # type: ignore[list-item]
    assert info.value.where == "inputs[1]"


async def test_abatch_return_exceptions() -> None:
    model = FakeChatModel(
        answers={"a": "ok", "b": FakeResponse(text="x", error=RateLimitError("429")), "c": "fine"}
    )
    results = await model.abatch(["a", "b", "c"], return_exceptions=True)
    assert isinstance(results[0], AIMessage)
    assert results[0].content == "ok"
    assert isinstance(results[1], RateLimitError)
    assert isinstance(results[2], AIMessage)
    assert results[2].content == "fine"


class Echo(BaseChatModel):
    """Echoes the last message word by word, one word per 10 ms."""

    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        for word in messages[-1].text.split():
            await anyio.sleep(0.01)
            yield AIMessageChunk(word)


async def test_abatch_as_completed_yields_in_completion_order() -> None:
    async with Echo().abatch_as_completed(["a b c d e f", "x", "y z"]) as results:
        order = [(index, result.content) async for index, result in results]  # type: ignore[union-attr]
    assert order == [(1, "x"), (2, "yz"), (0, "abcdef")]


async def test_abatch_as_completed_error_and_early_exit(tracked: Tracked) -> None:
    failing = FakeChatModel(responses=[FakeResponse(text="x", error=RateLimitError("429"))])

    async def consume() -> None:
        async with failing.abatch_as_completed(["a"]) as results:
            async for _ in results:
                pass

    with pytest.raises(RateLimitError):
        await consume()
    tracked.pause = 10
    async with tracked.abatch_as_completed(["a", "b"]):
        while tracked.started < 2:  # both calls get going (inputs are taken lazily) ...
            await anyio.sleep(0.001)
    # ... and leaving the block cancels what is still running.
    assert tracked.started == 2
    assert tracked.closed == 2
    assert tracked.finished == 0


async def test_agenerate_returns_llm_result() -> None:
    model = FakeChatModel(
        answers={
            "I love programming.": "J'adore programmer.",
            "I love AI.": FakeResponse(
                text="J'adore l'intelligence artificielle.", finish_reason="length"
            ),
        }
    )
    result = await model.agenerate(
        [[("system", "Translate to French."), ("human", "I love programming.")], ["I love AI."]]
    )
    assert isinstance(result, LLMResult)
    assert [[g.text for g in gens] for gens in result.generations] == [
        ["J'adore programmer."],
        ["J'adore l'intelligence artificielle."],
    ]
    assert [gens[0].generation_info for gens in result.generations] == [
        {"finish_reason": "stop"},
        {"finish_reason": "length"},
    ]
    assert result.llm_output == {
        "token_usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
        "model_name": "fake-chat-model",
    }
    assert result.run is not None
    assert len({info.run_id for info in result.run}) == 2
    assert [gens[0].message.id for gens in result.generations] == [
        f"run-{info.run_id}" for info in result.run
    ]


async def test_agenerate_validates_every_input_first() -> None:
    model = FakeChatModel(responses=["x"])
    with pytest.raises(InvalidInputError) as info:
        await model.agenerate([["ok"], [("tool", "no id")]])
    assert info.value.where == "messages[1][0]"
    with pytest.raises(InvalidInputError, match="list of inputs"):
        await model.agenerate("not a list")


async def test_config_run_id_and_name() -> None:
    model = FakeChatModel(responses=["x"])
    run_id = uuid.uuid4()
    result = await model.agenerate([["q"]], config={"run_id": run_id, "run_name": "mine"})
    assert result.run is not None
    assert result.run[0].run_id == run_id


async def test_per_call_params_are_checked_and_passed() -> None:
    model = FakeChatModel(responses=["a b"])
    with pytest.raises(InvalidParameterError) as info:
        await model.ainvoke("x", temprature=0.1)
    assert isinstance(info.value, TypeError)
    assert info.value.where == "temprature"
    assert "delay" in str(info.value)
    assert (await model.ainvoke("x", delay=0.001)).content == "a b"


async def test_stop_reaches_the_provider() -> None:
    model = FakeChatModel(responses=["one two three"])
    assert (await model.ainvoke("x", stop=[" thr"])).content == "one two"


async def test_max_concurrency_must_be_positive() -> None:
    model = FakeChatModel(responses=["x"])
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        await model.abatch(["a"], max_concurrency=0)


async def test_closed_model_raises() -> None:
    async with FakeChatModel(responses=["x"]) as model:
        assert (await model.ainvoke("q")).content == "x"
    with pytest.raises(ClosedError):
        await model.ainvoke("q")


async def test_custom_model_needs_only_astream() -> None:
    echo = Echo()
    assert (await echo.ainvoke("a b c")).content == "abc"
    result = await echo.agenerate([["x y"]])
    assert result.generations[0][0].text == "xy"
    assert result.generations[0][0].generation_info is None
    assert result.llm_output == {
        "token_usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "model_name": "Echo",
    }


class TwoChoices(BaseChatModel):
    """Streams two interleaved choices, as OpenAI does for n=2."""

    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        for index, text in [(0, "A"), (1, "x"), (0, "B"), (1, "y")]:
            yield AIMessageChunk(text, response_metadata={"choice_index": index})
        yield AIMessageChunk(response_metadata={"choice_index": 0, "finish_reason": "stop"})
        yield AIMessageChunk(response_metadata={"choice_index": 1, "finish_reason": "length"})
        yield AIMessageChunk(
            usage_metadata={"input_tokens": 5, "output_tokens": 4, "total_tokens": 9}
        )


async def test_multiple_choices_become_one_generation_each() -> None:
    result = await TwoChoices().agenerate([["q"]])
    assert [(g.text, g.generation_info) for g in result.generations[0]] == [
        ("AB", {"finish_reason": "stop"}),
        ("xy", {"finish_reason": "length"}),
    ]
    assert result.llm_output is not None
    assert result.llm_output["token_usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 4,
        "total_tokens": 9,
    }
    assert (await TwoChoices().ainvoke("q")).content == "AB"
