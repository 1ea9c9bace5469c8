"""`ReplayStore`: run logs kept in memory, and the background tasks that run them, for `web`.

A run started through the store runs in a task group the store owns (not in the request that
started it), so that it outlives its client for a grace period; followers read its patches from
the shared, bounded window by sequence number.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, final

import anyio

from .errors import ClosedError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from aiohttp import web
    from anyio.abc import TaskGroup

__all__ = ["ReplayStore"]

_log = logging.getLogger("chatstream.web")

_CLOSE_TIMEOUT = 10.0
"""Seconds the store's shutdown may wait for its runs to close their model streams."""

_SHUTDOWN = "the server is shutting down"
"""Why a run that nothing else cancelled ended without finishing."""


@final
class _Replay:
    """One run: its kept patch events, how it ended, and who follows it.

    Only the newest ``max_patches`` events are kept. Followers read the window by sequence
    number and wait on `wait` for the next change, so the run only ever appends: a slow
    follower cannot hold it up, it falls out of the window and is told so instead.
    """

    __slots__ = (
        "_attendance",
        "_changed",
        "_scope",
        "cancel_reason",
        "ended_at",
        "final",
        "followers",
        "patches",
        "run_id",
    )

    def __init__(self, run_id: str, max_patches: int) -> None:
        self.run_id = run_id
        self.patches: deque[tuple[int, bytes]] = deque(maxlen=max_patches)
        """The newest patch events, each with its ``seq`` (consecutive, from 1)."""
        self.final: bytes | None = None
        """The ``end`` or ``error`` event, once the run is over."""
        self.ended_at: float | None = None
        """When the run ended (``time.monotonic()``); the TTL counts from here."""
        self.followers = 0
        """How many clients are reading the run now."""
        self.cancel_reason = _SHUTDOWN
        self._changed = anyio.Event()
        self._attendance = anyio.Event()
        self._scope = anyio.CancelScope()

    def expired(self, now: float, ttl: float) -> bool:
        """Whether the run ended more than ``ttl`` seconds before ``now``."""
        return self.ended_at is not None and now - self.ended_at > ttl

    def publish(self, seq: int, event: bytes) -> None:
        """Keep the next patch event and wake the followers (never waits)."""
        self.patches.append((seq, event))
        self._changed = _fire(self._changed)

    def finish(self, final: bytes) -> None:
        """Record how the run ended and wake the followers."""
        if self.final is None:
            self.final, self.ended_at = final, time.monotonic()
            self._changed = _fire(self._changed)

    def since(self, seq: int) -> list[tuple[int, bytes]] | None:
        """The kept events after ``seq``; ``None`` when some of them were already forgotten."""
        patches = self.patches
        if not patches:
            return []
        first = patches[0][0]
        if first > seq + 1:
            return None
        # Indexing from the right end is cheap on a deque; a caught-up follower asks for a few.
        start = max(seq + 1 - first, 0)
        return [patches[i] for i in range(start, len(patches))]

    async def wait(self) -> None:
        """Until the next patch or the end (callers check `since` first, with no await between)."""
        await self._changed.wait()

    @contextmanager
    def attached(self) -> Iterator[None]:
        """Count a client as following the run while the block runs."""
        self.followers += 1
        self._attendance = _fire(self._attendance)
        try:
            yield
        finally:
            self.followers -= 1
            self._attendance = _fire(self._attendance)

    def cancel(self, reason: str) -> None:
        """Cancel the run, if it is still going; its followers get an error saying ``reason``."""
        if self.final is None and not self._scope.cancel_called:
            self.cancel_reason = reason
            self._scope.cancel()

    async def _until_attendance_changes(self) -> None:
        await self._attendance.wait()


def _fire(event: anyio.Event) -> anyio.Event:
    # anyio events cannot be cleared: wake the waiters of this one and hand out a fresh one.
    event.set()
    return anyio.Event()


@final
class ReplayStore:
    """Run logs kept in memory, and the task group their runs run in.

    A run started by `web.log_handler` runs in a task the store owns, so a client that drops
    does not stop it: it is cancelled only once no client has followed it for ``grace``
    seconds. Each run keeps its newest ``max_patches`` patch events for ``ttl`` seconds after it
    ends; at most ``max_runs`` runs are kept, live ones included (a new run then displaces the
    oldest ended one, or is refused while all of them are live).

    The store must be installed on the app that serves it, which starts its task group at
    startup and cancels its runs at shutdown::

        store = ReplayStore(grace=30)
        store.install(app)

    Args:
        ttl: Seconds an ended run stays available for resuming.
        grace: Seconds a live run goes on with no client following it before it is cancelled.
        max_patches: Patch events kept per run (older ones are forgotten first).
        max_runs: Runs kept, live or ended.

    Raises:
        ValueError: A negative ``ttl`` or ``grace``, or a ``max_*`` below 1 (named).
    """

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        grace: float = 30.0,
        max_patches: int = 10_000,
        max_runs: int = 1_000,
    ) -> None:
        for name, value, least in [
            ("ttl", ttl, 0),
            ("grace", grace, 0),
            ("max_patches", max_patches, 1),
            ("max_runs", max_runs, 1),
        ]:
            if not value >= least:
                raise ValueError(f"{name} must be at least {least}, got {value!r}")
        self.ttl = ttl
        self.grace = grace
        self.max_patches = max_patches
        self.max_runs = max_runs
        self._runs: OrderedDict[str, _Replay] = OrderedDict()
        self._group: TaskGroup | None = None
        self._host: asyncio.Task[None] | None = None

    def install(self, app: web.Application) -> None:
        """Run the store's task group for the life of ``app`` (call before the app starts).

        Its runs are cancelled when the app shuts down, before aiohttp waits for the handlers
        that follow them, so those handlers end with the runs' ``Cancelled`` events.
        """

        async def start(_: web.Application) -> None:
            await self._astart()

        async def close(_: web.Application) -> None:
            await self.aclose()

        app.on_startup.append(start)
        app.on_shutdown.append(close)
        app.on_cleanup.append(close)

    @property
    def is_running(self) -> bool:
        """Whether the store can start runs (installed on an app that is running)."""
        return self._group is not None

    async def _astart(self) -> None:
        if self._host is not None:
            raise ClosedError("a ReplayStore serves one app once; create a store per app")
        started = anyio.Event()
        # aiohttp runs startup and cleanup hooks as separate awaits, maybe in different tasks,
        # so no task group can span them: one host task owns the group for the app's life, as
        # in aiohttp's "background tasks" recipe, and `aclose` cancels it and waits for it.
        self._host = asyncio.create_task(self._serve(started))  # noqa: TID251
        await started.wait()

    async def _serve(self, started: anyio.Event) -> None:
        async with anyio.create_task_group() as group:
            self._group = group
            started.set()
            await anyio.sleep_forever()

    async def aclose(self) -> None:
        """Cancel every live run and wait (briefly) until their streams are closed (idempotent)."""
        group, self._group = self._group, None
        if group is not None:
            group.cancel_scope.cancel()
        host = self._host
        if host is None:
            return
        if not host.done():
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
                await asyncio.wait([host])
        if host.done() and not host.cancelled() and (error := host.exception()) is not None:
            _log.error("the ReplayStore's task group failed", exc_info=error)

    def _prune(self) -> None:
        now = time.monotonic()
        for run_id in [key for key, replay in self._runs.items() if replay.expired(now, self.ttl)]:
            del self._runs[run_id]

    def get(self, run_id: str) -> _Replay | None:
        """A run's kept patches, while they are still kept."""
        self._prune()
        return self._runs.get(run_id)

    def start(
        self,
        run_id: str,
        drive: Callable[[_Replay], Awaitable[bytes]],
        cancelled: Callable[[str], bytes],
    ) -> _Replay | None:
        """Run ``drive`` in the store's task group and keep what it publishes.

        ``drive`` publishes the run's patch events and returns its final event; if the run is
        cancelled instead, ``cancelled(reason)`` is its final event. Returns ``None`` when
        ``max_runs`` runs are live.

        Raises:
            ClosedError: The store is not installed on a running app.
        """
        if self._group is None:
            raise ClosedError(
                "the ReplayStore is not running: call store.install(app) before the app starts"
            )
        self._prune()
        if len(self._runs) >= self.max_runs:
            oldest_ended = next((k for k, r in self._runs.items() if r.final is not None), None)
            if oldest_ended is None:
                return None
            del self._runs[oldest_ended]
        replay = self._runs[run_id] = _Replay(run_id, self.max_patches)
        self._group.start_soon(self._run, replay, drive, cancelled, name=f"chatstream run {run_id}")
        return replay

    async def _run(
        self,
        replay: _Replay,
        drive: Callable[[_Replay], Awaitable[bytes]],
        cancelled: Callable[[str], bytes],
    ) -> None:
        final: bytes | None = None
        try:
            with replay._scope:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._reap, replay)
                    final = await drive(replay)
                    group.cancel_scope.cancel()
        except Exception:  # a bug in `drive`: this run ends, the store's other runs go on
            _log.exception("run %s failed", replay.run_id)
            replay.cancel_reason = "the run failed on the server"
        finally:  # followers (and later resumes) learn how the run ended, cancellation included
            replay.finish(final if final is not None else cancelled(replay.cancel_reason))

    async def _reap(self, replay: _Replay) -> None:
        """Cancel the run once no client has followed it for ``grace`` seconds."""
        while True:
            if replay.followers:
                await replay._until_attendance_changes()
                continue
            with anyio.move_on_after(self.grace):
                while not replay.followers:
                    await replay._until_attendance_changes()
            if not replay.followers:
                replay.cancel(f"no client followed the run for {self.grace:g} s")
                return
