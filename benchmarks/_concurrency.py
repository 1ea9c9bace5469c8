"""Section 4: many concurrent streams, each client in a process of its own (for its peak RSS).

Every client gets the same connection limit (`_http.LIMIT`); streams beyond it wait for a
connection, in each client's own way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._clients import CLIENTS
from ._http import LIMIT
from ._isolated import outcome_groups, run_isolated

if TYPE_CHECKING:
    from ._measure import Group

SECTION = "concurrency"
BUDGET = 20.0
"""Seconds of runs per client, after which it is not repeated (the slowest peers)."""


def measure(port: int, streams: int, chunks: int, repeats: int) -> list[Group]:
    """``streams`` concurrent ``chunks``-chunk streams (event writes), per client."""
    spec = {
        "job": "concurrency",
        "port": port,
        "streams": streams,
        "chunks": chunks,
        "limit": LIMIT,
    }
    specs = {name: {**spec, "client": name} for name in CLIENTS}
    outcomes = run_isolated(specs, repeats, BUDGET)
    return outcome_groups(SECTION, f"{streams:,} streams x {chunks} chunks", outcomes)


def run(port: int, quick: bool) -> list[Group]:
    """200 streams x 200 chunks (5 runs, to see how stable the ratio is) and 2,000 x 20.

    ``quick``: 200 x 50 only, once.
    """
    if quick:
        return measure(port, 200, 50, 1)
    return measure(port, 200, 200, 5) + measure(port, 2_000, 20, 3)
