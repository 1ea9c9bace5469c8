from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from typing import TYPE_CHECKING, Annotated, Any

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
from chatstream.settings import PerCall
from chatstream.tracing import default_db_path, flush, get_run, list_runs
from chatstream.tracing._sqlite import SQLiteTracer
from chatstream.tracing._store import _create, connect, transaction

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

    api_key: Annotated[SecretStr, PerCall()] = SecretStr(SECRET)
    default_headers: Annotated[dict[str, str], PerCall()] = Field(
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


# -- where the store is, and what a reader finds there ------------------------------------


@pytest.mark.allow_blocking
def test_the_reader_defaults_to_the_writers_database(db: Path) -> None:
    FakeChatModel(responses=["x"]).invoke("where am I?")
    assert flush()
    [record] = list_runs()  # no db=: CHATSTREAM_TRACE_DB, as the writer used
    assert record.inputs["messages"][0]["content"] == "where am I?"
    assert get_run(record.id) == record
    assert default_db_path() == db


def test_a_missing_database_reads_as_empty_and_stays_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "not" / "yet" / "traces.db"
    monkeypatch.setenv("CHATSTREAM_TRACE_DB", str(missing))
    assert list_runs() == []
    assert get_run("0123456789abcdef") is None
    assert list_runs(db=missing) == []
    assert not (tmp_path / "not").exists()


def test_a_database_without_the_table_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()  # an empty file: what a writer killed early used to leave
    assert path.exists()
    assert list_runs(db=path) == []
    assert get_run("0123456789abcdef", db=path) is None


def tables(path: Path) -> list[str]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]


def test_a_store_appears_only_with_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "traces.db"
    # Fail between creating the file and creating the table, like a process killed there.
    monkeypatch.setattr(chatstream.tracing._store, "SCHEMA", "SELECT * FROM no_such_table;")
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        connect(path)
    assert list(tmp_path.iterdir()) == []  # no database without a table, no temporary left
    monkeypatch.undo()
    connect(path).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces.db"]
    assert "runs" in tables(path)


def test_a_store_another_process_created_first_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    with closing(connect(path)) as first:
        with transaction(first):
            first.execute(
                "INSERT INTO runs (id, name, run_type, start_time) VALUES ('r', 'n', 't', 0)"
            )
    # A second writer that also found no file, then lost the race to create it.
    _create(path)
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT id FROM runs").fetchall() == [("r",)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces.db"]


def test_a_process_killed_right_after_a_call_leaves_a_readable_store(db: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal
        from chatstream.providers.fake import FakeChatModel
        FakeChatModel(responses=["x"]).invoke("q")
        os.kill(os.getpid(), signal.SIGKILL)  # no flush, no atexit: the writer is cut short
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert result.returncode == -9
    # The queued run may be lost (or the store not made yet), but what is there is readable.
    assert not db.exists() or "runs" in tables(db)
    assert len(list_runs()) <= 1


def test_processes_writing_one_store_at_once_lose_no_run(db: Path) -> None:
    go = db.parent / "go"
    script = textwrap.dedent(
        f"""
        import pathlib, sys, time
        from chatstream.providers.fake import FakeChatModel
        from chatstream.tracing import flush
        go = pathlib.Path({str(go)!r})
        while not go.exists():  # start together: all of them create the store at once
            time.sleep(0.005)
        model = FakeChatModel(responses=["x"])
        for i in range({RUNS_PER_PROCESS}):
            model.invoke(f"{{sys.argv[1]}}-{{i}}")
            if i % 5 == 4:
                assert flush(30)  # many small transactions, interleaved with the others
        assert flush(30)
        """
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, f"p{n}"], stderr=subprocess.PIPE)
        for n in range(4)
    ]
    go.touch()
    errors = [worker.communicate(timeout=120)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4, errors
    questions = {r.inputs["messages"][0]["content"] for r in list_runs(limit=10_000)}
    expected = {f"p{n}-{i}" for n in range(4) for i in range(RUNS_PER_PROCESS)}
    assert questions == expected


RUNS_PER_PROCESS = 40


@pytest.mark.allow_blocking
def test_a_store_that_cannot_be_opened_does_not_fail_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    # A tracer of its own, so that this broken one cannot fail other tests' flush().
    monkeypatch.setattr(chatstream.tracing, "_tracers", {})
    monkeypatch.setenv("CHATSTREAM_TRACING", "true")
    monkeypatch.setenv("CHATSTREAM_TRACE_DB", str(tmp_path / "a-file" / "traces.db"))
    with caplog.at_level(logging.ERROR, logger="chatstream.tracing"):
        assert FakeChatModel(responses=["still here"]).invoke("q").content == "still here"
        assert not flush()  # answered (not timed out), but nothing was or will be written
    assert any("cannot open" in record.getMessage() for record in caplog.records)
