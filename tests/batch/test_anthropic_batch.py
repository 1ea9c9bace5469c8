"""`chatstream.batch` against the local Anthropic Message Batches server, over real sockets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import chatstream.batch
from chatstream.batch import Limits
from chatstream.errors import BadRequestError, InvalidInputError, ProviderError, ServerError
from chatstream.messages import AIMessage
from chatstream.outputs import RowResult
from chatstream.providers.anthropic import ChatAnthropic
from chatstream.testing import AnthropicServer, ScriptedToolCall
from chatstream.testing.anthropic_batch_server import AnthropicBatchServer, ScriptedReply

if TYPE_CHECKING:
    from pathlib import Path

HI = ScriptedReply.from_text("Hello there")
CALL = ScriptedReply(
    tool_calls=[ScriptedToolCall(id="toolu_1", name="lookup", argument_chunks=['{"q": "x"}'])],
    finish_reason="tool_calls",
)
THINKING = ScriptedReply(reasoning_chunks=["Let me ", "think."], text_chunks=["Done."])


def model_for(server: AnthropicBatchServer | AnthropicServer, **settings: object) -> ChatAnthropic:
    return ChatAnthropic(base_url=server.base_url, api_key="test-key", max_retries=0, **settings)


async def collect(job: chatstream.batch.BatchJob) -> list[RowResult]:
    return [row async for row in job.collect()]


def essentials(message: AIMessage | None) -> tuple[object, ...]:
    assert message is not None
    return (
        message.content,
        [(c["name"], c["args"], c["id"]) for c in message.tool_calls],
        message.usage_metadata,
        message.response_metadata.get("finish_reason"),
        message.response_metadata.get("stop_reason"),
    )


async def test_rows_join_back_on_custom_id_with_answers_usage_and_errors(manifest: Path) -> None:
    ids = ["q-1", "q-2", "q-3"]
    async with AnthropicBatchServer([HI], failing={"q-2"}, api_key="test-key") as server:
        job = await chatstream.batch.submit(
            model_for(server), ["a", "b", "c"], manifest=manifest, ids=ids
        )
        async with job:
            status = await job.wait(interval=0)
            rows = await collect(job)
    assert (status.succeeded, status.errored, status.processing) == (2, 1, 0)
    assert [row.index for row in rows] == [0, 1, 2]
    assert [row.ok for row in rows] == [True, False, True]
    assert rows[0].message is not None and rows[0].message.text == "Hello there"
    assert rows[0].usage is not None and rows[0].usage["input_tokens"] > 0
    assert isinstance(rows[1].error, ServerError) and rows[1].error.code == "api_error"
    [created] = [r for r in server.requests if r.method == "POST"]
    sent = created.body["requests"]
    assert [item["custom_id"] for item in sent] == ids
    assert all("stream" not in item["params"] for item in sent)
    assert sent[0]["params"]["max_tokens"] == 1024


async def test_params_the_api_refuses_make_an_errored_row(manifest: Path) -> None:
    async with AnthropicBatchServer([HI]) as server:
        bad = [("ai", "I speak first"), ("human", "hi"), ("ai", "a"), ("system", "late")]
        with pytest.raises(InvalidInputError):  # caught before sending: a late system message
            await chatstream.batch.submit(model_for(server), [bad], manifest=manifest)
        job = await chatstream.batch.submit(
            model_for(server),
            ["a"],
            manifest=manifest,
            thinking={"type": "enabled", "budget_tokens": 10},
        )
        async with job:
            await job.wait(interval=0)
            [row] = await collect(job)
    assert isinstance(row.error, BadRequestError)
    assert "budget_tokens" in str(row.error)


@pytest.mark.parametrize("reply", [HI, CALL, THINKING], ids=["text", "tool_call", "thinking"])
async def test_a_batch_answer_is_the_message_a_streamed_call_gives(
    manifest: Path, reply: ScriptedReply
) -> None:
    async with AnthropicServer([reply]) as streaming:
        streamed = await model_for(streaming).ainvoke("hi")
    async with AnthropicBatchServer([reply]) as server:
        async with await chatstream.batch.submit(
            model_for(server), ["hi"], manifest=manifest
        ) as job:
            await job.wait(interval=0)
            [row] = await collect(job)
    assert essentials(row.message) == essentials(streamed)


async def test_expired_and_canceled_rows_are_reported_per_row(tmp_path: Path) -> None:
    async with AnthropicBatchServer([HI], rows_per_poll=1, expire_after=1) as server:
        async with await chatstream.batch.submit(
            model_for(server), ["a", "b"], manifest=tmp_path / "expire.db"
        ) as job:
            status = await job.wait(interval=0)
            expired = await collect(job)
    assert (status.succeeded, status.expired) == (1, 1)
    assert isinstance(expired[1].error, ProviderError) and expired[1].error.code == "expired"
    async with AnthropicBatchServer([HI], rows_per_poll=1) as server:
        async with await chatstream.batch.submit(
            model_for(server), ["a", "b", "c"], manifest=tmp_path / "cancel.db"
        ) as job:
            await job.poll()  # one row answered
            await job.cancel()
            status = await job.wait(interval=0)
            canceled = await collect(job)
    assert (status.succeeded, status.canceled) == (1, 2)
    assert [getattr(row.error, "code", None) for row in canceled] == [None, "canceled", "canceled"]


async def test_large_inputs_are_split_into_jobs_under_the_byte_limit(manifest: Path) -> None:
    prompts = [f"prompt number {i}" for i in range(4)]
    async with AnthropicBatchServer([HI], max_bytes=300) as server:
        job = await chatstream.batch.submit(
            model_for(server), prompts, manifest=manifest, limits=Limits(100, 300)
        )
        async with job:
            status = await job.wait(interval=0)
            rows = await collect(job)
    assert len(status.jobs) > 1 and server.batches_created == len(status.jobs)
    assert all(len(r.raw_body) <= 300 for r in server.requests if r.method == "POST")
    assert [row.index for row in rows] == list(range(4)) and all(row.ok for row in rows)


async def test_custom_ids_anthropic_refuses_are_refused_before_sending(manifest: Path) -> None:
    async with AnthropicBatchServer([HI]) as server:
        with pytest.raises(InvalidInputError) as caught:
            await chatstream.batch.submit(model_for(server), ["a"], manifest=manifest, ids=["a b"])
        assert server.requests == []
    assert caught.value.where == "ids[0]"
