"""Real generation with SmolLM2-135M-Instruct, in process."""

from __future__ import annotations

import threading

import anyio
import pytest

from chatstream import AIMessage, InvalidParameterError
from chatstream.providers.llamacpp import ChatLlamaCpp, StopMatcher

QUESTION = "What is the purpose of model regularization?"


@pytest.fixture
def model() -> ChatLlamaCpp:
    return ChatLlamaCpp(temperature=0, seed=0, max_tokens=24)


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "chatstream-llamacpp"]


async def test_streams_real_text_token_by_token(model: ChatLlamaCpp) -> None:
    chunks = [chunk async for chunk in model.astream(QUESTION)]
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 5  # one piece per token, not one blob
    answer = "".join(texts)
    assert len(answer.split()) >= 5
    assert "regulari" in answer.lower() or "overfit" in answer.lower()
    last = chunks[-1]
    assert last.response_metadata["model_name"] == "SmolLM2-135M-Instruct.Q4_1"
    assert last.usage_metadata is not None


async def test_ainvoke_equals_the_merged_stream_and_usage_adds_up(model: ChatLlamaCpp) -> None:
    streamed = "".join([c.text async for c in model.astream(QUESTION)])
    message = await model.ainvoke(QUESTION)
    assert isinstance(message, AIMessage)
    assert message.content == streamed  # temperature 0 and a seed: the same answer
    usage = message.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 10
    assert 0 < usage["output_tokens"] <= 24
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_max_tokens_gives_length(model: ChatLlamaCpp) -> None:
    message = await model.ainvoke(QUESTION, max_tokens=5)
    assert message.response_metadata["finish_reason"] == "length"
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == 5


async def test_a_stop_sequence_stops(model: ChatLlamaCpp) -> None:
    full = (await model.ainvoke(QUESTION)).text
    words = full.split()
    assert len(words) > 4
    stop = f" {words[3]}"
    message = await model.ainvoke(QUESTION, stop=[stop])
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.text == full[: full.index(stop)]
    assert stop not in message.text


async def test_a_natural_end_is_stop() -> None:
    model = ChatLlamaCpp(temperature=0, seed=0, max_tokens=200)
    message = await model.ainvoke("Reply with just the word: yes")
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.text.strip()


async def test_early_break_stops_the_worker(model: ChatLlamaCpp) -> None:
    async with model.astream(QUESTION, max_tokens=200) as stream:
        async for _ in stream:
            break
    assert workers() == []  # closing waited for the worker, which stopped between tokens
    assert (await model.ainvoke("Hi", max_tokens=3)).usage_metadata is not None  # lock freed


async def test_cancellation_stops_the_worker(model: ChatLlamaCpp) -> None:
    received = 0

    async def consume(scope: anyio.CancelScope) -> None:
        nonlocal received
        async for _ in model.astream(QUESTION, max_tokens=500):
            received += 1
            scope.cancel()  # cancelled mid-generation, with ~500 tokens still to go

    with anyio.CancelScope() as scope:
        await consume(scope)
    assert received == 1
    assert workers() == []


async def test_concurrent_calls_queue_on_one_model(model: ChatLlamaCpp) -> None:
    first, second = await model.abatch([QUESTION, "Name a colour."], max_concurrency=2)
    assert first.text and second.text
    assert first.text == (await model.ainvoke(QUESTION)).text


def test_sync_api_and_generate(model: ChatLlamaCpp) -> None:
    chunks = list(model.stream("Say hello.", max_tokens=8))
    assert "".join(c.text for c in chunks).strip()
    result = model.generate([["Say hello."], ["Say goodbye."]], max_tokens=8)
    assert result.llm_output is not None
    assert result.llm_output["model_name"] == "SmolLM2-135M-Instruct.Q4_1"
    assert result.llm_output["token_usage"]["completion_tokens"] > 0
    assert [g[0].generation_info for g in result.generations] != [None, None]


def test_unknown_parameters_are_refused(model: ChatLlamaCpp) -> None:
    with pytest.raises(InvalidParameterError, match="n_predict"):
        model.invoke("x", n_predict=3)


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        ([], ["a", "b"], ["a", "b"]),
        (["END"], ["ab", "cE", "N", "Dxyz"], ["ab", "c", "", ""]),
        (["END"], ["ab", "cE", "x"], ["ab", "c", "Ex"]),
        (["\n\n", "###"], ["one\n", "\nrest"], ["one", ""]),
    ],
)
def test_stop_matcher_holds_back_possible_starts(
    stops: list[str], pieces: list[str], expected: list[str]
) -> None:
    matcher = StopMatcher(stops)
    emitted = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        emitted.append(text)
        if stopped:
            break
    assert emitted == expected[: len(emitted)]
