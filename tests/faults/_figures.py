"""Figures the fault suite measures: printed at the end of the run and written as JSON.

They are computed, never asserted (timings depend on the machine); `record` keeps them and the
conftest's terminal summary prints them and writes ``results/latest.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "latest.json"

FIGURES: dict[str, dict[str, Any]] = {}


def record(name: str, **values: Any) -> None:
    """Keep the figures of one measurement (a later one of the same name replaces it)."""
    FIGURES[name] = values


def write() -> None:
    """Write every figure recorded so far (sorted, so that runs diff cleanly)."""
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")
