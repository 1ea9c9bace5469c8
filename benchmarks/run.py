"""The benchmark runner (issue 8): chatstream against its peers and a floor, interleaved.

The peers are langchain-core, langchain-openai and the openai SDK; the floor is raw aiohttp and
``json.loads`` (a bare async generator in process). Run ``python -m benchmarks.run [--quick]``.

Prints a table and writes ``benchmarks/results/<name>.json`` and ``.md``; asserts nothing. The
peers are installed only in the bench environment (``nox -s bench``), never as dependencies.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from typing import TYPE_CHECKING

from . import (
    _abatch,
    _amap,
    _calls,
    _concurrency,
    _features,
    _http,
    _imports,
    _inprocess,
    _local,
    _machine,
    _report,
)
from ._server import serving
from ._targets import evaluate

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._measure import Group

SECTIONS = (
    "inprocess",
    "http",
    "calls",
    "concurrency",
    "abatch",
    "imports",
    "local",
    "amap",
    "amap-http",
    "features",
)
"""In the order they run; ``http`` includes time to first chunk, ``calls`` a fresh model per
call and a server that closes after each stream, ``features`` structured output, the response
cache and the rate limiter."""
_QUIET_ENV = ("CHATSTREAM_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "OPENAI_API_KEY")
"""Switched off for the run (and its subprocesses): tracing would measure something else."""


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes and fewer repeats (under 2 minutes)"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}"
    )
    parser.add_argument(
        "--name", help="results file stem under benchmarks/results (default: latest, or quick)"
    )
    return parser.parse_args()


PEERS = {
    "langchain_core": "langchain-core",
    "langchain_openai": "langchain-openai",
    "openai": "openai",
}
"""The peers every section but 6 and 7 needs, by module: installed by ``nox -s bench`` only."""


def _missing_peers() -> list[str]:
    return [
        package for module, package in PEERS.items() if importlib.util.find_spec(module) is None
    ]


def _timed(label: str, run: Callable[[], list[Group]]) -> list[Group]:
    start = time.perf_counter()
    print(f"[{label}] running ...", file=sys.stderr, flush=True)
    groups = run()
    print(f"[{label}] done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return groups


def main() -> None:
    """Run the chosen sections, print the table and write the results."""
    args = _arguments()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(chosen) - set(SECTIONS):
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if missing := _missing_peers():
        raise SystemExit(
            f"the peers are not installed here: {', '.join(missing)}. Run `nox -s bench`, or "
            "install them into a separate environment (never the project's own)."
        )
    for name in _QUIET_ENV:
        os.environ.pop(name, None)
    quick, start = args.quick, time.perf_counter()
    load_start = _machine.load()
    groups: list[Group] = []
    notes: list[str] = []
    if "inprocess" in chosen:
        groups += _timed("in-process", lambda: _inprocess.run(quick))
    if {"http", "calls", "concurrency"} & set(chosen):
        with serving() as port:
            if "http" in chosen:
                groups += _timed("http", lambda: _http.run(port, quick))
            if "calls" in chosen:
                groups += _timed("calls", lambda: _calls.run(port, quick))
            if "concurrency" in chosen:
                groups += _timed("concurrency", lambda: _concurrency.run(port, quick))
    if "abatch" in chosen:
        groups += _timed("abatch", lambda: _abatch.run(quick))
    if "imports" in chosen:
        groups += _timed("imports", lambda: _imports.run(quick))
    if "local" in chosen:
        if reason := _local.missing():
            notes.append(f"Section 7 (local model) skipped: {reason}.")
        else:
            groups += _timed("local", lambda: _local.run(quick))
    if "amap" in chosen:
        groups += _timed("amap", lambda: _amap.run(quick))
    if "amap-http" in chosen:
        with serving() as port:
            groups += _timed("amap-http", lambda: _amap.run_http(port, quick))
    if "features" in chosen:
        groups += _timed("features", lambda: _features.run(quick))
    verdicts = evaluate(groups)
    run = {
        "mode": "quick" if quick else "full",
        "sections": chosen,
        "seconds": time.perf_counter() - start,
        "machine": _machine.describe(),
        "load": {"start": load_start, "end": _machine.load()},
    }
    print(_report.table(groups, verdicts))
    for note in notes:
        print(f"note: {note}")
    paths = _report.write(
        args.name or ("quick" if quick else "latest"), groups, verdicts, run, notes
    )
    print(f"\nwritten: {', '.join(str(path) for path in paths)}  ({run['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
