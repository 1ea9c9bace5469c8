"""Contenders in subprocesses (`_worker`), run round-robin, with each one's peak RSS.

All workers start and set up first; then each gets an untimed warm-up, then one run per repeat
in turn, so that a change of load hits them alike. A worker is idle while another runs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._measure import Group, Sample, turns, wall_group
from ._server import ROOT
from ._worker import MARK

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass
class Outcome:
    """What one isolated contender measured."""

    samples: list[Sample]
    ready_rss_mb: float
    """Peak RSS once set up (imports, client), before any run."""
    peak_rss_mb: float
    """Peak RSS after every run."""
    extras: list[dict[str, Any]] = field(default_factory=list)
    """What else each run reported (a job's run may return a dict), in order."""


class _Worker:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._worker", json.dumps(spec)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(MARK):
                answer: dict[str, Any] = json.loads(line[len(MARK) :])
                return answer
        raise RuntimeError(f"a benchmark worker ended early (exit {self.process.wait()})")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def run_isolated(
    specs: Mapping[str, Mapping[str, Any]], repeats: int, budget: float = math.inf
) -> dict[str, Outcome]:
    """Run each named worker spec ``repeats`` times in `turns`, after one warm-up each."""
    workers = {name: _Worker(spec) for name, spec in specs.items()}
    try:
        ready = {name: worker.read()["ready_rss_mb"] for name, worker in workers.items()}
        for worker in workers.values():
            worker.ask("warm")
        samples: dict[str, list[Sample]] = {name: [] for name in workers}
        extras: dict[str, list[dict[str, Any]]] = {name: [] for name in workers}
        for name in turns(list(workers), repeats, samples, budget):
            answer = workers[name].ask("run")
            samples[name].append(Sample(answer.pop("wall"), answer.pop("cpu")))
            extras[name].append(answer)
        peak = {name: worker.ask("stop")["peak_rss_mb"] for name, worker in workers.items()}
    finally:
        for worker in workers.values():
            worker.close()
    return {name: Outcome(samples[name], ready[name], peak[name], extras[name]) for name in workers}


def outcome_groups(section: str, label: str, outcomes: Mapping[str, Outcome]) -> list[Group]:
    """Wall ms, client CPU ms, peak RSS and RSS growth (peak over set-up) of each contender."""
    samples = {name: outcome.samples for name, outcome in outcomes.items()}
    return [
        wall_group(section, f"wall ms, {label}", samples, unit="ms", scale=1e3),
        wall_group(section, f"client CPU ms, {label}", samples, unit="ms", scale=1e3, cpu=True),
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
            {
                name: [outcome.peak_rss_mb - outcome.ready_rss_mb]
                for name, outcome in outcomes.items()
            },
            floor=None,  # a few MB over a fraction of one: a ratio would say nothing
        ),
    ]
