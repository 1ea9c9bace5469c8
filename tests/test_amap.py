"""`amap`: the one bounded, lazy fan-out; abatch and friends are thin wrappers over it."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from chatstream import InvalidInputError, RateLimitError, RowResult, Run
from chatstream.providers.fake import FakeChatModel, FakeResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from .conftest import Tracked


class Pulled:
    """An input generator that counts how far it has been read."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pulled = 0

    def __iter__(self) -> Iterator[str]:
        for index in range(self.count):
            self.pulled += 1
            yield f"q{index}"


async def test_inputs_are_read_lazily_and_calls_are_bounded(tracked: Tracked) -> None:
    tracked.pause = 0.001
    inputs = Pulled(200)
    seen = 0
    async with tracked.amap(inputs, max_concurrency=5) as rows:
        async for row in rows:
            seen += 1
            # Taken only when a slot frees: never more than the bound ahead of the consumer.
            assert inputs.pulled - seen <= 5
            assert row.ok
    assert seen == 200
    assert tracked.peak <= 5
    assert tracked.peak >= 2  # they really ran at once


async def test_a_row_records_the_call() -> None:
    model = FakeChatModel(responses=["a b"])
    async with model.amap(["q"], max_concurrency=1) as rows:
        [row] = [row async for row in rows]
    assert isinstance(row, RowResult)
    assert row.index == 0 and row.ok and row.error is None
    assert row.message is not None and row.message.text == "a b"
    assert row.message.id == f"run-{row.run_id}"
    assert row.usage == {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}
    assert row.start_time is not None and row.end_time is not None and row.latency is not None
    assert row.first_token_time is not None and row.start_time <= row.first_token_time
    assert row.attempts == 1


async def test_failures_are_rows_with_the_partial_answer() -> None:
    failing = FakeResponse(text="a b c", error=RateLimitError("slow"), error_after=2)
    model = FakeChatModel(answers={"ok": "fine", "bad": failing})
    async with model.amap(["ok", "bad", [("sytem", "typo")]], max_concurrency=3) as rows:
        by_index = {row.index: row async for row in rows}
    assert by_index[0].ok
    assert isinstance(by_index[1].error, RateLimitError)
    assert by_index[1].message is not None and by_index[1].message.text == "a b"
    bad_input = by_index[2]
    assert isinstance(bad_input.error, InvalidInputError)
    assert bad_input.error.where == "inputs[2][0]"
    assert bad_input.run_id is None and bad_input.message is None


async def test_ordered_rows_come_in_input_order() -> None:
    slow = FakeChatModel(answers={"0": FakeResponse(chunks=["a"] * 20), "1": "b", "2": "c"})
    async with slow.amap(["0", "1", "2"], max_concurrency=3, ordered=True) as rows:
        assert [row.index async for row in rows] == [0, 1, 2]
    async with slow.amap(["0", "1", "2"], max_concurrency=3, delay=0.001) as rows:
        assert [row.index async for row in rows][-1] == 0  # the long one ends last


async def test_return_exceptions_false_raises_the_first_failure(tracked: Tracked) -> None:
    tracked.fail_on = "q3"
    tracked.pause = 0.05

    async def consume() -> None:
        async with tracked.amap(Pulled(50), max_concurrency=4, return_exceptions=False) as rows:
            async for _ in rows:
                pass

    with pytest.raises(ValueError, match="q3"):
        await consume()
    assert tracked.active == 0  # the others were cancelled and closed
    assert tracked.started < 50


async def test_an_async_iterable_of_inputs() -> None:
    async def questions() -> AsyncIterator[str]:
        for index in range(10):
            await anyio.lowlevel.checkpoint()
            yield f"q{index}"

    model = FakeChatModel(responses=["ok"])
    async with model.amap(questions(), max_concurrency=3, ordered=True) as rows:
        assert [row.index async for row in rows] == list(range(10))


async def test_runs_are_not_kept_after_their_row() -> None:
    model = FakeChatModel(responses=["a b c"])
    async with model.amap((f"q{i}" for i in range(300)), max_concurrency=4) as rows:
        async for _ in rows:
            pass
    gc.collect()
    assert sum(isinstance(obj, Run) for obj in gc.get_objects()) <= 4


@pytest.mark.parametrize("bad", [{"max_concurrency": 0}, {"max_concurrency": None}])
async def test_amap_needs_a_positive_bound(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        FakeChatModel(responses=["x"]).amap(["a"], **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="iterable"):
        FakeChatModel(responses=["x"]).amap("abc", max_concurrency=1)


async def test_abatch_is_amap_collected(tracked: Tracked) -> None:
    answers = await tracked.abatch([f"q{i}" for i in range(20)], max_concurrency=3)
    assert [a.text for a in answers] == ["Hello world!"] * 20
    assert tracked.peak <= 3


def test_sync_map() -> None:
    model = FakeChatModel(responses=["one"])
    rows = list(model.map(iter(["a", "b", "c"]), max_concurrency=2, ordered=True))
    assert [(row.index, row.message and row.message.text) for row in rows] == [
        (0, "one"),
        (1, "one"),
        (2, "one"),
    ]


async def test_rows_count_attempts_and_run_against_a_server() -> None:
    from chatstream.providers.openai import ChatOpenAI
    from chatstream.testing import Faults, OpenAIServer, ScriptedReply

    replies = [ScriptedReply(text_chunks=["o", "k"])] * 6
    faults = Faults(http_error=503, fail_times=1, headers={"retry-after-ms": "1"})
    async with OpenAIServer(replies, faults) as server:
        async with ChatOpenAI(base_url=server.base_url, max_retries=2) as model:
            async with model.amap([f"q{i}" for i in range(5)], max_concurrency=2) as rows:
                found = sorted([row async for row in rows], key=lambda row: row.index)
    assert [row.message and row.message.text for row in found] == ["ok"] * 5
    assert sorted(row.attempts for row in found) == [1, 1, 1, 1, 2]  # one was refused once
    assert len(server.requests) == 6
