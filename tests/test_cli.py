from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonpatch
import pytest

from chatstream import InvalidInputError
from chatstream.defaults import choose_provider, create_chat_model

KEYS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OLLAMA_HOST",
    "CHATSTREAM_PROVIDER",
    "OPENAI_BASE_URL",
)


def run(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith("CHATSTREAM_")
    }
    return subprocess.run(
        [sys.executable, "-m", "chatstream", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
        check=False,
    )


def test_ask_streams_the_answer_and_says_who_answered() -> None:
    result = run("ask", "--provider", "offline", "What is 2+2?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[offline placeholder, not a language model]")
    assert "'What is 2+2?'" in result.stdout
    assert "[answered by offline-placeholder (not a language model) via offline" in result.stderr


def test_ask_with_a_system_message_and_provider() -> None:
    result = run("ask", "--provider", "fake", "--system", "Be brief.", "Hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "This is a scripted answer from FakeChatModel.\n"
    assert "via fake" in result.stderr


def test_errors_are_one_line_unless_debug() -> None:
    result = run("ask", "--provider", "fake", "--temperature", "0.5", "Hi")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "chatstream: error: temperature: the fake provider has no setting 'temperature' "
        "(InvalidInputError)"
    ]
    debug = run("ask", "--provider", "fake", "--temperature", "0.5", "--debug", "Hi")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr


def test_usage_errors_exit_2() -> None:
    result = run("ask", "--provider", "nope", "Hi")
    assert result.returncode == 2
    assert "invalid choice: 'nope'" in result.stderr


def test_log_prints_json_patch_lines() -> None:
    result = run("log", "--provider", "fake", "Hi")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    state: dict[str, object] = {}
    for line in lines:
        state = jsonpatch.apply_patch(state, line["ops"])
    final = state["final_output"]
    assert isinstance(final, dict)
    assert final["generations"][0][0]["text"] == "This is a scripted answer from FakeChatModel."


def test_chat_keeps_going_until_end_of_input() -> None:
    result = run("chat", "--provider", "fake", stdin="hello\n\nagain\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("This is a scripted answer from FakeChatModel.") == 2
    assert "Ctrl-D quits" in result.stderr


def test_traces_list_and_show(tmp_path: Path) -> None:
    db = str(tmp_path / "traces.db")
    asked = run(
        "ask", "--provider", "fake", "Traced?", CHATSTREAM_TRACING="true", CHATSTREAM_TRACE_DB=db
    )
    assert asked.returncode == 0, asked.stderr
    listed = run("traces", "list", "--db", db)
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    run_id = line.split()[0]
    assert "chat_model" in line and "FakeChatModel" in line and line.endswith("ok")
    shown = run("traces", "show", run_id[:8], "--db", db)
    record = json.loads(shown.stdout)
    assert record["id"] == run_id
    assert record["inputs"]["messages"][0]["content"] == "Traced?"
    missing = run("traces", "show", "00000000", "--db", db)
    assert missing.returncode == 1
    assert "no traced run '00000000'" in missing.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),  # the offline default: local when installed, else the placeholder
        ({"OLLAMA_HOST": "http://h:11434"}, "ollama"),
        ({"ANTHROPIC_API_KEY": "a", "OLLAMA_HOST": "h"}, "anthropic"),
        ({"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"}, "openai"),
        ({"CHATSTREAM_PROVIDER": "fake", "OPENAI_API_KEY": "o"}, "fake"),
    ],
)
def test_selection_order(
    env: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    chosen = choose_provider()
    assert chosen == expected if expected else chosen in ("local", "offline")
    assert choose_provider("offline") == "offline"  # the flag wins over everything


def test_base_url_alone_means_openai_compatible(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    assert choose_provider(base_url="http://127.0.0.1:8000/v1") == "openai"


def test_unknown_provider_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSTREAM_PROVIDER", "nope")
    with pytest.raises(InvalidInputError, match="CHATSTREAM_PROVIDER: unknown provider 'nope'"):
        create_chat_model()
