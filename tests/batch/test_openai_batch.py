"""`chatstream.batch` against the local OpenAI Batch API server, over real sockets."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

import anyio
import pytest

import chatstream.batch
from chatstream.batch import Limits
from chatstream.errors import (
    AuthenticationError,
    BadRequestError,
    InvalidInputError,
    ProviderError,
    UnsupportedFeatureError,
)
from chatstream.inputs import to_messages
from chatstream.messages import AIMessage
from chatstream.outputs import RowResult
from chatstream.providers.openai import ChatOpenAI, _to_wire
from chatstream.settings import resolve
from chatstream.testing import FakeChatModel, OpenAIServer, ScriptedToolCall
from chatstream.testing.openai_batch_server import OpenAIBatchServer, ScriptedReply

if TYPE_CHECKING:
    from pathlib import Path

HI = ScriptedReply.from_text("Hello there")
CALL = ScriptedReply(
    tool_calls=[ScriptedToolCall(id="call_1", name="lookup", argument_chunks=['{"q": ', '"x"}'])],
    finish_reason="tool_calls",
)


def model_for(server: OpenAIBatchServer | OpenAIServer, **settings: object) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url, api_key="sk-test-secret-key", max_retries=0, **settings
    )


async def collect(job: chatstream.batch.BatchJob) -> list[RowResult]:
    return [row async for row in job.collect()]


def essentials(message: AIMessage | None) -> tuple[object, ...]:
    """What a batch answer must share with the streamed answer (ids are per response)."""
    assert message is not None
    return (
        message.content,
        [(c["name"], c["args"], c["id"]) for c in message.tool_calls],
        message.usage_metadata,
        message.response_metadata.get("finish_reason"),
        message.additional_kwargs,
    )


async def test_rows_join_back_on_custom_id_with_answers_usage_and_errors(manifest: Path) -> None:
    ids = ["alpha", "beta", "gamma", "delta"]
    async with OpenAIBatchServer([HI], failing={"gamma"}, api_key="sk-test-secret-key") as server:
        job = await chatstream.batch.submit(
            model_for(server), ["one", "two", "three", "four"], manifest=manifest, ids=ids
        )
        async with job:
            status = await job.wait(interval=0)
            rows = await collect(job)
            assert await job.custom_ids() == ids
    assert status.is_done
    assert (status.succeeded, status.errored, status.processing) == (3, 1, 0)
    # The server writes result lines in reverse: rows still come back in input order.
    assert [row.index for row in rows] == [0, 1, 2, 3]
    assert [row.ok for row in rows] == [True, True, False, True]
    assert rows[0].message is not None and rows[0].message.text == "Hello there"
    assert rows[0].usage is not None and rows[0].usage["output_tokens"] == 2
    assert rows[0].run_id is not None and rows[0].run_id != rows[1].run_id
    assert rows[0].start_time is not None and rows[0].end_time is not None
    error = rows[2].error
    assert isinstance(error, BadRequestError)
    assert (error.status, error.code) == (400, "scripted")
    [upload] = [r for r in server.requests if r.path == "/v1/files"]
    lines = [json.loads(line) for line in server.files[server_file_id(server)].splitlines()]
    assert [line["custom_id"] for line in lines] == ids
    assert b"purpose" in upload.raw_body


def server_file_id(server: OpenAIBatchServer) -> str:
    [created] = [r for r in server.requests if r.path == "/v1/batches" and r.method == "POST"]
    return str(created.body["input_file_id"])


async def test_each_line_is_the_body_chatopenai_sends_without_streaming(manifest: Path) -> None:
    conversation = [("system", "Be brief."), ("human", "hi")]
    async with OpenAIBatchServer([HI]) as server:
        model = model_for(server, temperature=0.5)
        job = await chatstream.batch.submit(model, [conversation], manifest=manifest, max_tokens=7)
        await job.aclose()
        [line] = [json.loads(raw) for raw in server.files[server_file_id(server)].splitlines()]
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["custom_id"] == "row-0"
    body = line["body"]
    assert "stream" not in body and "stream_options" not in body
    assert body["temperature"] == 0.5 and body["max_tokens"] == 7
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    settings = resolve(model, model.settings_spec, None, {"max_tokens": 7})
    wire = _to_wire(to_messages(conversation), {**settings, "model": model.model})
    assert body == {key: value for key, value in wire.items() if key != "stream"}


@pytest.mark.parametrize("reply", [HI, CALL], ids=["text", "tool_call"])
async def test_a_batch_answer_is_the_message_a_streamed_call_gives(
    manifest: Path, reply: ScriptedReply
) -> None:
    async with OpenAIServer([reply]) as streaming:
        streamed = await model_for(streaming).ainvoke("hi")
    async with OpenAIBatchServer([reply]) as server:
        async with await chatstream.batch.submit(
            model_for(server), ["hi"], manifest=manifest
        ) as job:
            await job.wait(interval=0)
            [row] = await collect(job)
    assert essentials(row.message) == essentials(streamed)


async def test_large_inputs_are_split_into_jobs_under_the_limits(manifest: Path) -> None:
    prompts = [f"prompt {i}" for i in range(5)]
    async with OpenAIBatchServer([HI], max_requests=2) as server:
        job = await chatstream.batch.submit(
            model_for(server), prompts, manifest=manifest, limits=Limits(2, 10**6)
        )
        async with job:
            status = await job.wait(interval=0)
            rows = await collect(job)
    assert [part.rows for part in status.jobs] == [2, 2, 1]
    assert server.batches_created == 3 and server.uploads == 3
    assert [row.index for row in rows] == list(range(5)) and all(row.ok for row in rows)


async def test_a_job_over_the_servers_limit_fails_and_every_row_says_why(manifest: Path) -> None:
    async with OpenAIBatchServer([HI], max_requests=1) as server:
        async with await chatstream.batch.submit(
            model_for(server), ["a", "b"], manifest=manifest
        ) as job:
            status = await job.wait(interval=0)
            rows = await collect(job)
    assert status.jobs[0].status == "failed" and status.errored == 2
    assert all(isinstance(row.error, ProviderError) for row in rows)
    assert "More than 1 requests" in str(rows[0].error)


async def test_processing_shows_in_polls_and_collect_waits_for_the_end(manifest: Path) -> None:
    async with OpenAIBatchServer([HI], rows_per_poll=1) as server:
        async with await chatstream.batch.submit(
            model_for(server), ["a", "b"], manifest=manifest
        ) as job:
            seen = []
            for _ in range(3):
                status = await job.poll()
                seen.append((status.jobs[0].status, status.succeeded, status.processing))
            assert await collect(job) == []  # nothing has ended: nothing to yield
            assert not (await job.status()).is_done
            final = await job.wait(interval=0)
            assert len(await collect(job)) == 2
    # validating → in_progress, then one request per poll, then finalizing.
    assert seen == [("in_progress", 0, 2), ("in_progress", 1, 1), ("finalizing", 2, 0)]
    assert final.succeeded == 2


async def test_expired_rows_are_reported_per_row(manifest: Path) -> None:
    async with OpenAIBatchServer([HI], rows_per_poll=1, expire_after=1) as server:
        async with await chatstream.batch.submit(
            model_for(server), ["a", "b", "c"], manifest=manifest
        ) as job:
            status = await job.wait(interval=0)
            rows = await collect(job)
    assert status.jobs[0].status == "expired"
    assert [row.ok for row in rows] == [True, False, False]
    assert all(
        isinstance(row.error, ProviderError) and row.error.code == "expired" for row in rows[1:]
    )


async def test_a_canceled_batch_ends_with_its_rows_canceled(manifest: Path) -> None:
    async with OpenAIBatchServer([HI], rows_per_poll=1) as server:
        async with await chatstream.batch.submit(
            model_for(server), ["a", "b", "c"], manifest=manifest
        ) as job:
            await job.poll()
            await job.poll()  # one row answered
            await job.cancel()
            status = await job.wait(interval=0)
            rows = await collect(job)
    assert status.jobs[0].status == "cancelled" and status.canceled == 2
    assert rows[0].ok
    assert [getattr(row.error, "code", None) for row in rows[1:]] == ["canceled", "canceled"]


async def test_collecting_again_reads_the_manifest_not_the_server(manifest: Path) -> None:
    async with OpenAIBatchServer([HI]) as server:
        async with await chatstream.batch.submit(
            model_for(server), ["a"], manifest=manifest
        ) as job:
            await job.wait(interval=0)
            first = await collect(job)
        downloads = sum("/content" in r.path for r in server.requests)
        async with await chatstream.batch.open(manifest, model_for(server)) as again:
            second = await collect(again)
        assert sum("/content" in r.path for r in server.requests) == downloads
    assert [r.message for r in first] == [r.message for r in second]


async def test_the_manifest_never_holds_the_api_key(manifest: Path) -> None:
    async with OpenAIBatchServer([HI], api_key="sk-test-secret-key") as server:
        async with await chatstream.batch.submit(
            model_for(server), ["a"], manifest=manifest
        ) as job:
            await job.wait(interval=0)
            await collect(job)
    data = b"".join(
        p.read_bytes() for p in manifest.parent.iterdir() if p.name.startswith("batch.db")
    )
    assert b"sk-test-secret-key" not in data
    with sqlite3.connect(manifest) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'provider'").fetchone() == ("openai",)


async def test_a_wrong_key_is_an_authentication_error_with_the_key_scrubbed(manifest: Path) -> None:
    async with OpenAIBatchServer([HI], api_key="the-right-key") as server:
        with pytest.raises(AuthenticationError) as caught:
            await chatstream.batch.submit(model_for(server), ["a"], manifest=manifest)
    assert "sk-test-secret-key" not in str(caught.value)


async def test_a_model_without_a_batch_api_is_refused(manifest: Path) -> None:
    with pytest.raises(UnsupportedFeatureError) as caught:
        await chatstream.batch.submit(FakeChatModel(), ["a"], manifest=manifest)
    assert caught.value.where == "model"
    assert not await anyio.Path(manifest).exists()


@pytest.mark.parametrize(
    ("inputs", "ids", "where"),
    [
        ([], None, "inputs"),
        (["a", "b"], ["x", "x"], "ids[1]"),
        (["a"], ["x", "y"], "ids"),
        (["a", "b"], ["x"], "ids"),
        (["a"], [""], "ids[0]"),
        ("abc", None, "inputs"),
    ],
)
async def test_bad_inputs_or_ids_are_refused_before_anything_is_sent(
    manifest: Path, inputs: list[str], ids: list[str] | None, where: str
) -> None:
    async with OpenAIBatchServer([HI]) as server:
        with pytest.raises(InvalidInputError) as caught:
            await chatstream.batch.submit(model_for(server), inputs, manifest=manifest, ids=ids)
        assert server.requests == []
    assert caught.value.where == where
    assert not await anyio.Path(manifest).exists()


async def test_an_existing_manifest_is_never_overwritten(manifest: Path) -> None:
    async with OpenAIBatchServer([HI]) as server:
        await (await chatstream.batch.submit(model_for(server), ["a"], manifest=manifest)).aclose()
        with pytest.raises(InvalidInputError) as caught:
            await chatstream.batch.submit(model_for(server), ["b"], manifest=manifest)
    assert caught.value.where == "manifest"
    assert server.batches_created == 1


async def test_opening_with_another_server_or_no_manifest_is_refused(manifest: Path) -> None:
    with pytest.raises(InvalidInputError):
        await chatstream.batch.open(manifest)
    async with OpenAIBatchServer([HI]) as server:
        await (await chatstream.batch.submit(model_for(server), ["a"], manifest=manifest)).aclose()
        other = ChatOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k")
        with pytest.raises(InvalidInputError) as caught:
            await chatstream.batch.open(manifest, other)
    assert caught.value.where == "model"


async def test_n_above_one_is_refused(manifest: Path) -> None:
    async with OpenAIBatchServer([HI]) as server:
        with pytest.raises(InvalidInputError):
            await chatstream.batch.submit(model_for(server), ["a"], manifest=manifest, n=2)
