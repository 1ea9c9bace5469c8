"""The ``chatstream`` command: ask, chat, print a run log, read traces.

Errors print one line and exit non-zero (``--debug`` shows the traceback). The model comes from
``--provider``/``--model``/``--base-url`` or the selection order of `create_chat_model`.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import TYPE_CHECKING, Any, TextIO

from .defaults import PROVIDERS, choose_provider, create_chat_model
from .errors import ChatStreamError
from .messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    merge_chunks,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .model import BaseChatModel

__all__ = ["main"]


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", choices=list(PROVIDERS), help="which provider to use")
    parser.add_argument("--model", help="the model name (provider default otherwise)")
    parser.add_argument("--base-url", help="the server (any OpenAI-compatible one with openai)")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument("--max-tokens", type=int, help="longest answer, in tokens")
    parser.add_argument("--system", help="a system message to start the conversation with")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatstream",
        description="Talk to chat models, streaming. With no provider configured, the offline "
        "default answers (the embedded local model when chatstream[local] is installed).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="ask one question; the answer streams token by token")
    ask.add_argument("question")
    _model_options(ask)
    chat = commands.add_parser("chat", help="a conversation (Ctrl-C stops an answer, Ctrl-D quits)")
    _model_options(chat)
    log = commands.add_parser("log", help="print a question's run log as JSON lines of patches")
    log.add_argument("question")
    _model_options(log)
    traces = commands.add_parser("traces", help="read the tracing store")
    traces.add_argument("action", choices=["list", "show"], nargs="?", default="list")
    traces.add_argument("run_id", nargs="?", help="with show: the run id (or its first 8+ chars)")
    traces.add_argument("--limit", type=int, default=20, help="with list: how many runs")
    traces.add_argument(
        "--db", help="the trace database (default: CHATSTREAM_TRACE_DB or the data dir)"
    )
    traces.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def _model(args: argparse.Namespace) -> tuple[BaseChatModel, str]:
    provider = choose_provider(args.provider, base_url=args.base_url)
    if provider == "local":
        print("chatstream: loading the local model ...", file=sys.stderr, flush=True)
    model = create_chat_model(
        provider,
        model=args.model,
        base_url=args.base_url,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
    )
    return model, provider


def _start(args: argparse.Namespace) -> list[BaseMessage]:
    return [SystemMessage(args.system)] if args.system else []


def _stream_answer(model: BaseChatModel, messages: list[BaseMessage], out: TextIO) -> AIMessage:
    """Print the answer as it streams; Ctrl-C stops it and keeps what had arrived."""
    chunks: list[AIMessageChunk] = []
    try:
        for chunk in model.stream(messages):
            chunks.append(chunk)
            out.write(chunk.text)
            out.flush()
    except KeyboardInterrupt:
        out.write(" [stopped]")
    out.write("\n")
    return merge_chunks(chunks).to_message()


def _signature(model: BaseChatModel, provider: str, message: AIMessage) -> str:
    answered_by = message.response_metadata.get("model_name") or model.model_name
    usage = message.usage_metadata
    tokens = f", {usage['input_tokens']} + {usage['output_tokens']} tokens" if usage else ""
    return f"[answered by {answered_by} via {provider}{tokens}]"


def _ask(args: argparse.Namespace) -> int:
    model, provider = _model(args)
    message = _stream_answer(model, [*_start(args), HumanMessage(args.question)], sys.stdout)
    print(_signature(model, provider, message), file=sys.stderr)
    return 0


def _chat(args: argparse.Namespace) -> int:
    model, provider = _model(args)
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
        history.append(_stream_answer(model, history, sys.stdout))


def _log(args: argparse.Namespace) -> int:
    model, _ = _model(args)
    for patch in model.stream_log([*_start(args), HumanMessage(args.question)]):
        line = {"seq": patch.seq, "ops": patch.to_json()}  # type: ignore[union-attr]
        print(json.dumps(line, ensure_ascii=False), flush=True)
    return 0


def _traces(args: argparse.Namespace) -> int:
    from .tracing import get_run, list_runs

    if args.action == "show":
        if not args.run_id:
            raise ChatStreamError("traces show needs a run id (see `chatstream traces list`)")
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


_COMMANDS = {"ask": _ask, "chat": _chat, "log": _log, "traces": _traces}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, not a traceback, unless asked for
        if args.debug:
            traceback.print_exc()
        else:
            print(f"chatstream: error: {_describe(exc)}", file=sys.stderr)
        return 1


def _describe(exc: BaseException) -> Any:
    name = type(exc).__name__
    return f"{name}: {exc}" if not isinstance(exc, ChatStreamError) else f"{exc} ({name})"
