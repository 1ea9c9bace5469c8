"""A batch survives its process: killed mid-submit or after it, a second run resumes from the
manifest and the servers (which count creations) see no job submitted twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import pytest

import chatstream.batch
from chatstream.providers.anthropic import ChatAnthropic
from chatstream.providers.openai import ChatOpenAI
from chatstream.testing.anthropic_batch_server import AnthropicBatchServer
from chatstream.testing.openai_batch_server import OpenAIBatchServer, ScriptedReply

if TYPE_CHECKING:
    from pathlib import Path

HI = ScriptedReply.from_text("Hi")

# Run in a child process, which the test kills: submit three one-row jobs, then poll forever.
CHILD = """
import sys, anyio, chatstream.batch
from chatstream.batch import Limits
from chatstream.providers.anthropic import ChatAnthropic
from chatstream.providers.openai import ChatOpenAI

provider, url, manifest = sys.argv[1:4]
cls = ChatOpenAI if provider == "openai" else ChatAnthropic
model = cls(base_url=url, api_key="test-key", max_retries=0)

async def main():
    job = await chatstream.batch.submit(
        model, ["a", "b", "c"], manifest=manifest, limits=Limits(1, 10**6)
    )
    print("submitted", flush=True)
    await anyio.sleep_forever()

anyio.run(main)
"""


def start_child(provider: str, url: str, manifest: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, provider, url, str(manifest)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


async def kill(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGKILL)
    with anyio.fail_after(10):
        while child.poll() is None:
            await anyio.sleep(0.01)
    assert child.returncode == -signal.SIGKILL
    if child.stdout is not None:
        child.stdout.close()


@pytest.mark.allow_blocking  # Popen and its pipe
async def test_openai_killed_while_creating_a_batch_resumes_without_resubmitting(
    manifest: Path,
) -> None:
    # The second batch is created, but its creator is killed before it hears the batch id:
    # the worst moment. The resumed run must find that batch by its input file, not make a
    # second one, and submit the third job, never sent, once.
    async with OpenAIBatchServer([HI], stall_create=2) as server:
        child = start_child("openai", server.base_url, manifest)
        try:
            # upload, create, upload, create (stalled)
            await server.wait_for_requests(4, timeout=30)
            assert server.batches_created == 2
        finally:
            await kill(child)
        model = ChatOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        async with await chatstream.batch.open(manifest, model) as job:
            status = await job.wait(interval=0)
            rows = [row async for row in job.collect()]
    assert server.batches_created == 3
    assert server.uploads == 3
    inputs = [
        r.body["input_file_id"]
        for r in server.requests
        if r.path == "/v1/batches" and r.method == "POST"
    ]
    assert len(set(inputs)) == 3
    assert status.is_done and [part.rows for part in status.jobs] == [1, 1, 1]
    assert [(row.index, row.ok) for row in rows] == [(0, True), (1, True), (2, True)]


@pytest.mark.allow_blocking  # Popen and its pipe
async def test_anthropic_killed_after_submitting_resumes_without_resubmitting(
    manifest: Path,
) -> None:
    async with AnthropicBatchServer([HI]) as server:
        child = start_child("anthropic", server.base_url, manifest)
        try:
            assert child.stdout is not None
            line = await anyio.to_thread.run_sync(child.stdout.readline)
            assert line == b"submitted\n"
        finally:
            await kill(child)
        assert server.batches_created == 3
        model = ChatAnthropic(base_url=server.base_url, api_key="test-key", max_retries=0)
        async with await chatstream.batch.open(manifest, model) as job:
            status = await job.wait(interval=0)
            rows = [row async for row in job.collect()]
    assert server.batches_created == 3
    assert status.is_done and status.succeeded == 3
    assert [row.message.text for row in rows if row.message] == ["Hi", "Hi", "Hi"]


async def test_open_without_a_model_rebuilds_it_from_the_manifest(
    manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-the-environment")
    async with OpenAIBatchServer([HI], api_key="from-the-environment") as server:
        model = ChatOpenAI(base_url=server.base_url, model="gpt-test", max_retries=0)
        await (await chatstream.batch.submit(model, ["a"], manifest=manifest)).aclose()
        async with await chatstream.batch.open(manifest) as job:
            assert job.provider == "openai"
            await job.wait(interval=0)
            [row] = [row async for row in job.collect()]
    assert row.ok
    [created] = [r for r in server.requests if r.path == "/v1/batches" and r.method == "POST"]
    assert server.batches_created == 1
    assert created.headers["authorization"] == "Bearer from-the-environment"
