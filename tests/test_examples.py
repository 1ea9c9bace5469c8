"""The examples run as scripts with no API key and print what they should."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from chatstream.providers.fake import split_tokens

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTED = "This is a scripted answer from FakeChatModel."
"""What ``create_chat_model("fake")`` answers."""
SUMMARY = re.compile(
    r"(?P<tokens>\d+) tokens \| TTFT [\d.]+ ms \| total [\d.]+ ms \| [\d.]+ tokens/s "
    r"\| model (?P<model>.+)"
)


def example_env() -> dict[str, str]:
    """The environment with no provider configured, then the scripted model chosen."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith("_API_KEY") and key not in ("OLLAMA_HOST", "CHATSTREAM_TRACING")
    }
    env["CHATSTREAM_PROVIDER"] = "fake"
    return env


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        env=example_env(),
        timeout=60,
        check=False,
    )


def test_terminal_stream_prints_the_answer_then_a_summary() -> None:
    result = run_example("terminal_stream.py", "What is streaming?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == SCRIPTED + "\n"
    # stderr is not a terminal here: no status line, only the summary.
    summary = SUMMARY.fullmatch(result.stderr.strip())
    assert summary, result.stderr
    assert int(summary["tokens"]) == len(split_tokens(SCRIPTED))
    assert summary["model"] == "fake-chat-model"


def test_terminal_stream_runs_on_the_offline_default() -> None:
    result = run_example("terminal_stream.py", "--provider", "offline")
    assert result.returncode == 0, result.stderr
    assert "offline placeholder" in result.stdout
    assert "What is the purpose of model regularization?" in result.stdout  # the default question
    summary = SUMMARY.fullmatch(result.stderr.strip())
    assert summary and summary["model"].startswith("offline-placeholder"), result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_terminal_stream_keeps_a_status_line_on_a_terminal() -> None:
    import pty

    controller, terminal = pty.openpty()
    try:
        process = subprocess.run(
            [sys.executable, str(EXAMPLES / "terminal_stream.py"), "Hi"],
            stdout=subprocess.PIPE,
            stderr=terminal,
            env={**example_env(), "TERM": "xterm"},
            timeout=60,
            check=False,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not data:
                break
            shown += data
    finally:
        os.close(controller)
    assert process.returncode == 0
    assert process.stdout.decode() == SCRIPTED + "\n"  # the answer is not touched
    screen = shown.decode()
    assert re.search(r"\r\x1b\[K\d+ tokens \| TTFT \d+ ms", screen), screen  # redrawn in place
    assert SUMMARY.fullmatch(screen.rsplit("\r\x1b[K", 1)[-1].strip()), screen


@pytest.mark.parametrize("provider", ["fake", "offline"])
def test_backend_self_test_calls_each_endpoint(provider: str) -> None:
    result = run_example("aiohttp_backend.py", "--self-test", "--provider", provider)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "self-test passed"
    for request in ["GET /", "GET /app.js", "POST /api/chat", "POST /api/log", "GET /api/log/"]:
        assert any(line.startswith(request) and " 200 " in line for line in lines), request
    if provider == "fake":
        answers = [line for line in lines if line.startswith("POST")]
        assert len(answers) == 2 and all(line.endswith(f"end: {SCRIPTED!r}") for line in answers)


IGNORING_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)
"""Starts a Python program with SIGINT ignored, as a background job of a non-interactive shell."""


@pytest.mark.skipif(sys.platform == "win32", reason="stops the server with SIGINT")
def test_backend_serves_until_interrupted() -> None:
    # Started with SIGINT ignored (exec keeps that), Python installs no SIGINT handler of its
    # own: the example must install one, or this SIGINT would not stop it.
    script = str(EXAMPLES / "aiohttp_backend.py")
    command = [sys.executable, "-c", IGNORING_SIGINT, script, "--port", "0"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=example_env()
    ) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            url = re.search(r"http://127\.0\.0\.1:\d+/", banner)
            assert url, banner
            with urllib.request.urlopen(url[0], timeout=10) as response:
                page = response.read().decode()
            assert "<title>chatstream web chat</title>" in page
            process.send_signal(signal.SIGINT)
            _, errors = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, errors
