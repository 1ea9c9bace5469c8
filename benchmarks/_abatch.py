"""Section 5: ``abatch`` of many inputs on the in-process models, each in a process of its own.

chatstream's `Streamer` and langchain-core's `LangChainStreamer` (the same chunks); the floor
gathers the same number of bare generators, each joined into its answer's text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._isolated import outcome_groups, run_isolated

if TYPE_CHECKING:
    from ._measure import Group

SECTION = "abatch"
CONTENDERS = ("floor", "chatstream", "langchain-core")


def run(quick: bool) -> list[Group]:
    """1,000 inputs x 20 chunks, per contender."""
    inputs, chunks = 1_000, 20
    spec = {"job": "abatch", "inputs": inputs, "chunks": chunks}
    outcomes = run_isolated(
        {name: {**spec, "contender": name} for name in CONTENDERS}, 3 if quick else 7
    )
    return outcome_groups(SECTION, f"{inputs:,} inputs x {chunks} chunks", outcomes)
