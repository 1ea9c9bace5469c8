"""Interleaved sampling and the groups of figures every section produces.

Every contender runs once per repeat, in turn (the starting one rotating), so that the load of a
shared machine drifts over all of them alike; only medians and ranges are reported.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping

FLOOR = "floor"
"""The contender every ratio is taken against, unless a group names another."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed run: wall seconds and this process's CPU seconds (all its threads)."""

    wall: float
    cpu: float


@dataclass
class Group:
    """One figure measured for several contenders, e.g. ``astream µs/chunk at N=1,000``."""

    section: str
    measure: str
    unit: str
    values: dict[str, list[float]] = field(default_factory=dict)
    floor: str | None = FLOOR
    note: str = ""

    def median(self, contender: str) -> float:
        """The median of ``contender``'s values."""
        return statistics.median(self.values[contender])

    def ratio(self, contender: str) -> float | None:
        """``contender``'s median over the floor's, when the group has a floor."""
        if self.floor is None or self.floor not in self.values or contender == self.floor:
            return None
        base = self.median(self.floor)
        return self.median(contender) / base if base else None


def turns(
    names: list[str], repeats: int, samples: Mapping[str, list[Sample]], budget: float
) -> Iterator[str]:
    """Who runs next: everyone once per repeat, the order rotating from repeat to repeat.

    A contender whose timed runs add up to more than ``budget`` seconds has had enough: it is
    left out from then on (a slow peer would otherwise take most of the run's time).
    """
    for repeat in range(repeats):
        start = repeat % len(names)  # so that no one always runs right after the same neighbour
        for name in names[start:] + names[:start]:
            if sum(sample.wall for sample in samples[name]) <= budget:
                yield name


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> Sample:
    wall, cpu = _clock()
    return Sample(wall - start[0], cpu - start[1])


def interleave_sync(
    contenders: Mapping[str, Callable[[], object]],
    repeats: int,
    *,
    warmup: bool = True,
    budget: float = math.inf,
) -> dict[str, list[Sample]]:
    """Run each contender ``repeats`` times in `turns`, after one untimed warm-up run each."""
    names = list(contenders)
    if warmup:
        for name in names:
            contenders[name]()
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for name in turns(names, repeats, samples, budget):
        gc.collect()  # the previous contender's garbage is not this one's cost
        start = _clock()
        contenders[name]()
        samples[name].append(_since(start))
    return samples


async def interleave_async(
    contenders: Mapping[str, Callable[[], Awaitable[object]]],
    repeats: int,
    *,
    warmup: bool = True,
    budget: float = math.inf,
    settle: Mapping[str, Callable[[], Awaitable[object]]] | None = None,
) -> dict[str, list[Sample]]:
    """`interleave_sync` for coroutine functions, all on the running event loop.

    ``settle[name]``, when given, runs untimed after each run of ``name``: to wait for work
    it left behind (a writer thread) before the next contender is timed.
    """
    settle = settle or {}
    names = list(contenders)
    if warmup:
        for name in names:
            await contenders[name]()
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for name in turns(names, repeats, samples, budget):
        gc.collect()
        start = _clock()
        await contenders[name]()
        samples[name].append(_since(start))
        if name in settle:
            await settle[name]()
    return samples


def wall_group(
    section: str,
    measure: str,
    samples: Mapping[str, list[Sample]],
    *,
    unit: str,
    scale: float,
    cpu: bool = False,
) -> Group:
    """A group of wall (or, with ``cpu``, CPU) times, each multiplied by ``scale``."""
    values = {
        name: [(s.cpu if cpu else s.wall) * scale for s in runs] for name, runs in samples.items()
    }
    most = max(map(len, values.values()), default=0)
    fewer = [f"{name} {len(runs)}" for name, runs in values.items() if len(runs) < most]
    note = f"runs over the time budget, so fewer of them: {', '.join(fewer)} (others {most})."
    return Group(section, measure, unit, values, note=note if fewer else "")
