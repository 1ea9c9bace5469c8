"""``kill -9`` in the middle of a burst of traced runs: every committed run is in the store.

With ``CHATSTREAM_TRACE_DURABLE=true`` a call returns only once its run is committed, so every
run whose call returned (printed ``ended``) must be in the store. By default the tracer
commits in batches, off the calls' path:

The child streams bursts of concurrent traced runs from a local OpenAI server. It prints
``ended <id>`` as each run ends and, once `chatstream.tracing.flush` says the burst is
committed, ``durable <ids>``. The parent kills it with SIGKILL while a burst is under way,
then reads the store: every durable id must be there and the database must pass SQLite's
integrity check. Runs that had ended but were not yet committed may be missing (the tracer
writes from a queue, off the stream's path, in batches): how many is printed, not asserted.

Several processes writing one store at once is covered by
``tests/test_tracing.py::test_processes_writing_one_store_at_once_lose_no_run``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from typing import TYPE_CHECKING

import pytest

from chatstream.tracing import list_runs

from . import _figures
from ._providers import KEY

if TYPE_CHECKING:
    from pathlib import Path

BURST = 25
DURABLE_BURSTS = 3
"""Bursts committed before the kill, which then lands inside the next one."""

_CHILD = textwrap.dedent(
    f"""
    import sys

    import anyio
    from chatstream.providers.openai import ChatOpenAI
    from chatstream.testing import OpenAIServer, ScriptedReply
    from chatstream.tracing import flush

    def say(line: str) -> None:
        # One write per line: print() writes each argument on its own, and under
        # PYTHONUNBUFFERED each of those is a syscall the kill can land between.
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    async def main() -> None:
        reply = ScriptedReply(text_chunks=["a", "b", "c"])
        async with OpenAIServer([reply], api_key={KEY!r}) as server:
            model = ChatOpenAI(base_url=server.base_url, api_key={KEY!r}, max_retries=0)
            async with model:
                while True:
                    ended = []

                    async def one() -> None:
                        async with model.astream("Hi") as stream:
                            async for _ in stream:
                                pass
                        ended.append(str(stream.run.id))
                        say("ended " + str(stream.run.id))

                    async with anyio.create_task_group() as group:
                        for _ in range({BURST}):
                            group.start_soon(one)
                    assert await anyio.to_thread.run_sync(flush, 30.0)
                    say(" ".join(["durable", *ended]))

    anyio.run(main)
    """
)


@pytest.mark.parametrize("strict", [False, True], ids=["batched", "durable"])
def test_kill_9_mid_burst_loses_no_committed_run(tmp_path: Path, strict: bool) -> None:
    db = tmp_path / "traces.db"
    env = {**os.environ, "CHATSTREAM_TRACING": "true", "CHATSTREAM_TRACE_DB": str(db)}
    env["CHATSTREAM_TRACE_DURABLE"] = "true" if strict else ""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    lines: list[str] = []
    try:
        durable_bursts = 0
        for line in child.stdout:
            lines.append(line)
            if line.startswith("durable"):
                durable_bursts += 1
            elif durable_bursts == DURABLE_BURSTS:
                break  # the first run of the next burst has ended: its siblings are in flight
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        lines += child.stdout.readlines()  # what it printed before it died
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    lines = [line for line in lines if line.endswith("\n")]  # the kill may cut the last one
    durable = {
        run_id for line in lines if line.startswith("durable") for run_id in line.split()[1:]
    }
    ended = {line.split()[1] for line in lines if line.startswith("ended")}
    assert len(durable) >= DURABLE_BURSTS * BURST
    with closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    stored = {record.id for record in list_runs(limit=100_000, db=db)}
    assert durable <= stored
    # Nothing but finished runs. One may be stored yet unprinted: the kill can land between
    # its on_end (queued, then committed by the writer thread) and its print, which follow
    # each other with no await, so no second run can be in that window.
    # Durable, a whole burst may be committed and not yet printed (its calls were waiting for
    # the one commit when the kill came).
    assert len(stored - ended) <= (BURST if strict else 1)
    in_flight = ended - durable
    if strict:
        assert ended <= stored  # every call that returned had its run committed first
    _figures.record(
        f"kill -9 mid-burst ({'durable' if strict else 'batched'})",
        committed_runs=len(durable),
        ended_not_yet_committed=len(in_flight),
        of_those_in_the_store=len(in_flight & stored),
    )
