"""The project's speed targets (issues 8 and 15), each checked against the measured groups.

Nothing here fails a run: a verdict is reported met or missed next to its figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._inprocess import ASTREAM

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._measure import Group


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target, what was measured for it, and whether it was met."""

    target: str
    measured: str
    met: bool


def _groups(groups: list[Group], section: str, prefix: str) -> list[Group]:
    return [g for g in groups if g.section == section and g.measure.startswith(prefix)]


def _size(group: Group) -> str:
    return group.measure.split(", ", 1)[1] if ", " in group.measure else group.measure


def _ratio_target(
    groups: list[Group], section: str, prefix: str, contender: str, limit: float, what: str
) -> Iterator[Verdict]:
    for group in _groups(groups, section, prefix):
        ratio = group.ratio(contender)
        if ratio is not None:
            yield Verdict(
                f"{what} ≤ {limit}x the floor ({_size(group)})", f"{ratio:.2f}x", ratio <= limit
            )


def _in_process(groups: list[Group]) -> Iterator[Verdict]:
    logs = {_size(g): g for g in _groups(groups, "in-process", "astream_log µs/chunk")}
    for group in _groups(groups, "in-process", "astream µs/chunk"):
        size, ours = _size(group), group.median("chatstream")
        over = ours - group.median("floor")
        yield Verdict(
            f"in-process astream ≤ +2 µs/chunk over the floor ({size})",
            f"+{over:.2f} µs/chunk ({ours:.2f} vs {group.median('floor'):.2f})",
            over <= 2,
        )
        if size in logs:
            ratio = logs[size].median("chatstream") / ours
            yield Verdict(
                f"in-process astream_log ≤ 2x astream ({size})",
                f"{ratio:.2f}x ({logs[size].median('chatstream'):.2f} µs/chunk)",
                ratio <= 2,
            )
    by_n = list(logs.values())
    if len(by_n) > 1:
        growth = by_n[-1].median("chatstream") / by_n[0].median("chatstream")
        yield Verdict(
            f"in-process astream_log flat in N (µs/chunk at {_size(by_n[-1])} ≤ 1.5x at "
            f"{_size(by_n[0])})",
            f"{growth:.2f}x",
            growth <= 1.5,
        )


def _sync(groups: list[Group]) -> Iterator[Verdict]:
    # Against the astream runs made in the same rounds: the machine's speed drifts between
    # the section's async and sync tables.
    for group in _groups(groups, "in-process", "sync stream µs/chunk"):
        if ASTREAM in group.values:
            ratio = group.median("chatstream") / group.median(ASTREAM)
            yield Verdict(
                f"sync stream ≤ 1.3x astream per chunk ({_size(group)})",
                f"{ratio:.2f}x",
                ratio <= 1.3,
            )


def _stable(groups: list[Group]) -> Iterator[Verdict]:
    ours = "chatstream astream"
    for group in _groups(groups, "concurrency", "wall ms, 200 streams"):
        floor = group.values.get(group.floor or "", [])
        # Each repeat runs every contender once, in turn: the i-th runs are one round's.
        mine = group.values.get(ours, [])
        ratios = [run / base for run, base in zip(mine, floor, strict=False) if base]
        if ratios:
            shown = ", ".join(f"{ratio:.2f}" for ratio in ratios)
            yield Verdict(
                f"concurrency wall ≤ 1.3x the floor in every run ({_size(group)}, "
                f"{len(ratios)} runs)",
                f"{shown} (x floor per run)",
                max(ratios) <= 1.3,
            )


def _calls(groups: list[Group]) -> Iterator[Verdict]:
    fresh_model = "chatstream, a fresh model per call"
    for group in [g for g in _groups(groups, "calls", "µs/") if fresh_model in g.values]:
        fresh = group.median(fresh_model)
        reused = fresh / group.median("chatstream, one model")
        yield Verdict(
            f"a fresh ChatOpenAI per call ≤ 1.1x one reused model ({_size(group)})",
            f"{reused:.2f}x",
            reused <= 1.1,
        )
    closing = "chatstream, server closes after each stream"
    for group in _groups(groups, "calls", "µs/call"):
        closed = group.ratio(closing) if closing in group.values else None
        if closed is not None:
            yield Verdict(
                "back-to-back calls to a server that closes after each stream ≤ 1.2x raw "
                f"aiohttp opening a new connection per call ({_size(group)})",
                f"{closed:.2f}x",
                closed <= 1.2,
            )


def _imports(groups: list[Group]) -> Iterator[Verdict]:
    for group in _groups(groups, "import", "ms over the empty interpreter"):
        over = group.median("chatstream")
        yield Verdict(
            "import chatstream ≤ 120 ms over an empty interpreter", f"{over:.0f} ms", over <= 120
        )


def _local(groups: list[Group]) -> Iterator[Verdict]:
    ours = "chatstream ChatLlamaCpp"
    for group in _groups(groups, "local", "tokens/s"):
        ratio = group.ratio(ours)
        if ratio is not None:  # tokens/s: higher is better, so this target is a minimum
            yield Verdict("local tokens/s ≥ 0.95x llama-cpp-python", f"{ratio:.2f}x", ratio >= 0.95)
    for group in _groups(groups, "local", "time to first token"):
        extra = group.median(ours) - group.median(group.floor or "")
        yield Verdict("local TTFT ≤ +5 ms over llama-cpp-python", f"{extra:+.1f} ms", extra <= 5)


def _amap(groups: list[Group]) -> Iterator[Verdict]:
    amap = "chatstream amap"
    for group in _groups(groups, "amap", "peak RSS MB"):
        ratio = group.ratio(amap)
        if ratio is not None:
            yield Verdict(
                f"amap flat memory: peak RSS ≤ 1.5x the semaphore loop's ({_size(group)})",
                f"{ratio:.2f}x ({group.median(amap):.0f} vs {group.median('floor'):.0f} MB)",
                ratio <= 1.5,
            )
    for group in _groups(groups, "amap-http", "req/s"):
        ratio = group.ratio(amap)
        if ratio is not None:  # req/s: higher is better, so this target is a minimum
            yield Verdict(
                f"amap over HTTP ≥ 1/1.5 of the floor's req/s, i.e. wall ≤ 1.5x ({_size(group)})",
                f"{ratio:.3f}x ({group.median(amap):,.0f} vs {group.median('floor'):,.0f} req/s)",
                ratio >= 1 / 1.5,
            )


def _features(groups: list[Group]) -> Iterator[Verdict]:
    hit = "chatstream astream, cache hit"
    for group in _groups(groups, "cache", "astream µs/chunk"):
        ratio = group.ratio(hit)
        if ratio is not None:
            yield Verdict(
                f"cache hit ≤ 1.5x the floor per chunk ({_size(group)})",
                f"{ratio:.2f}x ({group.median(hit):.2f} vs {group.median('floor'):.2f} µs/chunk)",
                ratio <= 1.5,
            )
    for group in _groups(groups, "ratelimit", "ainvoke"):
        plain = group.median(group.floor or "")
        for name in group.values:
            if name != group.floor:
                over = group.median(name) - plain
                yield Verdict(
                    f"{name} ≤ +5 µs/call over no limiter",
                    f"{over:+.2f} µs/call ({group.median(name):.1f} vs {plain:.1f})",
                    over <= 5,
                )
    by_n = _groups(groups, "structured", "astream µs/chunk")
    if len(by_n) > 1:
        for name in by_n[-1].values:
            if name != by_n[-1].floor and name in by_n[0].values:
                growth = by_n[-1].median(name) / by_n[0].median(name)
                yield Verdict(
                    f"{name} flat in N (µs/chunk at {_size(by_n[-1])} ≤ 1.5x at {_size(by_n[0])})",
                    f"{growth:.2f}x",
                    growth <= 1.5,
                )


def evaluate(groups: list[Group]) -> list[Verdict]:
    """Every target whose figures were measured in ``groups``."""
    verdicts = list(_in_process(groups))
    verdicts += _sync(groups)
    verdicts += _ratio_target(groups, "http", "µs/chunk", "chatstream astream", 1.3, "HTTP astream")
    verdicts += _ratio_target(
        groups, "http", "µs/chunk", "chatstream astream_log", 2.5, "HTTP astream_log"
    )
    verdicts += _ratio_target(groups, "ttft", "TTFT", "chatstream astream", 1.1, "TTFT astream")
    verdicts += _calls(groups)
    verdicts += _ratio_target(
        groups, "concurrency", "wall ms, 200 streams", "chatstream astream", 1.3, "concurrency wall"
    )
    verdicts += _stable(groups)
    verdicts += _imports(groups)
    verdicts += _local(groups)
    verdicts += _amap(groups)
    verdicts += _features(groups)
    return verdicts
