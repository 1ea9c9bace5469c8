from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import Field, SecretStr

import chatstream
from chatstream import (
    AIMessageChunk,
    BaseChatModel,
    BaseMessage,
    RateLimitError,
    StreamInterruptedError,
    trace,
)
from chatstream.providers.fake import FakeChatModel, FakeResponse
from chatstream.tracing import flush, get_run, list_runs
from chatstream.tracing._sqlite import SQLiteTracer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SECRET = "sk-test-0123456789abcdef"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "traces.db"
    monkeypatch.setenv("CHATSTREAM_TRACING", "true")
    monkeypatch.setenv("CHATSTREAM_TRACE_DB", str(path))
    return path


@pytest.mark.allow_blocking  # reading the store back is plain blocking SQLite, on purpose
async def test_every_call_is_recorded(db: Path) -> None:
    model = FakeChatModel(
        responses=["Paris is the capital."], tags=["geo"], metadata={"user": "u1"}
    )
    message = await model.ainvoke("Capital of France?", config={"run_name": "capital"})
    assert flush()
    [record] = list_runs(db=db)
    assert record.name == "capital"
    assert record.run_type == "chat_model"
    assert record.tags == ["geo"]
    assert record.metadata == {"user": "u1"}
    assert record.inputs["messages"][0]["content"] == "Capital of France?"
    assert record.outputs[0]["content"] == message.content
    assert record.invocation_params["model"] == "fake-chat-model"
    assert set(record.environment) == {"chatstream", "python", "platform"}
    assert record.input_tokens == 3
    assert record.output_tokens == 4
    assert record.total_tokens == 7
    assert record.end_time is not None
    assert record.first_token_time is not None
    assert record.start_time <= record.first_token_time <= record.end_time
    assert record.latency == pytest.approx(record.end_time - record.start_time)
    assert record.error is None
    assert get_run(record.id, db=db) == record
    assert get_run(record.id[:8], db=db) == record


@pytest.mark.allow_blocking
async def test_errors_steps_and_parents_are_recorded(db: Path) -> None:
    model = FakeChatModel(
        responses=[FakeResponse(text="a b", error=RateLimitError("slow"), error_after=1)]
    )
    with trace("step", inputs={"q": "x"}) as step:
        with pytest.raises(RateLimitError):
            await model.ainvoke("q")
    assert flush()
    runs = {record.run_type: record for record in list_runs(db=db)}
    assert runs["chain"].id == str(step.id)
    assert runs["chain"].inputs == {"q": "x"}
    failed = runs["chat_model"]
    assert failed.parent_id == str(step.id)
    assert failed.error == "RateLimitError: slow"
    assert failed.outputs[0]["content"] == "a"  # the partial output is kept


def test_tracing_is_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATSTREAM_TRACING", raising=False)
    monkeypatch.setenv("CHATSTREAM_TRACE_DB", str(tmp_path / "t.db"))
    FakeChatModel(responses=["x"]).invoke("q")
    assert not (tmp_path / "t.db").exists()


class Keyed(BaseChatModel):
    """A model whose per-call settings could carry secrets, and which fails quoting one."""

    call_params = frozenset({"api_key", "default_headers"})
    api_key: SecretStr = SecretStr(SECRET)
    default_headers: dict[str, str] = Field(
        default_factory=lambda: {"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET}
    )

    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **params: Any
    ) -> AsyncIterator[AIMessageChunk]:
        yield AIMessageChunk("x")
        raise ValueError(f"bad key {SECRET}")


@pytest.mark.allow_blocking
def test_a_trace_never_contains_an_api_key(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    model = Keyed(metadata={"openai_api_key": SECRET, "note": f"key={SECRET}"})
    with pytest.raises(StreamInterruptedError, match="bad key"):
        model.invoke(f"my key is {SECRET}")
    assert flush()
    [record] = list_runs(db=db)
    assert record.invocation_params["api_key"] == "**redacted**"
    assert record.invocation_params["default_headers"]["Authorization"] == "**redacted**"
    for path in db.parent.iterdir():  # the database, its WAL and shared-memory files
        assert SECRET.encode() not in path.read_bytes()


def test_completed_runs_survive_the_process_being_killed(db: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal, time
        from chatstream.providers.fake import FakeChatModel
        model = FakeChatModel(responses=["x"])
        for i in range(3):
            model.invoke(f"q{i}")
        time.sleep(0.5)  # carry on working a little, then die without any cleanup
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert result.returncode == -9
    questions = sorted(r.inputs["messages"][0]["content"] for r in list_runs(db=db))
    assert questions == ["q0", "q1", "q2"]


@pytest.mark.allow_blocking
def test_a_full_queue_drops_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "locked.db"
    tracer = SQLiteTracer(str(path))
    assert tracer.flush()
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer now waits on the lock: the queue fills
    run = chatstream.Run(name="r")
    run.end()
    with caplog.at_level(logging.WARNING, logger="chatstream.tracing"):
        for _ in range(12_000):
            tracer.on_end(run)
    blocker.rollback()
    blocker.close()
    assert tracer.dropped >= 12_000 - 10_000 - 500 - 1  # all but the queue and one batch
    assert any("dropped a run" in record.getMessage() for record in caplog.records)
    assert tracer.flush(timeout=30)


# -- OpenTelemetry ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def spans() -> Any:
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_trace.set_tracer_provider(provider)
    return exporter


def test_otel_spans_follow_the_genai_conventions(
    spans: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATSTREAM_TRACING", "otel")
    spans.clear()
    model = FakeChatModel(responses=["a b"])
    with trace("agent step"):
        model.invoke("q", stop=["zz"])
    chat, step = spans.get_finished_spans()
    assert chat.name == "chat fake-chat-model"
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "fake-chat-model"
    assert chat.attributes["gen_ai.response.model"] == "fake-chat-model"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 1
    assert chat.attributes["gen_ai.usage.output_tokens"] == 2
    assert tuple(chat.attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert tuple(chat.attributes["gen_ai.request.stop_sequences"]) == ("zz",)
    assert chat.parent is not None
    assert chat.parent.span_id == step.context.span_id
    assert step.name == "agent step"


def test_otel_marks_failures(spans: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSTREAM_TRACING", "otel")
    spans.clear()
    model = FakeChatModel(responses=[FakeResponse(text="a", error=RateLimitError("slow"))])
    with pytest.raises(RateLimitError):
        model.invoke("q")
    [span] = spans.get_finished_spans()
    assert span.attributes["error.type"] == "RateLimitError"
    assert span.status.status_code.name == "ERROR"
