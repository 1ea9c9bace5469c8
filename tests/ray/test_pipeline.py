"""Parquet in, answers out, on a local Ray cluster against a local OpenAI server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chatstream.ray import RESULT_COLUMNS, missing_ids
from chatstream.testing import Faults, OpenAIServer, ScriptedReply, serve_in_thread

from ._job import BATCH_ROWS, run_job

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("ray_cluster")]

HELLO = ScriptedReply.from_text("Hello there")
ROOT = Path(__file__).parents[2]


def write_prompts(path: Path, n: int) -> list[str]:
    path.mkdir()
    ids = [f"row-{i:04d}" for i in range(n)]
    table = pa.table({"id": ids, "prompt": [f"prompt of {i}" for i in ids]})
    pq.write_table(table, path / "prompts.parquet", row_group_size=50)
    return ids


def sent_ids(server: Any, start: int = 0) -> list[str]:
    return [
        r.body["messages"][0]["content"].removeprefix("prompt of ") for r in server.requests[start:]
    ]


def answers(path: Path) -> pa.Table:
    return pq.read_table(path)


def test_every_row_is_answered_once_by_actors_that_got_the_model_by_pickling(
    tmp_path: Path,
) -> None:
    ids = write_prompts(tmp_path / "in", 120)
    with serve_in_thread(OpenAIServer([HELLO])) as server:
        run_job(str(tmp_path / "in"), str(tmp_path / "out"), server.base_url)
        assert sorted(sent_ids(server)) == ids
    out = answers(tmp_path / "out")
    assert out.column_names == ["id", *RESULT_COLUMNS]
    assert sorted(out.column("id").to_pylist()) == ids
    assert set(out.column("text").to_pylist()) == {"Hello there"}
    assert out.column("error").null_count == out.num_rows
    # One file per batch: a crash can lose only the batches in flight.
    files = list((tmp_path / "out").glob("*.parquet"))
    assert len(files) == 120 // BATCH_ROWS
    assert all(pq.read_metadata(f).num_rows == BATCH_ROWS for f in files)
    # A second run finds nothing left to send.
    assert len(missing_ids(str(tmp_path / "in"), str(tmp_path / "out"))) == 0
    with serve_in_thread(OpenAIServer([HELLO])) as server:
        run_job(str(tmp_path / "in"), str(tmp_path / "out"), server.base_url)
        assert server.requests == []
    assert answers(tmp_path / "out").num_rows == 120


def test_failed_calls_are_rows_in_the_output(tmp_path: Path) -> None:
    ids = write_prompts(tmp_path / "in", 20)
    with serve_in_thread(OpenAIServer([HELLO], Faults(http_error=500))) as server:
        run_job(str(tmp_path / "in"), str(tmp_path / "out"), server.base_url)
    out = answers(tmp_path / "out")
    assert sorted(out.column("id").to_pylist()) == ids
    assert all(e.startswith("ServerError: ") for e in out.column("error").to_pylist())
    # Failed rows count as answered, unless asked to send them again.
    assert len(missing_ids(str(tmp_path / "in"), str(tmp_path / "out"))) == 0
    retry = missing_ids(str(tmp_path / "in"), str(tmp_path / "out"), retry_failed=True)
    assert sorted(retry.to_pylist()) == ids


def test_after_a_crash_only_the_missing_ids_are_sent_again(
    tmp_path: Path, ray_cluster: dict[str, Any]
) -> None:
    n = 300
    ids = write_prompts(tmp_path / "in", n)
    out = tmp_path / "out"
    # Slow enough that the driver is killed mid-job: each answer takes several chunk delays.
    with serve_in_thread(OpenAIServer([HELLO], Faults(chunk_delay=0.05))) as server:
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.ray._job",
                ray_cluster["address"],
                str(tmp_path / "in"),
                str(out),
                server.base_url,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            deadline = time.monotonic() + 180
            while len(list(out.glob("*.parquet"))) < 3 and driver.poll() is None:
                assert time.monotonic() < deadline, "the job wrote no files"
                time.sleep(0.1)
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        # Ray kills the dead driver's actors; their connections closing says they are gone.
        deadline = time.monotonic() + 60
        while server.active_streams:
            assert time.monotonic() < deadline, "the crashed job's actors kept running"
            time.sleep(0.1)
        sent_before = len(server.requests)
        # What a cut-off write leaves behind: a file without its parquet footer.
        (out / "cut-off.parquet").write_bytes(b"PAR1" + b"\0" * 100)
        missing = missing_ids(str(tmp_path / "in"), str(out))
        assert 0 < len(missing) < n
        server.script([HELLO], Faults())
        run_job(str(tmp_path / "in"), str(out), server.base_url)
        assert sorted(sent_ids(server, sent_before)) == sorted(missing.to_pylist())
    assert not (out / "cut-off.parquet").exists()
    done = answers(out).column("id").to_pylist()
    assert sorted(done) == ids  # every id, each exactly once
