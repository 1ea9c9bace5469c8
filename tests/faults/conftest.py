"""The fault suite (``nox -s faults``, or ``pytest tests/faults``); `tests/conftest.py` keeps it
out of the main run. Its figures are printed at the end and written to results/latest.json."""

from __future__ import annotations

import json

import pytest

from . import _figures
from ._providers import PROVIDERS, Provider


@pytest.fixture
def anyio_backend() -> str:
    # Everything here touches aiohttp, which runs on asyncio only.
    return "asyncio"


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> Provider:
    return PROVIDERS[request.param]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _figures.FIGURES:
        return
    _figures.write()
    terminalreporter.section("fault suite figures (computed, not asserted)")
    for name, values in sorted(_figures.FIGURES.items()):
        terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True)}")
    terminalreporter.write_line(f"written to {_figures.RESULTS}")
