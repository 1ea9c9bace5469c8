"""Sections 8 and 9: ``amap`` over many inputs, each contender in a process of its own.

Section 8 feeds a generator of 1,000,000 prompts (100,000 with ``--quick``) to the in-process
`Streamer` (1 chunk each) with ``max_concurrency=100``, against a plain anyio semaphore loop
over a bare async generator (`_amap_jobs.bounded_loop`): µs per row and peak RSS, which stays
flat however many inputs. An eager ``abatch`` (one task per input) of fewer inputs shows the
memory that laziness saves. Section 9 allows 2,000 short streams in flight against `_server`
(``/wait``: each waits a second before its first chunk, as a model thinks, so that the bound
can be reached): chatstream's ``amap`` against raw aiohttp driven by the same semaphore loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._isolated import run_isolated
from ._measure import FLOOR, Group

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._isolated import Outcome

SECTION = "amap"
SECTION_HTTP = "amap-http"
AMAP = "chatstream amap"
LIMIT = 100
"""``max_concurrency`` of section 8."""
IN_FLIGHT = 2_000
"""Calls at once in section 9, and the connection pool of both contenders there."""


def _memory(section: str, label: str, outcomes: Mapping[str, Outcome]) -> list[Group]:
    return [
        Group(
            section,
            f"peak RSS MB, {label}",
            "MB",
            {name: [outcome.peak_rss_mb] for name, outcome in outcomes.items()},
        ),
        Group(
            section,
            f"RSS growth MB (peak over set-up), {label}",
            "MB",
            {name: [o.peak_rss_mb - o.ready_rss_mb] for name, o in outcomes.items()},
            floor=None,  # a few MB against a few MB: a ratio would mostly say noise
        ),
    ]


def run(quick: bool) -> list[Group]:
    """Section 8: µs per row and peak RSS of a long lazy input, plus an eager ``abatch``."""
    n, eager = (100_000, 20_000) if quick else (1_000_000, 100_000)
    spec = {"job": "amap", "limit": LIMIT, "warm": 2_000}
    eager_name = f"chatstream abatch, eager ({eager:,} inputs)"
    sizes = {FLOOR: n, AMAP: n, eager_name: eager}
    specs = {
        FLOOR: {**spec, "contender": "floor", "inputs": n},
        AMAP: {**spec, "contender": "amap", "inputs": n},
        eager_name: {**spec, "contender": "abatch", "inputs": eager},
    }
    outcomes = run_isolated(specs, 1 if quick or n >= 1_000_000 else 3)
    label = f"{n:,} inputs, max_concurrency={LIMIT}"
    per_row = Group(
        SECTION,
        f"µs/row, {label}",
        "µs/row",
        {name: [s.wall * 1e6 / sizes[name] for s in o.samples] for name, o in outcomes.items()},
        note=f"The eager abatch starts one task per input, all at once, for {eager:,} inputs.",
    )
    return [per_row, *_memory(SECTION, label, outcomes)]


def run_http(port: int, quick: bool) -> list[Group]:
    """Section 9: req/s and KiB per in-flight request, 2,000 in flight."""
    requests, chunks, repeats = (4_000, 5, 2) if quick else (20_000, 5, 3)
    spec = {
        "job": "amap_http",
        "port": port,
        "requests": requests,
        "in_flight": IN_FLIGHT,
        "chunks": chunks,
    }
    outcomes = run_isolated(
        {FLOOR: {**spec, "contender": "floor"}, AMAP: {**spec, "contender": "chatstream"}},
        repeats,
    )
    label = f"{requests:,} requests x {chunks} chunks, {IN_FLIGHT:,} in flight"
    throughput = Group(
        SECTION_HTTP,
        f"req/s, {label}",
        "req/s",
        {name: [requests / s.wall for s in o.samples] for name, o in outcomes.items()},
        note="Higher is better: a ratio under 1 is chatstream's rate as a share of the floor's.",
    )
    cpu = Group(
        SECTION_HTTP,
        f"client CPU µs/request, {label}",
        "µs/request",
        {name: [s.cpu * 1e6 / requests for s in o.samples] for name, o in outcomes.items()},
    )
    per_request = Group(
        SECTION_HTTP,
        f"KiB/request in flight (RSS growth / {IN_FLIGHT:,}), {label}",
        "KiB",
        {
            name: [(o.peak_rss_mb - o.ready_rss_mb) * 1024 / IN_FLIGHT]
            for name, o in outcomes.items()
        },
    )
    sockets = Group(
        SECTION_HTTP,
        f"connections open after a run (peak in flight, at most {IN_FLIGHT:,}), {label}",
        "connections",
        {name: [e.get("sockets", 0) for e in o.extras] for name, o in outcomes.items()},
        floor=None,
        note="Pool connections stay open, idle, after the run: their number is the most "
        "requests that were in flight at once (a few sockets are the worker's own).",
    )
    return [throughput, cpu, per_request, sockets, *_memory(SECTION_HTTP, label, outcomes)[:1]]
