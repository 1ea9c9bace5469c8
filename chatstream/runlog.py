"""The run log: a run told as JSON-patch (RFC 6902) `RunLogPatch`es while it streams.

`LogTracker` observes a run (and the runs started inside it) and turns each event into a patch
at once, so a patch costs about what its chunk costs. Patches add up with ``+`` into a `RunLog`,
whose ``state`` is the run's state; ``to_json()`` gives plain RFC 6902 ops for any client.
"""

from __future__ import annotations

from collections import deque
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Literal, final

from pydantic import BaseModel

from ._compat import NotRequired, TypedDict
from .errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterable, Sequence

    from .messages import AIMessageChunk
    from .runs import Run

__all__ = ["LogTracker", "Op", "RunLog", "RunLogPatch", "stream_log", "to_json"]


class Op(TypedDict):
    """One RFC 6902 operation.

    chatstream emits ``add`` and ``replace``; a `RunLog` applies every kind (``move``,
    ``copy`` and ``test`` name their source in a ``"from"`` key).
    """

    op: Literal["add", "replace", "remove", "move", "copy", "test"]
    path: str
    value: NotRequired[Any]


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data: messages become their ``model_dump(mode="json")``."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


def _own(value: Any) -> Any:
    # Containers are copied as they enter a state, so that applying later patches can never
    # change a patch that was handed out (messages are frozen and shared as they are).
    if isinstance(value, dict):
        return {key: _own(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_own(item) for item in value]
    return value


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~") if "~" in token else token


_FAST_OPS = frozenset({"add", "replace", "remove"})
"""The ops applied here in time proportional to the op; the others go to jsonpatch."""


def _apply(state: Any, op: Op, *, shared: bool) -> Any:
    """Apply one op, returning the new root.

    ``shared``: ``state`` belongs to another log too, so the containers on the op's path are
    copied first (and only those).
    """
    if op["op"] not in _FAST_OPS:
        return _apply_rfc6902(state, op, shared=shared)
    path = op["path"]
    if path == "":
        return None if op["op"] == "remove" else _own(op["value"])
    *parents, last = [_unescape(token) for token in path[1:].split("/")]
    root = target = _copy(state) if shared else state
    for token in parents:
        key: Any = int(token) if isinstance(target, list) else token
        if shared:
            target[key] = _copy(target[key])
        target = target[key]
    if isinstance(target, list):
        if op["op"] == "remove":
            del target[int(last)]
        elif last == "-":
            target.append(_own(op["value"]))
        elif op["op"] == "add":
            target.insert(int(last), _own(op["value"]))
        else:
            target[int(last)] = _own(op["value"])
    elif op["op"] == "remove":
        del target[last]
    else:
        target[last] = _own(op["value"])
    return root


def _copy(container: Any) -> Any:
    return container.copy() if isinstance(container, (dict, list)) else container


def _apply_rfc6902(state: Any, op: Op, *, shared: bool) -> Any:
    # move, copy and test are rare (chatstream never emits them): the reference implementation
    # applies them. It deep-copies the document unless told not to; a shared state must be.
    import jsonpatch

    return jsonpatch.apply_patch(state, [to_json(dict(op))], in_place=not shared)


def _pretty(ops: Sequence[Op]) -> str:
    import pprint  # only for a repr: `import chatstream` need not load pprint

    return ",\n ".join(pprint.pformat(dict(op), width=100) for op in ops)


@final
class RunLogPatch:
    """Some RFC 6902 operations that move a run log forward.

    Attributes:
        ops: The operations; values are messages and plain data.
        seq: The patch's place in its log stream (1, 2, 3, ...), or ``None`` when built by hand.
    """

    __slots__ = ("ops", "seq")

    def __init__(self, *ops: Op, seq: int | None = None) -> None:
        self.ops: list[Op] = list(ops)
        self.seq = seq

    def to_json(self) -> list[dict[str, Any]]:
        """The ops as plain JSON (messages dumped with their ``type``), for any RFC 6902 client."""
        return [to_json(dict(op)) for op in self.ops]

    def __add__(self, other: RunLogPatch) -> RunLog:
        if not isinstance(other, RunLogPatch):
            return NotImplemented
        log = RunLog(*self.ops)
        log += other
        return log

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunLogPatch) and self.ops == other.ops

    __hash__ = None  # type: ignore[assignment]  # mutable, like the list it holds

    def __repr__(self) -> str:
        return f"RunLogPatch({_pretty(self.ops)})"


@final
class RunLog:
    """The accumulated log of a run: every op so far and the ``state`` they build.

    ``log + patch`` is a new log and leaves ``log`` as it was; it copies only the containers on
    the patch's paths. ``log += patch`` applies the patch in place, in time proportional to the
    patch (never replaying the history or copying the state).

    Raises:
        InvalidInputError: An op that cannot apply (a missing path, a failed ``test``); it
            names the op's position, and the log is left as it was before that op.
    """

    __slots__ = ("ops", "state")

    def __init__(self, *ops: Op, state: Any = None) -> None:
        self.ops: list[Op] = []
        self.state: Any = state
        self._extend(ops, shared=False)

    def _extend(self, ops: Iterable[Op], *, shared: bool) -> None:
        for op in ops:
            try:
                self.state = _apply(self.state, op, shared=shared)
            except Exception as exc:  # any RFC 6902 failure: IndexError, KeyError, jsonpatch's
                raise InvalidInputError(
                    f"cannot apply {dict(op)!r}: {type(exc).__name__}: {exc}",
                    where=f"ops[{len(self.ops)}]",
                ) from exc
            self.ops.append(op)

    def __add__(self, other: RunLogPatch) -> RunLog:
        if not isinstance(other, RunLogPatch):
            return NotImplemented
        log = RunLog(state=self.state)
        log.ops = list(self.ops)
        log._extend(other.ops, shared=True)
        return log

    def __iadd__(self, other: RunLogPatch) -> RunLog:
        if not isinstance(other, RunLogPatch):
            return NotImplemented
        self._extend(other.ops, shared=False)
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunLog) and self.state == other.state

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        import pprint  # only for a repr, as in _pretty

        return f"RunLog({pprint.pformat(self.state, width=100)})"


class LogTracker:
    """Observes a root run and the runs inside it, queuing a patch for every event.

    Runs inside the root appear under ``/logs/<name>`` (``name``, ``name:2``, ...) when they pass
    the include/exclude filters (by name, run type and tag); the root always appears.
    """

    inherit = True

    def __init__(
        self,
        *,
        with_streamed_output_list: bool = True,
        include_names: Sequence[str] | None = None,
        include_types: Sequence[str] | None = None,
        include_tags: Sequence[str] | None = None,
        exclude_names: Sequence[str] | None = None,
        exclude_types: Sequence[str] | None = None,
        exclude_tags: Sequence[str] | None = None,
    ) -> None:
        self.root: Run | None = None
        # Unbounded on purpose: runs inside the root emit while the root's own stream step is
        # running, in the task that drains this queue, so waiting for room would deadlock.
        # It holds at most the patches of one step of the root stream.
        self.pending: deque[RunLogPatch] = deque()
        self._with_list = with_streamed_output_list
        self._include = (include_names, include_types, include_tags)
        self._exclude = (exclude_names, exclude_types, exclude_tags)
        self._keys: dict[Any, str] = {}
        self._counts: dict[str, int] = {}
        self._seq = 0

    def _emit(self, *ops: Op) -> None:
        self._seq += 1
        self.pending.append(RunLogPatch(*ops, seq=self._seq))

    def _selected(self, run: Run) -> bool:
        values = (run.name, run.run_type, run.tags)
        included = all(not f for f in self._include) or any(
            _matches(f, value) for f, value in zip(self._include, values, strict=True)
        )
        return included and not any(
            _matches(f, value) for f, value in zip(self._exclude, values, strict=True)
        )

    def on_start(self, run: Run) -> None:
        """Open the root's state, or a ``/logs`` entry for a selected inner run."""
        if self.root is None:
            self.root = run
            self._emit(
                Op(
                    op="replace",
                    path="",
                    value={
                        "id": str(run.id),
                        "streamed_output": [],
                        "final_output": None,
                        "logs": {},
                        "name": run.name,
                        "type": run.run_type,
                    },
                )
            )
            return
        if not self._selected(run):
            return
        count = self._counts[run.name] = self._counts.get(run.name, 0) + 1
        key = run.name if count == 1 else f"{run.name}:{count}"
        self._keys[run.id] = key
        self._emit(
            Op(
                op="add",
                path=f"/logs/{_escape(key)}",
                value={
                    "id": str(run.id),
                    "name": run.name,
                    "type": run.run_type,
                    "tags": list(run.tags),
                    "metadata": dict(run.metadata),
                    "start_time": run.start_time,
                    "streamed_output": [],
                    "final_output": None,
                    "end_time": None,
                },
            )
        )

    def on_chunk(self, run: Run, chunk: AIMessageChunk) -> None:
        """Add the chunk to its run's ``streamed_output``."""
        if run is self.root:
            if self._with_list:
                self._emit(Op(op="add", path="/streamed_output/-", value=chunk))
        elif (key := self._keys.get(run.id)) is not None:
            self._emit(Op(op="add", path=f"/logs/{_escape(key)}/streamed_output/-", value=chunk))

    def on_end(self, run: Run) -> None:
        """Set the run's ``final_output`` (and an inner run's ``end_time``)."""
        output = _final_output(run)
        if run is self.root:
            self._emit(Op(op="replace", path="/final_output", value=output))
        elif (key := self._keys.get(run.id)) is not None:
            base = f"/logs/{_escape(key)}"
            self._emit(
                Op(op="replace", path=f"{base}/final_output", value=output),
                Op(op="replace", path=f"{base}/end_time", value=run.end_time),
            )

    def on_error(self, run: Run, error: BaseException) -> None:
        """Record the error and the partial output, so nothing that arrived is lost."""
        if run is self.root:
            base = ""
        elif (key := self._keys.get(run.id)) is not None:
            base = f"/logs/{_escape(key)}"
        else:
            return
        ops = [
            Op(op="add", path=f"{base}/error", value=f"{type(error).__name__}: {error}"),
            Op(op="replace", path=f"{base}/final_output", value=_final_output(run)),
        ]
        if base:
            ops.append(Op(op="replace", path=f"{base}/end_time", value=run.end_time))
        self._emit(*ops)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _matches(wanted: Sequence[str] | None, value: str | Sequence[str]) -> bool:
    if not wanted:
        return False
    if isinstance(value, str):
        return value in wanted
    return any(tag in wanted for tag in value)


def _final_output(run: Run) -> Any:
    if run.run_type != "chat_model":
        return to_json(run.step_outputs)
    if not run.items:
        return None
    result = run.final_output
    return {
        "generations": [
            [
                {
                    "text": output.text,
                    "generation_info": generation.generation_info,
                    "message": output,
                }
                for output, generation in zip(run.outputs, result.generations[0], strict=True)
            ]
        ],
        "llm_output": result.llm_output,
        "run": None,
    }


async def stream_log(
    tracker: LogTracker, chunks: AsyncGenerator[AIMessageChunk, None], *, diff: bool = True
) -> AsyncGenerator[RunLogPatch | RunLog, None]:
    """Yield the tracker's patches while ``chunks`` (the observed run's stream) is consumed.

    With ``diff=False`` yields the accumulated `RunLog` after each patch instead, a new snapshot
    each time (sharing what the patch did not touch). Closing this generator closes ``chunks``.
    """
    pending = tracker.pending
    log = RunLog() if not diff else None
    failure: Exception | None = None
    try:
        async with aclosing(chunks):
            async for _ in chunks:
                while pending:
                    patch = pending.popleft()
                    if log is None:
                        yield patch
                    else:
                        log = log + patch
                        yield log
    except Exception as exc:
        failure = exc  # its patch, with the partial output, is queued: hand it out first
    while pending:
        patch = pending.popleft()
        if log is None:
            yield patch
        else:
            log = log + patch
            yield log
    if failure is not None:
        raise failure
