from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import jsonpatch
import pytest

from chatstream import InvalidInputError, cli
from chatstream.defaults import choose_provider, create_chat_model
from chatstream.providers.fake import FakeChatModel
from chatstream.testing.openai_server import Faults, OpenAIServer, ScriptedReply

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from anyio.abc import ByteReceiveStream, Process

KEYS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OLLAMA_HOST",
    "CHATSTREAM_PROVIDER",
    "OPENAI_BASE_URL",
)
ANSWER = ScriptedReply(text_chunks=["Hello", " there", "!"])
"""What the local OpenAI-compatible server answers."""
KEY = "sk-test-5b1e9d0c7a"
"""The API key the local server is started with, when it wants one."""

# A test runner started in the background by a non-interactive shell ignores SIGINT, and so
# would a CLI started from it (Python installs no SIGINT handler then). Tests that send SIGINT
# start the CLI with the default restored, so that they test the CLI and not their parent.
WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)
SENDS_SIGINT = pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")


def clean_env(**env: str) -> dict[str, str]:
    """The environment with no provider configured, plus ``env``."""
    clean = {
        k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith("CHATSTREAM_")
    }
    return {**clean, **env}


def run(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatstream", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(**env),
        check=False,
    )


def command(*args: str) -> list[str]:
    """The CLI's command line, run with Python's SIGINT handler whatever this process ignores."""
    return [sys.executable, "-c", WITH_SIGINT, "-m", "chatstream", *args]


async def run_async(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI while this test's event loop serves a local server."""
    return await anyio.run_process(
        command(*args), env=clean_env(**env), stdin=subprocess.DEVNULL, check=False
    )


@asynccontextmanager
async def open_cli(*args: str, **kwargs: Any) -> AsyncIterator[Process]:
    """The CLI as a subprocess, killed if the test fails before it exits."""
    kwargs.setdefault("env", clean_env())
    async with await anyio.open_process(command(*args), **kwargs) as process:
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()


class Reader:
    """What a subprocess wrote so far, read on demand until some text appears."""

    def __init__(self, stream: ByteReceiveStream) -> None:
        self.stream = stream
        self.seen = b""
        self.position = 0

    async def until(self, text: str) -> None:
        """Read until ``text`` appears after the previous match."""
        wanted = text.encode()
        while (found := self.seen.find(wanted, self.position)) < 0:
            self.seen += await self.stream.receive()
        self.position = found + len(wanted)

    async def rest(self) -> str:
        """Everything, once the subprocess has closed its end."""
        async for data in self.stream:
            self.seen += data
        return self.seen.decode()


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
    result = run("ask", "--provider", "fake", "--api-key", "k", "Hi")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "chatstream: error: api_key: the fake provider has no setting 'api_key' (InvalidInputError)"
    ]
    debug = run("ask", "--provider", "fake", "--api-key", "k", "--debug", "Hi")
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
    # --db goes before the id, after it, or before the action.
    for args in (
        ["show", run_id[:8], "--db", db],
        ["show", "--db", db, run_id[:8]],
        ["--db", db, "show", run_id],
    ):
        shown = run("traces", *args)
        assert shown.returncode == 0, (args, shown.stderr)
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


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"chatstream {__import__('chatstream').__version__}\n"


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and, depth first, the parsers of its subcommands."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                yield from parsers(subparser)


def test_every_argument_and_option_has_help() -> None:
    found = list(parsers(cli._parser()))
    progs = [parser.prog for parser in found]
    assert progs == [
        "chatstream",
        "chatstream ask",
        "chatstream chat",
        "chatstream log",
        "chatstream traces",
        "chatstream traces list",
        "chatstream traces show",
        "chatstream batch",
        "chatstream batch submit",
        "chatstream batch status",
        "chatstream batch collect",
    ]
    missing = [
        f"{parser.prog}: {action.dest}"
        for parser in found
        for action in parser._actions
        if not action.help
    ]
    commands = [
        f"{parser.prog}: {choice.dest}"
        for parser in found
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
        if not choice.help
    ]
    assert missing + commands == []


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--max-tokens", "-1", "must be a whole number of at least 1, not '-1'"),
        ("--max-tokens", "0", "must be a whole number of at least 1, not '0'"),
        ("--max-tokens", "many", "must be a whole number of at least 1, not 'many'"),
        ("--temperature", "-0.5", "must be a number of at least 0, not '-0.5'"),
        ("--temperature", "nan", "must be a number of at least 0, not 'nan'"),
        ("--temperature", "warm", "must be a number of at least 0, not 'warm'"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(
    option: str, value: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["ask", "--provider", "fake", option, value, "Hi"])
    assert exited.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == f"chatstream ask: error: argument {option}: {problem}"


def test_numbers_in_range_are_taken() -> None:
    args = cli._parser().parse_args(["ask", "--temperature", "0", "--max-tokens", "1", "Hi"])
    assert (args.temperature, args.max_tokens) == (0.0, 1)


def test_base_url_needs_a_scheme() -> None:
    result = run("ask", "--base-url", "localhost:9", "Hi")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "chatstream: error: --base-url: 'localhost:9' is not a URL: it needs http:// or "
        "https:// in front (InvalidInputError)"
    ]


def test_only_the_local_model_says_it_is_loading(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The local model prints "chatstream: loading <file> (N MB) ..." itself (on a terminal);
    # the CLI adds no second line. Running the real model here would take minutes.
    built: list[str] = []

    def create(provider: str, **settings: Any) -> FakeChatModel:
        built.append(provider)
        return FakeChatModel(responses=["Hi!"])

    monkeypatch.setattr(cli, "choose_provider", lambda provider, base_url: "local")
    monkeypatch.setattr(cli, "create_chat_model", create)
    assert cli.main(["ask", "Hello"]) == 0
    out, err = capsys.readouterr()
    assert built == ["local"]
    assert out == "Hi!\n"
    assert err == "[answered by fake-chat-model via local, 1 + 1 tokens]\n"


async def test_ask_a_keyless_local_server() -> None:
    # Needs ChatOpenAI to accept a missing key when base_url is not OpenAI's own.
    async with OpenAIServer([ANSWER]) as server:
        result = await run_async("ask", "--base-url", server.base_url, "Hi")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"Hello there!\n"
    assert [request.body["messages"] for request in server.requests] == [
        [{"role": "user", "content": "Hi"}]
    ]


async def test_api_key_is_sent_and_never_shown() -> None:
    wrong = "sk-wrong-0d6f3a9b2c"
    async with OpenAIServer([ANSWER], api_key=KEY) as server:
        good = await run_async("ask", "--base-url", server.base_url, "--api-key", KEY, "Hi")
        bad = await run_async("ask", "--base-url", server.base_url, "--api-key", wrong, "Hi")
        debug = await run_async(
            "ask", "--base-url", server.base_url, "--api-key", wrong, "--debug", "Hi"
        )
    assert good.returncode == 0, good.stderr.decode()
    assert good.stdout == b"Hello there!\n"
    assert KEY.encode() not in good.stdout + good.stderr
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    for failed in (bad, debug):
        assert failed.returncode == 1
        assert b"AuthenticationError" in failed.stderr
        assert wrong.encode() not in failed.stdout + failed.stderr
    assert len(bad.stderr.splitlines()) == 1
    assert b"Traceback (most recent call last)" in debug.stderr


@SENDS_SIGINT
async def test_ctrl_c_stops_ask_with_status_130() -> None:
    stalled = Faults(stall_after=2)  # the role chunk and "Hello", then silence
    async with (
        OpenAIServer([ANSWER], stalled) as server,
        open_cli("ask", "--base-url", server.base_url, "Hi") as process,
    ):
        assert process.stdout is not None and process.stderr is not None
        out = Reader(process.stdout)
        await out.until("Hello")
        process.send_signal(signal.SIGINT)
        shown = await out.rest()
        errors = await Reader(process.stderr).rest()
        status = await process.wait()
    assert status == 130, errors
    assert shown == "Hello [stopped]\n"
    assert errors == ""  # no traceback, and no "answered by" line for a stopped answer


@SENDS_SIGINT
async def test_ctrl_c_in_chat_stops_only_the_answer() -> None:
    async with (
        OpenAIServer([ANSWER], Faults(stall_after=2)) as server,
        open_cli("chat", "--base-url", server.base_url) as process,
    ):
        assert process.stdin is not None and process.stdout is not None
        out = Reader(process.stdout)
        await process.stdin.send(b"hello\n")
        await out.until("Hello")
        process.send_signal(signal.SIGINT)
        await out.until(" [stopped]\n")
        server.script(faults=Faults())
        await process.stdin.send(b"again\n")
        await process.stdin.aclose()
        shown = await out.rest()
        status = await process.wait()
    assert status == 0
    assert shown == "> Hello [stopped]\n> Hello there!\n> "
    # The stopped answer stays in the conversation as far as it got.
    [_, second] = server.requests
    assert [(m["role"], m["content"]) for m in second.body["messages"]] == [
        ("user", "hello"),
        ("assistant", "Hello"),
        ("user", "again"),
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
async def test_chat_on_a_terminal_has_line_editing_and_history() -> None:
    pytest.importorskip("readline")
    import pty

    controller, terminal = pty.openpty()
    os.set_blocking(controller, False)
    screen = Terminal(controller)
    try:
        async with OpenAIServer([ANSWER]) as server:
            async with open_cli(
                "chat",
                "--base-url",
                server.base_url,
                stdin=terminal,
                stdout=terminal,
                stderr=terminal,
                # Default key bindings, whatever the user running the tests has in ~/.inputrc.
                env=clean_env(TERM="xterm", INPUTRC=os.devnull),
            ) as process:
                os.close(terminal)
                terminal = -1
                await screen.until("> ")
                screen.type("hello\r")
                await screen.until("Hello there!")
                await screen.until("> ")
                screen.type("\x10\r")  # Ctrl-P: the previous line again, then Enter
                await screen.until("Hello there!")
                await screen.until("> ")
                screen.type("\x04")  # Ctrl-D: the end
                status = await process.wait()
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert status == 0, screen.seen
    # Without readline the second question would be the bare control character "\x10".
    asked = [request.body["messages"][-1]["content"] for request in server.requests]
    assert asked == ["hello", "hello"]


class Terminal:
    """The controlling side of a pseudo-terminal: what the program showed, and typing."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seen = b""
        self.position = 0

    async def until(self, text: str) -> None:
        """Read until ``text`` appears after the previous match."""
        wanted = text.encode()
        while (found := self.seen.find(wanted, self.position)) < 0:
            await anyio.wait_readable(self.fd)
            self.seen += os.read(self.fd, 4096)
        self.position = found + len(wanted)

    def type(self, keys: str) -> None:
        """Type ``keys`` (a few bytes: a pseudo-terminal takes them at once)."""
        os.write(self.fd, keys.encode())


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX pipeline")
@pytest.mark.parametrize("subcommand", ["ask", "log"])
async def test_a_reader_that_stops_early_gets_no_traceback(subcommand: str) -> None:
    # Far more output than a pipe holds, so the CLI is still writing when `head` has gone,
    # whatever the timing.
    long = ScriptedReply(text_chunks=["x" * 99 + "\n"] * 3000)
    read_end, write_end = os.pipe()
    async with OpenAIServer([long]) as server:
        try:
            async with (
                open_cli(subcommand, "--base-url", server.base_url, "Hi", stdout=write_end) as cli_,
                await anyio.open_process(["head", "-n", "1"], stdin=read_end) as head,
            ):
                os.close(read_end)
                os.close(write_end)
                read_end = write_end = -1
                assert head.stdout is not None and cli_.stderr is not None
                first = await Reader(head.stdout).rest()
                errors = await Reader(cli_.stderr).rest()
                status = await cli_.wait()
        finally:
            for fd in (read_end, write_end):
                if fd >= 0:
                    os.close(fd)
    assert errors == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert status == 141  # 128 + SIGPIPE, as for any writer whose reader went away
    if subcommand == "ask":
        assert first == "x" * 99 + "\n"
    else:
        assert json.loads(first)["seq"] == 1
