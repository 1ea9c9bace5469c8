"""``chatstream batch submit|status|collect`` against the local batch servers (in a thread)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from chatstream.batch._cli import INCOMPLETE
from chatstream.cli import main
from chatstream.testing import serve_in_thread
from chatstream.testing.anthropic_batch_server import AnthropicBatchServer
from chatstream.testing.openai_batch_server import OpenAIBatchServer, ScriptedReply

if TYPE_CHECKING:
    from pathlib import Path

HI = ScriptedReply.from_text("Hi")


def test_submit_status_collect_a_text_file_with_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first\tSay one\nsecond\tSay two\n\nthird\tSay three\n")
    manifest, results = tmp_path / "b.db", tmp_path / "out.jsonl"
    with serve_in_thread(OpenAIBatchServer([HI], failing={"second"})) as server:
        common = ["--base-url", server.base_url, "--api-key", "k"]
        assert (
            main(
                [
                    "batch",
                    "submit",
                    str(prompts),
                    "--id-column",
                    "--manifest",
                    str(manifest),
                    "--max-requests",
                    "2",
                    *common,
                ]
            )
            == 0
        )
        assert "submitted 3 rows in 2 job(s) to openai" in capsys.readouterr().out
        assert main(["batch", "status", "--manifest", str(manifest), "--api-key", "k"]) == 0
        assert "rows processing" in capsys.readouterr().out
        code = main(
            [
                "batch",
                "collect",
                "--manifest",
                str(manifest),
                "--api-key",
                "k",
                "--wait",
                "--interval",
                "0",
                "--output",
                str(results),
            ]
        )
        assert code == 0
        assert server.batches_created == 2
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["index"], r["id"], r["ok"]) for r in rows] == [
        (0, "first", True),
        (1, "second", False),
        (2, "third", True),
    ]
    assert rows[0]["text"] == "Hi" and rows[0]["usage"]["output_tokens"] == 1
    assert rows[1]["error_type"] == "BadRequestError" and rows[1]["error_code"] == "scripted"
    [sent] = [json.loads(line) for line in server.files[next(iter(server.files))].splitlines()[:1]]
    assert sent["body"]["messages"] == [{"role": "user", "content": "Say one"}]


def test_collect_before_the_end_writes_what_ended_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "a", "id": "x1"}\n'
        '{"messages": [{"role": "user", "content": "b"}], "id": "x2"}\n'
    )
    manifest = tmp_path / "b.db"
    with serve_in_thread(AnthropicBatchServer([HI], rows_per_poll=1)) as server:
        common = ["--provider", "anthropic", "--base-url", server.base_url, "--api-key", "k"]
        assert (
            main(
                [
                    "batch",
                    "submit",
                    str(prompts),
                    "--manifest",
                    str(manifest),
                    "--system",
                    "Be brief.",
                    *common,
                ]
            )
            == 0
        )
        capsys.readouterr()
        assert (
            main(["batch", "collect", "--manifest", str(manifest), "--api-key", "k"]) == INCOMPLETE
        )
        out, err = capsys.readouterr()
        assert out == "" and "1 of 2 rows still processing" in err
        assert main(["batch", "collect", "--manifest", str(manifest), "--api-key", "k"]) == 0
        out, _ = capsys.readouterr()
        [created] = [r for r in server.requests if r.method == "POST"]
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["x1", "x2"]
    assert created.body["requests"][0]["params"]["system"] == "Be brief."


def test_a_missing_manifest_is_one_line_and_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["batch", "status", "--manifest", str(tmp_path / "none.db")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chatstream: error: manifest: no batch manifest at")
    assert len(err.splitlines()) == 1


def test_a_malformed_input_line_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"nothing": 1}\n')
    code = main(
        [
            "batch",
            "submit",
            str(prompts),
            "--manifest",
            str(tmp_path / "b.db"),
            "--base-url",
            "http://127.0.0.1:9/v1",
        ]
    )
    assert code == 1
    assert f"{prompts}:2" in capsys.readouterr().err
    assert not (tmp_path / "b.db").exists()
