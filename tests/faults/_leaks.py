"""Leak accounting for the fault suite: open connections, stray tasks and extra threads.

A check takes a `Baseline` before the fault and compares after it, polling for a bounded time
(closing a socket or ending a task takes a loop turn or two, which is not a leak).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from chatstream.testing._base import LocalServer

Count = tuple[str, Callable[[], int]]
"""A named count that must come back to 0, such as a server's open connections."""

SETTLE = 5.0
"""Seconds a count may take to come back to its baseline (a bound, never a measurement)."""

BRIDGE_THREAD = "chatstream-sync"
"""The sync bridge's daemon thread: started once per process and kept on purpose."""

_TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_OPEN_STATES = {"01", "02", "03", "08"}
"""ESTABLISHED, SYN_SENT, SYN_RECV, CLOSE_WAIT: a socket someone still holds open."""


def server_connections(server: LocalServer) -> int:
    """TCP connections the local protocol server holds open right now (aiohttp's own count)."""
    # LocalServer keeps its runner private; aiohttp's Server.connections is its public list of
    # live connection handlers (one per accepted socket, removed on connection_lost).
    runner = server._runner
    if runner is None or runner.server is None:
        return 0
    return len(runner.server.connections)


def kernel_connections(port: int) -> int:
    """Sockets of this host still open to or from ``port`` (both ends count), from /proc.

    Works whatever holds the socket (a raw listener, a child process), so it counts what the
    servers' own counters cannot: a half-open connect, the far end of a stream.
    """
    want = f":{port:04X}"
    count = 0
    for table in _TCP_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, remote, state = cols[1], cols[2], cols[3]
            if state in _OPEN_STATES and (local.endswith(want) or remote.endswith(want)):
                count += 1
    return count


def has_kernel_table() -> bool:
    """Whether `kernel_connections` can see anything (Linux)."""
    return _TCP_TABLES[0].exists()


def _thread_ids() -> set[int]:
    return {thread.ident or 0 for thread in threading.enumerate()}


def extra_threads(before: set[int]) -> list[str]:
    """Threads alive now that were not in ``before``, the sync bridge excepted."""
    return sorted(
        thread.name
        for thread in threading.enumerate()
        if (thread.ident or 0) not in before and thread.name != BRIDGE_THREAD
    )


def _other_tasks() -> set[asyncio.Task[object]]:
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task is not current and not task.done()}


@dataclass
class Baseline:
    """Tasks and threads alive before a fault; `check` says what is left over after it."""

    tasks: set[asyncio.Task[object]] = field(default_factory=_other_tasks)
    threads: set[int] = field(default_factory=_thread_ids)

    def stray_tasks(self) -> list[str]:
        """Live tasks of this loop that did not exist at the baseline."""
        return sorted(repr(task.get_coro()) for task in _other_tasks() - self.tasks)

    async def settle(self, *counts: Count) -> dict[str, object]:
        """Wait until nothing is left over; return what still is after `SETTLE` seconds."""
        left: dict[str, object] = {}
        with anyio.move_on_after(SETTLE):
            while True:
                left = self.leftovers(*counts)
                if not left:
                    return {}
                await anyio.sleep(0.01)
        return left

    def leftovers(self, *counts: Count) -> dict[str, object]:
        """What is left over right now (empty when nothing is)."""
        left: dict[str, object] = {}
        tasks = self.stray_tasks()
        if tasks:
            left["tasks"] = tasks
        threads = extra_threads(self.threads)
        if threads:
            left["threads"] = threads
        for name, count in counts:
            value = count()
            if value:
                left[name] = value
        return left
