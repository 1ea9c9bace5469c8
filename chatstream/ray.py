"""Ray Data: `ChatMapper` answers a column of prompts inside ``Dataset.map_batches``.

`read_pending` and `missing_ids` make a parquet-to-parquet job resumable: rows whose answers
were already written are not sent again. Needs the ``chatstream[ray]`` extra; ``import
chatstream`` never imports this module, nor Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, final

import anyio

from ._config import check_config
from .errors import InvalidInputError
from .settings import resolve

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("chatstream.ray needs Ray Data: pip install 'chatstream[ray]'") from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from ray.data import Dataset

    from .model import BaseChatModel, RunConfig
    from .outputs import RowResult

__all__ = ["RESULT_COLUMNS", "ChatMapper", "missing_ids", "read_pending"]

RESULT_COLUMNS: tuple[str, ...] = (
    "text",
    "error",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "latency_s",
    "first_token_s",
    "attempts",
    "run_id",
)
"""The columns `ChatMapper` adds after the id column, in order."""

# Fixed types, so that a batch where every call failed (all-null text) still writes the same
# schema as the others: files whose schemas differ cannot be read back as one dataset.
_RESULT_TYPES = (
    pa.string(),
    pa.string(),
    pa.string(),
    pa.int64(),
    pa.int64(),
    pa.int64(),
    pa.float64(),
    pa.float64(),
    pa.int64(),
    pa.string(),
)


@final
class ChatMapper:
    """Answer each row's prompt with a chat model: a callable class for ``map_batches``.

    Ray builds one mapper per actor, from the model it pickled there (models travel: their
    connections are rebuilt lazily in the actor). Each batch runs through `BaseChatModel.amap`;
    at most ``max_concurrency`` calls are in flight per actor, across every batch Ray runs in
    it at once, so size actors times ``max_concurrency`` to the provider's rate
    limit. The actors do no CPU work of note: give them a fraction of a CPU, so that a small
    machine is not starved by actors that wait on the network::

        answers = ds.map_batches(
            ChatMapper,
            fn_constructor_kwargs={"model": model, "max_concurrency": 32},
            compute=ray.data.ActorPoolStrategy(size=4),  # actors
            num_cpus=0.25,
            batch_size=256,
            batch_format="pyarrow",
        )

    A failed call never fails the batch: its row has ``error`` set (``"RateLimitError:
    ..."``) and the rest of the row says what is known (the partial ``text``, if any).
    Each output row holds the input's ``id_column``, then `RESULT_COLUMNS`: ``text``,
    ``error``, ``finish_reason``, ``input_tokens``, ``output_tokens``, ``total_tokens``,
    ``latency_s``, ``first_token_s`` (seconds to the first chunk), ``attempts`` (1 plus
    retries) and ``run_id``, then the ``keep_columns``; rows keep the batch's order.

    Args:
        model: The model to call. The mapper works on its own copy and closes it when Ray
            shuts the actor down.
        prompt_column: The column of inputs: strings, or lists of ``{"role", "content"}``
            messages (any `LanguageModelInput`).
        id_column: The column that identifies a row, copied to the output (which resuming
            needs); ``None`` for none.
        keep_columns: Other input columns to copy to the output.
        max_concurrency: How many calls one actor keeps in flight.
        stop: Stop sequences for every call.
        config: A `RunConfig` for every call (tags, metadata, callbacks).
        settings: Per-call settings for every call (``{"temperature": 0}``), checked here.

    Raises:
        InvalidInputError: A bad argument (named by its ``where``); an unknown setting raises
            `InvalidParameterError` before any call is sent.
    """

    def __init__(
        self,
        model: BaseChatModel,
        *,
        prompt_column: str = "prompt",
        id_column: str | None = "id",
        keep_columns: Sequence[str] = (),
        max_concurrency: int = 32,
        stop: list[str] | str | None = None,
        config: RunConfig | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise InvalidInputError("expected an int", where="max_concurrency")
        if max_concurrency < 1:
            raise InvalidInputError("must be at least 1", where="max_concurrency")
        keep = list(keep_columns)
        clashes = sorted({*keep, id_column or ""} & set(RESULT_COLUMNS))
        if clashes:
            raise InvalidInputError(
                f"{clashes} would collide with the result columns", where="keep_columns"
            )
        self._model = copy.deepcopy(model)
        self._prompt_column = prompt_column
        self._id_column = id_column
        self._keep_columns = keep
        self._max_concurrency = max_concurrency
        self._stop = stop
        self._config = config
        self._settings = dict(settings or {})
        # Fail here, once per actor, rather than in a million rows: amap would turn a bad
        # setting into an error row per input.
        resolve(self._model, self._model.settings_spec, stop, self._settings)
        if config:
            check_config(config)
        self._slots: anyio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, batch: object) -> AsyncIterator[pa.Table]:
        """Answer one batch (a ``pyarrow.Table``, pandas ``DataFrame`` or dict of arrays).

        An async generator rather than a coroutine, which older Ray Data cannot run (2.44
        cannot; async generators work since 2.9). It yields once, after the batch's calls
        are all done, so that no call is running while the caller holds the table::

            async for answers in mapper(batch):
                ...

        Yields:
            A ``pyarrow.Table`` with one row per input row, in the same order.
        """
        table = _as_table(batch)
        for where, name in self._columns():
            if name not in table.column_names:
                raise InvalidInputError(
                    f"the batch has no column {name!r} (it has {table.column_names})",
                    where=where,
                )
        if self._slots is None:
            # Created here, in the actor's event loop; shared by the batches Ray runs at once.
            self._slots = anyio.Semaphore(self._max_concurrency)
            self._loop = asyncio.get_running_loop()
        rows = await self._answer(table.column(self._prompt_column).to_pylist(), self._slots)
        names: list[str] = []
        columns: list[Any] = []
        if self._id_column is not None:
            names.append(self._id_column)
            columns.append(table.column(self._id_column))
        names.extend(RESULT_COLUMNS)
        columns.extend(_result_columns(rows))
        for name in self._keep_columns:
            names.append(name)
            columns.append(table.column(name))
        yield pa.Table.from_arrays(columns, names=names)

    async def _answer(self, prompts: list[Any], slots: anyio.Semaphore) -> list[RowResult]:
        rows: list[RowResult | None] = [None] * len(prompts)
        held = 0

        async def gated() -> Any:
            # amap takes an input only when a call may start: waiting for an actor-wide slot
            # here bounds the calls of every batch in flight together, not each batch alone.
            nonlocal held
            for prompt in prompts:
                await slots.acquire()
                held += 1
                yield prompt

        try:
            async with self._model.amap(
                gated(),
                max_concurrency=self._max_concurrency,
                stop=self._stop,
                config=self._config,
                **self._settings,
            ) as results:
                async for row in results:
                    held -= 1
                    slots.release()
                    rows[row.index] = row
        finally:
            for _ in range(held):  # the calls cancelled with the batch give their slots back
                slots.release()
        assert all(row is not None for row in rows)  # amap yields one row per input
        return rows  # type: ignore[return-value]  # every None was replaced, as just checked

    async def aclose(self) -> None:
        """Close the mapper's model (Ray does it by deleting the mapper); idempotent."""
        await self._model.aclose()

    def _columns(self) -> list[tuple[str, str]]:
        named = [("prompt_column", self._prompt_column)]
        if self._id_column is not None:
            named.append(("id_column", self._id_column))
        return named + [("keep_columns", name) for name in self._keep_columns]

    def __del__(self) -> None:
        # Ray deletes the mapper when it shuts the actor down gracefully: close the model's
        # connections on the loop that opened them (best effort: the process is ending).
        loop = getattr(self, "_loop", None)
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return  # called on an event loop: waiting here could block the loop we need
        with contextlib.suppress(Exception):  # nothing more can be done while shutting down
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=5)


def _as_table(batch: object) -> pa.Table:
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, Mapping):  # batch_format="numpy" (Ray's default)
        return pa.table({name: list(values) for name, values in batch.items()})
    try:
        return pa.Table.from_pandas(batch, preserve_index=False)
    except TypeError as exc:
        raise InvalidInputError(
            f"expected a pyarrow Table, pandas DataFrame or dict of arrays, got "
            f"{type(batch).__name__}",
            where="batch",
        ) from exc


def _result_columns(rows: list[RowResult]) -> list[pa.Array]:
    values: list[list[Any]] = [[] for _ in RESULT_COLUMNS]
    for row in rows:
        message, usage = row.message, row.usage
        start, first = row.start_time, row.first_token_time
        cells = (
            message.text if message is not None else None,
            None if row.error is None else f"{type(row.error).__name__}: {row.error}",
            message.response_metadata.get("finish_reason") if message is not None else None,
            usage["input_tokens"] if usage else None,
            usage["output_tokens"] if usage else None,
            usage["total_tokens"] if usage else None,
            row.latency,
            first - start if first is not None and start is not None else None,
            row.attempts,
            str(row.run_id) if row.run_id is not None else None,
        )
        for column, cell in zip(values, cells, strict=True):
            column.append(cell)
    return [pa.array(column, type=kind) for column, kind in zip(values, _RESULT_TYPES, strict=True)]


# -- resuming ----------------------------------------------------------------------------------


def read_pending(
    input_path: str | list[str],
    output_path: str,
    *,
    id_column: str = "id",
    retry_failed: bool = False,
    filesystem: pafs.FileSystem | None = None,
    **read_parquet_args: Any,
) -> Dataset:
    """Read the input rows that have no answer under ``output_path`` yet.

    The first run reads every row; after a crash, only those whose answers were not written.
    Ray writes each output block to its own file, so a crash loses only the rows that were
    in flight. A file the crash cut off (no parquet footer) is deleted, and its rows are
    pending again. Example::

        pending = read_pending("prompts/", "answers/", id_column="id")
        pending.map_batches(ChatMapper, ...).write_parquet("answers/")

    Args:
        input_path: The input parquet file(s) or directory.
        output_path: Where the answers are written (it need not exist yet).
        id_column: The column that identifies a row in both.
        retry_failed: Also send the rows that were answered only with an error. Their old
            error rows stay, so the output then has two rows for such an id: keep the one
            whose ``error`` is null.
        filesystem: The pyarrow filesystem of both paths (default: inferred from them).
        **read_parquet_args: Passed to ``ray.data.read_parquet`` (``override_num_blocks``...).

    Returns:
        The pending rows, as a lazy Ray dataset.
    """
    import ray.data

    done = _written_ids(output_path, id_column, filesystem, retry_failed=retry_failed)
    dataset = ray.data.read_parquet(input_path, filesystem=filesystem, **read_parquet_args)
    if len(done) == 0:
        return dataset
    # A plain batch function (not an expression filter), so it works on every Ray the extra
    # allows; Ray stores the function with its ids once, not once per task.
    return dataset.map_batches(
        functools.partial(_drop_ids, column=id_column, ids=done), batch_format="pyarrow"
    )


def missing_ids(
    input_path: str | list[str],
    output_path: str,
    *,
    id_column: str = "id",
    retry_failed: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> pa.Array:
    """The ids in the input that have no answer in the output: an anti-join of the id columns.

    Reads only the id columns, with pyarrow (no Ray): use it to report progress or check that
    a job finished (an empty result). Arguments are as for `read_pending`, which deletes
    the files a crash cut off; this only skips them.

    Returns:
        The missing ids, in input order.
    """
    import pyarrow.dataset as pads

    done = _written_ids(output_path, id_column, filesystem, retry_failed=retry_failed, remove=False)
    if isinstance(input_path, str):
        fs, where = _resolve(input_path, filesystem)
        source = pads.dataset(where, format="parquet", filesystem=fs)
    else:  # a list of files
        fs = _resolve(input_path[0], filesystem)[0]
        files = [_resolve(path, fs)[1] for path in input_path]
        source = pads.dataset(files, format="parquet", filesystem=fs)
    ids = source.to_table(columns=[id_column]).column(id_column).combine_chunks()
    if len(done) == 0:
        return ids
    return _drop_ids(pa.table({id_column: ids}), column=id_column, ids=done).column(0)


def _drop_ids(batch: pa.Table, *, column: str, ids: pa.Array) -> pa.Table:
    return batch.filter(pc.invert(pc.is_in(batch.column(column), value_set=ids)))


def _written_ids(
    output_path: str,
    id_column: str,
    filesystem: pafs.FileSystem | None,
    *,
    retry_failed: bool,
    remove: bool = True,
) -> pa.Array:
    fs, root = _resolve(output_path, filesystem)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        return pa.array([])
    files = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    columns = [id_column, "error"] if retry_failed else [id_column]
    chunks: list[pa.Array] = []
    for info in files:
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
            continue
        try:
            table = pq.read_table(info.path, columns=columns, filesystem=fs)
        except pa.ArrowInvalid:
            # No footer: the write a crash cut off. Only parse errors, never I/O errors, are
            # taken for that: deleting a complete file would only cost resending its rows.
            if remove:
                fs.delete_file(info.path)
            continue
        if retry_failed:
            table = table.filter(pc.is_null(table.column("error")))
        chunks.extend(table.column(id_column).chunks)
    if not chunks:
        return pa.array([])
    return pa.chunked_array(chunks).combine_chunks()


def _resolve(path: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    if filesystem is not None:
        return filesystem, path
    if "://" in path:
        resolved: tuple[pafs.FileSystem, str] = pafs.FileSystem.from_uri(path)
        return resolved
    return pafs.LocalFileSystem(), os.path.abspath(path)
