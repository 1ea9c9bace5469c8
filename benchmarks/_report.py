"""The results as a table on stdout, and as ``results/<name>.json`` and ``results/<name>.md``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._measure import Group
    from ._targets import Verdict

DASH = "\u2013"
"""Between a range's ends (an escape: ruff flags the character in source)."""
RESULTS = Path(__file__).resolve().parent / "results"
TITLES = {
    "in-process": "1. In process, no HTTP",
    "http": "2. HTTP streams from a server in another process (1,000 to 100,000 chunks)",
    "ttft": "3. Time to first chunk over HTTP (1-chunk stream)",
    "calls": "3b. What a call costs over HTTP: a fresh model per call, a server that closes",
    "concurrency": "4. Concurrency (each client in its own process)",
    "abatch": "5. abatch on the in-process models (each in its own process)",
    "import": "6. Import time (fresh interpreter)",
    "local": "7. Local model (SmolLM2-135M, greedy, 64 tokens)",
    "amap": "8. amap of a long lazy input, in process (each contender in its own process)",
    "amap-http": "9. amap with 2,000 in flight over HTTP (each contender in its own process)",
    "structured": "10. Structured output streaming (in process)",
    "cache": "11. Response cache hits (in process, MemoryCache)",
    "ratelimit": "12. Rate limiter overhead (in process, never waiting)",
}


METHOD = [
    "Contenders run interleaved: in each repeat every contender runs once, in an order that "
    "rotates, after an untimed warm-up; a contender whose runs add up to more than the "
    "section's time budget stops repeating (its table says so). `gc.collect()` runs before "
    "each timed run.",
    "In process, the floor is a bare async generator of the same pydantic `AIMessageChunk`s; "
    "langchain-core's model is a `BaseChatModel` whose `_astream` (and sync `_stream`) yields "
    "`ChatGenerationChunk(message=AIMessageChunk(content=...))`, with `streaming=True` so that "
    "its `ainvoke` merges the stream as chatstream's does. langchain's deprecated `astream_log` "
    "is called anyway, its warning silenced.",
    "Over HTTP, the server is another process streaming OpenAI chunks (`max_tokens` of them); "
    "the floor is raw aiohttp with `json.loads`. Every client has the same pool of 256 "
    "connections: aiohttp `TCPConnector(limit=256)`, chatstream `max_connections=256`, and "
    "`openai.DefaultAsyncHttpxClient(limits=Limits(256, 256))` for openai and langchain-openai. "
    "Client CPU is `time.process_time()` of the client process.",
    "Sections 4 and 5 run each contender in a process of its own; peak RSS is that process's "
    "high-water mark (`VmHWM`), and RSS growth is the peak minus the mark once set up.",
    "Sections 8 and 9 do too. Their floor is a plain anyio semaphore loop that pulls the next "
    "input only when a slot frees and starts one task per input: over a bare 1-chunk async "
    "generator in section 8, over the raw-aiohttp client in section 9. Section 9 gives both "
    "contenders a pool of 2,000 connections; KiB per request is RSS growth over 2,000.",
    "Sections 10 to 12 run interleaved in one process, each against its own baseline: plain "
    "`astream` of the same chunks (10), the bare async generator (11), and `ainvoke` with "
    "no limiter (12).",
]


def _number(value: float) -> str:
    size = abs(value)
    return f"{value:,.0f}" if size >= 100 else f"{value:.1f}" if size >= 10 else f"{value:.2f}"


def _rows(group: Group) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, values in group.values.items():
        ratio = group.ratio(name)
        spread = f"{_number(min(values))}{DASH}{_number(max(values))}" if len(values) > 1 else ""
        rows.append((name, _number(group.median(name)), spread, f"{ratio:.2f}x" if ratio else ""))
    return rows


def table(groups: list[Group], verdicts: list[Verdict]) -> str:
    """Plain text: each group's contenders with median, range and ratio, then the targets."""
    lines = []
    for group in groups:
        lines.append(f"\n[{group.section}] {group.measure} ({group.unit}; ratio to {group.floor})")
        for name, median, spread, ratio in _rows(group):
            lines.append(f"  {name:<44}{median:>10}  {spread:<19}{ratio:>8}")
        if group.note:
            lines.append(f"  note: {group.note}")
    lines.append("\nTargets")
    for verdict in verdicts:
        mark = "met   " if verdict.met else "MISSED"
        lines.append(f"  {mark}  {verdict.target}: {verdict.measured}")
    return "\n".join(lines)


def markdown(
    groups: list[Group], verdicts: list[Verdict], run: dict[str, Any], notes: list[str]
) -> str:
    """The summary: machine and load, targets met or missed, then every section's table."""
    machine = run["machine"]
    packages = ", ".join(
        f"{name} {version}" for name, version in machine["packages"].items() if version
    )
    lines = [
        f"# chatstream benchmarks ({run['mode']} run)",
        "",
        f"- Date: {machine['date']}; the run took {run['seconds']:.0f} s.",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB RAM, "
        f"{machine['os']}.",
        f"- Python: {machine['python']}. Packages: {packages}.",
        f"- Load (shared machine; `uptime`): at the start `{run['load']['start']['uptime']}`, "
        f"at the end `{run['load']['end']['uptime']}`.",
        "- Every figure is the median of interleaved runs (contenders in turn, round-robin, "
        "per repeat), with the range (min to max); ratios are to the floor of the same table. "
        "Nothing is asserted.",
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {v.target} | {v.measured} | {'met' if v.met else '**missed**'} |" for v in verdicts
    ]
    lines += ["", *(f"- {note}" for note in notes)]
    lines += ["", "## Method", "", *(f"- {line}" for line in METHOD)]
    for section, title in TITLES.items():
        chosen = [group for group in groups if group.section == section]
        if not chosen:
            continue
        lines += ["", f"## {title}", "", "| measure | contender | median | min to max | x floor |"]
        lines.append("| --- | --- | ---: | --- | ---: |")
        for group in chosen:
            for index, (name, median, spread, ratio) in enumerate(_rows(group)):
                label = f"{group.measure} ({group.unit})" if index == 0 else ""
                lines.append(f"| {label} | {name} | {median} | {spread} | {ratio} |")
        lines += [f"- {group.measure}: {group.note}" for group in chosen if group.note]
    return "\n".join(lines) + "\n"


def write(
    name: str, groups: list[Group], verdicts: list[Verdict], run: dict[str, Any], notes: list[str]
) -> tuple[Path, Path]:
    """Write ``<name>.json`` (every value) and ``<name>.md`` under `RESULTS`."""
    RESULTS.mkdir(exist_ok=True)
    data = {
        **run,
        "notes": notes,
        "targets": [asdict(verdict) for verdict in verdicts],
        "groups": [
            {
                **asdict(group),
                "stats": {
                    contender: {
                        "median": group.median(contender),
                        "min": min(values),
                        "max": max(values),
                        "ratio_to_floor": group.ratio(contender),
                    }
                    for contender, values in group.values.items()
                },
            }
            for group in groups
        ],
    }
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    md_path.write_text(markdown(groups, verdicts, run, notes))
    return json_path, md_path
