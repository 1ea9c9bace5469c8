"""``chatstream batch submit|status|collect``: a provider Batch API job from the command line.

Inputs come from a JSONL file (one ``{"prompt": ...}`` or ``{"messages": [...]}`` object a line,
with an optional ``"id"``) or a text file (one prompt a line; with ``--id-column`` the line is
``ID<TAB>PROMPT``). The manifest file carries the batch from one command to the next.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import InvalidInputError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from ..inputs import LanguageModelInput
    from ..model import BaseChatModel
    from ..outputs import RowResult
    from ._job import BatchJob

__all__ = ["INCOMPLETE", "add_parser", "run"]

INCOMPLETE = 3
"""The exit status of ``collect`` when some rows are still being processed."""


def add_parser(commands: Any, model_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``batch`` and its three actions to the ``chatstream`` parser's subcommands."""
    batch = commands.add_parser(
        "batch", help="run many prompts through a provider Batch API (half price, within 24 h)"
    )
    actions = batch.add_subparsers(
        dest="action", required=True, metavar="{submit,status,collect}", help="what to do"
    )
    submit = actions.add_parser("submit", help="send a file of prompts as a batch")
    submit.add_argument("inputs", help="a .jsonl file of prompts, or a text file, one a line")
    submit.add_argument("--id-column", action="store_true", help="text lines are ID<TAB>PROMPT")
    _manifest_option(submit)
    submit.add_argument("--max-requests", type=int, help="most requests per provider job")
    submit.add_argument("--max-bytes", type=int, help="most bytes per provider job")
    model_options(submit)
    status = actions.add_parser("status", help="ask the provider how far the batch got")
    _manifest_option(status)
    _resume_options(status)
    collect = actions.add_parser("collect", help="write the results as JSON lines")
    _manifest_option(collect)
    collect.add_argument("--output", "-o", help="the results file (default: standard output)")
    collect.add_argument("--wait", action="store_true", help="poll until every row has ended")
    collect.add_argument("--interval", type=float, default=60.0, help="seconds between polls")
    _resume_options(collect)


def _manifest_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="the batch's manifest (SQLite) file")


def _resume_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-key", help="the provider's API key (default: its environment variable)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def run(args: argparse.Namespace, model: Callable[[argparse.Namespace], BaseChatModel]) -> int:
    """Run one ``batch`` action; returns the exit status."""
    from .. import sync

    action: Callable[[], Any]
    if args.action == "submit":
        # Read here, before the event loop: a file read would block it.
        ids, inputs = _read_inputs(Path(args.inputs), id_column=args.id_column, system=args.system)
        chosen = model(args)
        action = lambda: _submit(args, chosen, ids, inputs)  # noqa: E731
    elif args.action == "status":
        action = lambda: _status(args)  # noqa: E731
    else:
        action = lambda: _collect(args)  # noqa: E731
    return int(sync.run(action))


async def _submit(
    args: argparse.Namespace,
    model: BaseChatModel,
    ids: list[str] | None,
    inputs: list[LanguageModelInput],
) -> int:
    from . import Limits, submit

    limits = None
    if args.max_requests or args.max_bytes:
        # What was not given stays at the provider's limit (checked against it at submit).
        limits = Limits(args.max_requests or 10**9, args.max_bytes or 10**12)
    job = await submit(model, inputs, manifest=args.manifest, ids=ids, limits=limits)
    async with job:
        status = await job.status()
    print(f"submitted {status.rows} rows in {len(status.jobs)} job(s) to {job.provider}")
    for part in status.jobs:
        print(f"  job {part.index}: {part.batch_id} ({part.rows} rows, {part.status})")
    return 0


async def _status(args: argparse.Namespace) -> int:
    async with await _open(args) as job:
        status = await job.poll()
    for part in status.jobs:
        print(
            f"job {part.index}: {part.batch_id or '-'} {part.status}: {part.succeeded} ok, "
            f"{part.errored} errored, {part.expired} expired, {part.canceled} canceled, "
            f"{part.processing} processing"
        )
    print("done" if status.is_done else f"{status.processing} of {status.rows} rows processing")
    return 0


async def _collect(args: argparse.Namespace) -> int:
    async with await _open(args) as job:
        status = await (job.wait(interval=args.interval) if args.wait else job.poll())
        ids = await job.custom_ids()
        if args.output is None:
            async for row in job.collect():
                print(json.dumps(_row_json(row, ids[row.index]), ensure_ascii=False))
        else:
            async with await anyio.open_file(args.output, "w", encoding="utf-8") as out:
                async for row in job.collect():
                    line = json.dumps(_row_json(row, ids[row.index]), ensure_ascii=False)
                    await out.write(line + "\n")
    if not status.is_done:
        print(
            f"chatstream: {status.processing} of {status.rows} rows still processing; collect "
            "again later (or pass --wait)",
            file=sys.stderr,
        )
        return INCOMPLETE
    return 0


async def _open(args: argparse.Namespace) -> BatchJob:
    from . import open as open_batch
    from ._manifest import Manifest

    model = None
    if args.api_key:
        # The recorded server and model, with this key.
        store = await Manifest.load(args.manifest)
        meta = store.meta
        await store.aclose()
        model = _model_with_key(meta, args.api_key)
    return await open_batch(args.manifest, model)


def _model_with_key(meta: dict[str, str], key: str) -> BaseChatModel:
    if meta.get("provider") == "anthropic":
        from ..providers.anthropic import ChatAnthropic

        return ChatAnthropic(model=meta["model"], base_url=meta["base_url"], api_key=key)
    from ..providers.openai import ChatOpenAI

    return ChatOpenAI(model=meta["model"], base_url=meta["base_url"], api_key=key)


def _row_json(row: RowResult, custom_id: str) -> dict[str, Any]:
    message = row.message
    error = row.error
    return {
        "index": row.index,
        "id": custom_id,
        "ok": row.ok,
        "text": None if message is None else message.text,
        "message": None if message is None else message.model_dump(mode="json"),
        "usage": row.usage,
        "error": None if error is None else str(error),
        "error_type": None if error is None else type(error).__name__,
        "error_code": getattr(error, "code", None),
    }


def _read_inputs(
    path: Path, *, id_column: bool, system: str | None
) -> tuple[list[str] | None, list[LanguageModelInput]]:
    """The ids (``None`` when no line gave one) and inputs of an input file."""
    from ..messages import HumanMessage, SystemMessage

    ids: list[str] = []
    inputs: list[LanguageModelInput] = []
    jsonl = path.suffix in (".jsonl", ".ndjson")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            if jsonl:
                custom_id, item = _jsonl_input(line, where)
            elif id_column:
                custom_id, tab, prompt = line.rstrip("\n").partition("\t")
                if not tab:
                    raise InvalidInputError("expected ID<TAB>PROMPT", where=where)
                item = prompt
            else:
                custom_id, item = None, line.rstrip("\n")
            if custom_id is not None:
                ids.append(custom_id)
            if system:
                head = [SystemMessage(system)]
                item = [*head, HumanMessage(item)] if isinstance(item, str) else [*head, *item]
            inputs.append(item)
    if ids and len(ids) != len(inputs):
        raise InvalidInputError("give an id on every line or on none", where=str(path))
    return (ids or None), inputs


def _jsonl_input(line: str, where: str) -> tuple[str | None, Any]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise InvalidInputError(f"not JSON ({exc})", where=where) from None
    if isinstance(value, str):
        return None, value
    if not isinstance(value, dict) or not ("prompt" in value or "messages" in value):
        raise InvalidInputError('expected {"prompt": ...} or {"messages": [...]}', where=where)
    custom_id = value.get("id")
    item = value["prompt"] if "prompt" in value else value["messages"]
    return (None if custom_id is None else str(custom_id)), item
