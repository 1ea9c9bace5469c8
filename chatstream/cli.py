"""The ``chatstream`` command: ask, chat, print a run log, read traces, run a provider batch.

Errors print one line and exit non-zero (``--debug`` shows the traceback). The model comes from
``--provider``/``--model``/``--base-url`` or the selection order of `create_chat_model`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from . import __version__, sync
from .defaults import PROVIDERS, choose_provider, create_chat_model
from .errors import ChatStreamError, InvalidInputError
from .messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .model import BaseChatModel

__all__ = ["main"]

_SIGPIPE_STATUS = 141
"""128 + SIGPIPE: the status a shell reports for a writer whose reader went away."""


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, not {text!r}")
    return value


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", choices=list(PROVIDERS), help="which provider to use")
    parser.add_argument("--model", help="the model name (provider default otherwise)")
    parser.add_argument(
        "--base-url",
        help="the server, http:// or https:// (any OpenAI-compatible one with openai)",
    )
    parser.add_argument(
        "--api-key",
        help="the provider's API key (better: its environment variable, as a command line "
        "is visible to other users of the machine); a local server needs none",
    )
    parser.add_argument("--temperature", type=_non_negative_float, help="sampling temperature")
    parser.add_argument("--max-tokens", type=_positive_int, help="longest answer, in tokens")
    parser.add_argument("--system", help="a system message to start the conversation with")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _trace_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", help="the trace database (default: CHATSTREAM_TRACE_DB or the data dir)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _traces_parser(traces: argparse.ArgumentParser) -> None:
    # The options go on `traces` and again on each action, so that they work before the
    # action and after it (`traces show --db X ID`). On the actions they default to SUPPRESS:
    # argparse copies an action parser's defaults over what `traces` parsed.
    _trace_options(traces)
    traces.add_argument("--limit", type=_positive_int, default=20, help="with list: how many runs")
    actions = traces.add_subparsers(
        dest="action", metavar="{list,show}", help="what to read (default: list)"
    )
    listing = actions.add_parser(
        "list",
        help="the latest traced runs, one a line (the default)",
        argument_default=argparse.SUPPRESS,
    )
    listing.add_argument("--limit", type=_positive_int, help="how many runs (default: 20)")
    _trace_options(listing)
    show = actions.add_parser(
        "show", help="one traced run as JSON", argument_default=argparse.SUPPRESS
    )
    show.add_argument("run_id", help="the run id (or its first 8+ chars)")
    _trace_options(show)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatstream",
        description="Talk to chat models, streaming. With no provider configured, the offline "
        "default answers (the embedded local model when chatstream[local] is installed).",
    )
    parser.add_argument(
        "--version", action="version", version=f"chatstream {__version__}", help="show the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, help="what to do")
    ask = commands.add_parser("ask", help="ask one question; the answer streams token by token")
    ask.add_argument("question", help="the question")
    _model_options(ask)
    chat = commands.add_parser("chat", help="a conversation (Ctrl-C stops an answer, Ctrl-D quits)")
    _model_options(chat)
    log = commands.add_parser("log", help="print a question's run log as JSON lines of patches")
    log.add_argument("question", help="the question")
    _model_options(log)
    _traces_parser(commands.add_parser("traces", help="read the tracing store (default: list)"))
    from .batch._cli import add_parser as add_batch_parser

    add_batch_parser(commands, _model_options)
    return parser


def _check_base_url(url: str | None) -> None:
    # Without a scheme aiohttp fails deep in a request with an obscure error (or urlsplit
    # reads "localhost" as the scheme), so say what is wrong before building anything.
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInputError(
            f"{url!r} is not a URL: it needs http:// or https:// in front", where="--base-url"
        )


def _model(args: argparse.Namespace) -> tuple[BaseChatModel, str]:
    _check_base_url(args.base_url)
    provider = choose_provider(args.provider, base_url=args.base_url)
    # No "loading" line here: the local model prints its own, with the file and its size.
    model = create_chat_model(
        provider,
        model=args.model,
        base_url=args.base_url,
        api_key=args.api_key,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
    )
    return model, provider


def _start(args: argparse.Namespace) -> list[BaseMessage]:
    return [SystemMessage(args.system)] if args.system else []


def _stream_answer(
    model: BaseChatModel, messages: list[BaseMessage], out: TextIO
) -> tuple[AIMessage, bool]:
    """Print the answer as it streams; Ctrl-C stops it.

    Returns:
        The answer (`Run.final_message`, with the run id), partial if Ctrl-C stopped it, and
        whether Ctrl-C stopped it.
    """
    stream = model.astream(messages)
    # Closing the generator stops the stream on the bridge's loop now, not whenever it is
    # garbage-collected.
    chunks = sync.iterate(lambda: stream)
    stopped = False
    try:
        with contextlib.closing(chunks):
            for chunk in chunks:
                out.write(chunk.text)
                out.flush()
    except KeyboardInterrupt:
        stopped = True
        out.write(" [stopped]")
    out.write("\n")
    return stream.message, stopped


def _signature(model: BaseChatModel, provider: str, message: AIMessage) -> str:
    answered_by = message.response_metadata.get("model_name") or model.model_name
    usage = message.usage_metadata
    tokens = f", {usage['input_tokens']} + {usage['output_tokens']} tokens" if usage else ""
    return f"[answered by {answered_by} via {provider}{tokens}]"


def _ask(args: argparse.Namespace) -> int:
    model, provider = _model(args)
    messages = [*_start(args), HumanMessage(args.question)]
    message, stopped = _stream_answer(model, messages, sys.stdout)
    if stopped:
        return 130  # 128 + SIGINT, as for any command stopped with Ctrl-C
    print(_signature(model, provider, message), file=sys.stderr)
    return 0


def _line_editing() -> None:
    # input() edits lines with readline only when stdin and stdout are both terminals, so
    # there is nothing to gain from importing it otherwise.
    if sys.stdin.isatty() and sys.stdout.isatty():
        with contextlib.suppress(ImportError):  # not built everywhere (Windows): plain input()
            import readline  # noqa: F401


def _chat(args: argparse.Namespace) -> int:
    model, provider = _model(args)
    _line_editing()
    print(
        f"chatting with {model.model_name} via {provider}; Ctrl-C stops an answer, Ctrl-D quits",
        file=sys.stderr,
    )
    history = _start(args)
    while True:
        try:
            question = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        if not question.strip():
            continue
        history.append(HumanMessage(question))
        answer, _ = _stream_answer(model, history, sys.stdout)
        history.append(answer)


def _log(args: argparse.Namespace) -> int:
    model, _ = _model(args)
    for patch in model.stream_log([*_start(args), HumanMessage(args.question)]):
        line = {"seq": patch.seq, "ops": patch.to_json()}  # type: ignore[union-attr]
        print(json.dumps(line, ensure_ascii=False), flush=True)
    return 0


def _traces(args: argparse.Namespace) -> int:
    from .tracing import get_run, list_runs

    if args.action == "show":
        record = get_run(args.run_id, db=args.db)
        if record is None:
            raise ChatStreamError(f"no traced run {args.run_id!r} (or the prefix is ambiguous)")
        print(json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return 0
    for record in list_runs(limit=args.limit, db=args.db):
        tokens = "" if record.total_tokens is None else f"{record.total_tokens:>6} tok"
        latency = "" if record.latency is None else f"{record.latency * 1000:8.1f} ms"
        status = "error" if record.error else "ok"
        started = record.started.strftime("%Y-%m-%d %H:%M:%S")
        kind = f"{record.run_type:<10} {record.name:<24}"
        print(f"{record.id}  {started}  {kind} {latency} {tokens}  {status}")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from .batch._cli import run

    return run(args, lambda args: _model(args)[0])


_COMMANDS = {"ask": _ask, "chat": _chat, "log": _log, "traces": _traces, "batch": _batch}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_gone()
    except Exception as exc:  # one clear line, not a traceback, unless asked for
        if args.debug:
            traceback.print_exc()
        else:
            print(f"chatstream: error: {_describe(exc)}", file=sys.stderr)
        return 1


def _reader_gone() -> int:
    # The reader of stdout went away (`chatstream log ... | head -1`). Point stdout at devnull,
    # or the flush at exit fails again and prints "Exception ignored ..." (the recipe in the
    # `signal` module's docs, "Note on SIGPIPE").
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return _SIGPIPE_STATUS


def _describe(exc: BaseException) -> Any:
    name = type(exc).__name__
    return f"{name}: {exc}" if not isinstance(exc, ChatStreamError) else f"{exc} ({name})"
