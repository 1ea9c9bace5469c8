"""The local model's worker thread hands pieces to the caller's loop, bounded (no model needed)."""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import pytest

from chatstream.providers.llamacpp import _AHEAD, _Handoff, _Item


def _token(waiting: bool) -> anyio.lowlevel.EventLoopToken:
    token = anyio.lowlevel.current_token()
    if not waiting:
        return token
    # As anyio before run_sync_soon (4.11 has none): the hand-off waits for the loop instead.
    old = type("OldBackend", (token.backend_class,), {"run_sync_soon": None})
    return anyio.lowlevel.EventLoopToken(old, token.native_token)


@pytest.mark.parametrize("waiting", [False, True], ids=["run_sync_soon", "older anyio"])
async def test_the_worker_runs_at_most_the_bound_ahead_and_every_piece_arrives(
    waiting: bool,
) -> None:
    send, receive = anyio.create_memory_object_stream[_Item](_AHEAD)
    handoff = _Handoff(send, threading.Event(), _token(waiting))
    put: list[int] = []

    def worker() -> None:
        try:
            for i in range(3 * _AHEAD):
                handoff.put(str(i))
                put.append(i)
        finally:
            handoff.close()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    with anyio.fail_after(5):
        while len(put) < _AHEAD:
            await anyio.sleep(0.005)
    await anyio.sleep(0.2)  # nobody takes: the worker waits at the bound
    assert len(put) == _AHEAD
    received: list[_Item] = []
    async with receive:
        async for item in receive:
            handoff.taken()
            received.append(item)
    await anyio.to_thread.run_sync(thread.join, 5)
    assert received == [str(i) for i in range(3 * _AHEAD)]  # in order, none lost
    assert not thread.is_alive()


async def test_a_worker_waiting_at_the_bound_stops_when_the_caller_does() -> None:
    send, receive = anyio.create_memory_object_stream[_Item](_AHEAD)
    stopping = threading.Event()
    handoff = _Handoff(send, stopping, anyio.lowlevel.current_token())
    outcome: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                handoff.put("x")
        except BaseException as exc:  # recorded for the assertion below
            outcome.append(exc)
        finally:
            handoff.close()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    await anyio.sleep(0.1)
    stopping.set()  # as the caller's `finally` does, before closing its end
    receive.close()
    await anyio.to_thread.run_sync(thread.join, 5)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], anyio.ClosedResourceError)
