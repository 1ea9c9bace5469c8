"""`ChatMapper` on its own: batches in, result columns out, errors as rows (no cluster)."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import pandas as pd
import pyarrow as pa
import pytest

from chatstream import AIMessageChunk, BaseChatModel, BaseMessage, InvalidInputError
from chatstream.errors import InvalidParameterError
from chatstream.providers.openai import ChatOpenAI
from chatstream.ray import RESULT_COLUMNS, ChatMapper
from chatstream.testing import Faults, OpenAIServer, ScriptedReply

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def answer(mapper: ChatMapper, batch: object) -> pa.Table:
    tables = [table async for table in mapper(batch)]
    assert len(tables) == 1  # one table per batch
    return tables[0]


HELLO = ScriptedReply.from_text("Hello there", usage={"prompt_tokens": 7, "completion_tokens": 2})


class Gauge(BaseChatModel):
    """Counts the calls in flight in a class variable, which the mapper's copy shares."""

    counts: ClassVar[dict[str, int]] = {"active": 0, "peak": 0}

    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        counts = self.counts
        counts["active"] += 1
        counts["peak"] = max(counts["peak"], counts["active"])
        try:
            await anyio.sleep(0.01)
            yield AIMessageChunk(messages[-1].text.upper())
        finally:
            counts["active"] -= 1


async def test_a_batch_gets_one_row_of_results_per_input_in_order() -> None:
    async with OpenAIServer([HELLO]) as server:
        model = ChatOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        mapper = ChatMapper(model, max_concurrency=2, keep_columns=["topic"])
        batch = pa.table({"id": ["a", "b", "c"], "prompt": ["p1", "p2", "p3"], "topic": [1, 2, 3]})
        out = await answer(mapper, batch)
        await mapper.aclose()
    assert out.column_names == ["id", *RESULT_COLUMNS, "topic"]
    rows = out.to_pylist()
    assert [row["id"] for row in rows] == ["a", "b", "c"]
    assert [row["topic"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert row["text"] == "Hello there"
        assert row["error"] is None
        assert row["finish_reason"] == "stop"
        assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (7, 2, 9)
        assert row["attempts"] == 1
        assert row["latency_s"] >= row["first_token_s"] >= 0
        assert len(row["run_id"]) == 36
    assert sorted(request.body["messages"][0]["content"] for request in server.requests) == [
        "p1",
        "p2",
        "p3",
    ]


async def test_failures_are_rows_and_the_schema_stays_the_same() -> None:
    async with OpenAIServer([HELLO], Faults(http_error=429)) as server:
        model = ChatOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        mapper = ChatMapper(model)
        out = await answer(mapper, pa.table({"id": [1, 2], "prompt": ["p", None]}))
        await mapper.aclose()
    assert len(server.requests) == 1  # the null prompt never became a request
    rate_limited, invalid = out.to_pylist()
    assert rate_limited["error"].startswith("RateLimitError: ")
    assert rate_limited["text"] is None and rate_limited["run_id"] is not None
    assert invalid["error"].startswith("InputTypeError: ")
    assert invalid["run_id"] is None and invalid["input_tokens"] is None
    # All-null columns keep their types, so the files of failed batches read back with the rest.
    assert out.schema.field("text").type == pa.string()
    assert out.schema.field("input_tokens").type == pa.int64()


@pytest.mark.parametrize("kind", ["pandas", "numpy"])
async def test_pandas_and_numpy_batches_are_accepted(kind: str) -> None:
    frame = pd.DataFrame({"id": [10, 11], "prompt": ["x", "y"]})
    batch: object = frame if kind == "pandas" else {k: frame[k].to_numpy() for k in frame}
    out = await answer(ChatMapper(Gauge()), batch)
    assert out.column("id").to_pylist() == [10, 11]
    assert out.column("text").to_pylist() == ["X", "Y"]


async def test_message_lists_are_prompts_too() -> None:
    conversation = [{"role": "system", "content": "be loud"}, {"role": "user", "content": "hi"}]
    out = await answer(ChatMapper(Gauge(), id_column=None), pa.table({"prompt": [conversation]}))
    assert out.column_names == list(RESULT_COLUMNS)
    assert out.column("text").to_pylist() == ["HI"]


async def test_max_concurrency_bounds_the_calls_of_all_batches_in_flight_together() -> None:
    Gauge.counts.update(active=0, peak=0)
    mapper = ChatMapper(Gauge(), max_concurrency=3)
    batches = [pa.table({"id": list(range(10)), "prompt": ["q"] * 10}) for _ in range(4)]
    results: list[pa.Table] = []

    async def run(batch: pa.Table) -> None:
        results.append(await answer(mapper, batch))

    async with anyio.create_task_group() as group:  # as Ray runs several batches per actor
        for batch in batches:
            group.start_soon(run, batch)
    assert Gauge.counts["peak"] == 3
    assert sum(table.num_rows for table in results) == 40
    assert all(error is None for table in results for error in table.column("error").to_pylist())


async def test_a_cancelled_batch_gives_its_slots_back() -> None:
    mapper = ChatMapper(Gauge(), max_concurrency=2)
    batch = pa.table({"id": list(range(50)), "prompt": ["q"] * 50})
    with anyio.move_on_after(0.015):
        await answer(mapper, batch)
    Gauge.counts.update(active=0, peak=0)
    out = await answer(mapper, pa.table({"id": [1, 2, 3], "prompt": ["a", "b", "c"]}))
    assert out.column("text").to_pylist() == ["A", "B", "C"]
    assert Gauge.counts["peak"] == 2  # both slots were free again


def test_bad_arguments_fail_when_the_mapper_is_built() -> None:
    with pytest.raises(InvalidParameterError, match="temprature"):
        ChatMapper(ChatOpenAI(api_key="test"), settings={"temprature": 0})
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        ChatMapper(Gauge(), max_concurrency=0)
    with pytest.raises(InvalidInputError, match="keep_columns"):
        ChatMapper(Gauge(), keep_columns=["text"])


async def test_a_missing_column_is_named() -> None:
    with pytest.raises(InvalidInputError, match=r"prompt_column.*'question'"):
        await answer(
            ChatMapper(Gauge(), prompt_column="question"), pa.table({"id": [1], "prompt": ["x"]})
        )


def test_importing_chatstream_does_not_import_ray_or_pyarrow() -> None:
    code = "import sys, chatstream; print([m for m in ('ray', 'pyarrow') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
