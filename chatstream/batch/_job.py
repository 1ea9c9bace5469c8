"""`submit` a batch, `open` one again from its manifest, and the `BatchJob` both return."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterable, Iterable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, final

import anyio

from ..errors import InvalidInputError, UnsupportedFeatureError
from ..inputs import to_messages
from ..settings import resolve
from ._manifest import Manifest, RowRecord
from ._split import Limits, split
from ._status import BatchStatus

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator
    from pathlib import Path
    from types import TracebackType

    from .._compat import Self
    from ..inputs import LanguageModelInput
    from ..model import BaseChatModel
    from ..outputs import RowResult
    from ._backend import Backend
    from ._manifest import JobRecord

__all__ = ["BatchJob", "open", "submit"]

_STORE_PAGE = 1000
"""Result lines recorded per manifest transaction while a job's results download."""


async def submit(
    model: BaseChatModel,
    inputs: Iterable[LanguageModelInput],
    *,
    manifest: str | os.PathLike[str],
    ids: Iterable[str] | None = None,
    limits: Limits | None = None,
    stop: list[str] | str | None = None,
    **params: Any,
) -> BatchJob:
    """Send every input to the provider's Batch API, recording the batch in ``manifest``.

    The model decides the provider: a `ChatOpenAI` uses OpenAI's Batch API (on its
    ``base_url``), a `ChatAnthropic` Anthropic's Message Batches. Each input becomes the
    request the model would send for it (its settings, ``stop`` and ``params`` over them, as
    for ``ainvoke``), not streamed. Inputs past the limits of one provider job are split over
    several jobs. Everything is written to the manifest before the first request goes out, and
    each job's provider id as soon as it is known: if this process dies, `open` the manifest
    and carry on; no job is submitted twice.

    Example::

        job = await chatstream.batch.submit(model, prompts, manifest="batch.db")
        status = await job.wait(interval=60)
        async for row in job.collect():
            print(row.index, row.ok, row.message and row.message.text)

    Args:
        model: A `ChatOpenAI` or `ChatAnthropic`.
        inputs: What to send, one request each (anything ``ainvoke`` takes).
        manifest: A new file to record the batch in (an existing one is refused).
        ids: A unique id per input (its ``custom_id``); default ``row-<index>``.
        limits: Smaller jobs than the provider's limits (requests and bytes per job; a
            value above the provider's limit counts as that limit).
        stop: Stop sequences for every request.
        **params: Per-call settings for every request (``temperature=0``, ...).

    Raises:
        UnsupportedFeatureError: The model's provider has no Batch API supported here.
        InvalidInputError: No inputs, an input that cannot become messages, ids that are
            missing, repeated or refused by the provider, a request larger than a job may
            hold, or a manifest file that exists already.
        InvalidParameterError: A parameter the model does not have.
        ProviderError: The provider refused an upload or a job (the manifest keeps what was
            done; `open` it to retry).
    """
    backend = _backend(model)
    settings = resolve(model, model.settings_spec, stop, params)
    if isinstance(inputs, (str, AsyncIterable)) or not isinstance(inputs, Iterable):
        raise InvalidInputError(
            f"expected an iterable of inputs, got {type(inputs).__name__}", where="inputs"
        )
    rows: list[RowRecord] = []
    sizes: list[int] = []
    given = None if ids is None else iter(ids)
    seen: set[str] = set()
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        custom_id = f"row-{index}" if given is None else next(given, None)
        if custom_id is None:
            raise InvalidInputError(
                f"no id for inputs[{index}]: fewer ids than inputs", where="ids"
            )
        backend.check_id(custom_id, f"ids[{index}]")
        if custom_id in seen:
            raise InvalidInputError(f"the id {custom_id!r} is repeated", where=f"ids[{index}]")
        seen.add(custom_id)
        request = backend.request(to_messages(item, where=where), settings)
        sizes.append(len(backend.encode(custom_id, request)))
        rows.append(RowRecord(custom_id, str(uuid.uuid4()), json.dumps(request)))
    if not rows:
        raise InvalidInputError("a batch needs at least one input", where="inputs")
    if given is not None and next(given, None) is not None:
        raise InvalidInputError("more ids than inputs", where="ids")
    most = backend.limits
    if limits is not None:  # never above the provider's own limits
        most = Limits(
            min(limits.max_requests, most.max_requests), min(limits.max_bytes, most.max_bytes)
        )
    parts = split(sizes, most, overhead=backend.overhead)
    store = await Manifest.create(manifest, backend.meta(), rows, parts)
    job = BatchJob(store, backend)
    try:
        await job.submit_pending()
    except BaseException:
        await job.aclose()
        raise
    return job


async def open(  # `chatstream.batch.open(manifest)`: named for what it opens
    manifest: str | os.PathLike[str], model: BaseChatModel | None = None
) -> BatchJob:
    """Open the batch a manifest holds, to poll it, collect it, or finish submitting it.

    Args:
        manifest: The file `submit` wrote.
        model: The model to talk to the provider with (its key, headers, time limits).
            Default: a `ChatOpenAI` or `ChatAnthropic` for the recorded server, whose key
            comes from the provider's environment variable.

    Raises:
        InvalidInputError: No manifest there, or ``model`` is for another provider or server.
    """
    store = await Manifest.load(manifest)
    try:
        backend = _backend(model if model is not None else _model_for(store.meta))
        recorded = store.meta.get("base_url")
        if backend.meta()["provider"] != store.meta.get("provider"):
            raise InvalidInputError(
                f"the batch was submitted to {store.meta.get('provider')}, not "
                f"{backend.meta()['provider']}",
                where="model",
            )
        if backend.meta()["base_url"] != recorded:
            raise InvalidInputError(
                f"the batch lives on {recorded}, not {backend.meta()['base_url']}", where="model"
            )
    except BaseException:
        await store.aclose()
        raise
    return BatchJob(store, backend)


@final
class BatchJob:
    """A batch submitted to a provider's Batch API, as its manifest records it.

    Made by `submit` and `open`; close it with `aclose` (or ``async with``). It holds the
    manifest file and an HTTP client, nothing that runs in the background: the batch goes
    on at the provider whether or not a `BatchJob` is open.
    """

    def __init__(self, manifest: Manifest, backend: Backend) -> None:
        self._manifest = manifest
        self._backend = backend
        self._closed = False

    @property
    def manifest(self) -> Path:
        """The manifest file."""
        return self._manifest.path

    @property
    def provider(self) -> str:
        """The provider the batch went to (``"openai"`` or ``"anthropic"``)."""
        return self._backend.provider

    async def custom_ids(self) -> list[str]:
        """Each row's ``custom_id``, by row index (the ``ids`` given to `submit`)."""
        return await self._manifest.custom_ids()

    async def submit_pending(self) -> None:
        """Submit each job that is not submitted yet (after a crash), resuming its steps."""
        for job in await self._manifest.jobs():
            if job.state in ("planned", "uploaded"):
                await self._backend.start(self._manifest, job)

    async def poll(self) -> BatchStatus:
        """Ask the provider once about each job that has not ended, and record what it says.

        Jobs a crash left unsubmitted are submitted first (see `submit_pending`).
        """
        await self.submit_pending()
        statuses = []
        for job in await self._manifest.jobs():
            if job.state == "submitted":
                status, ended, info = await self._backend.refresh(job)
                job = await self._manifest.update(
                    job,
                    state="ended" if ended else "submitted",
                    status=status,
                    info=info,
                    ended_at=time.time() if ended else None,
                )
            statuses.append(self._backend.status(job))
        return BatchStatus(tuple(statuses))

    async def status(self) -> BatchStatus:
        """The status the manifest recorded last, without asking the provider."""
        return BatchStatus(tuple(self._backend.status(job) for job in await self._manifest.jobs()))

    async def wait(self, *, interval: float = 60.0) -> BatchStatus:
        """`poll` every ``interval`` seconds until every job has ended.

        Bound it with ``anyio.fail_after`` if it must not wait for the whole completion window.
        """
        while True:
            status = await self.poll()
            if status.is_done:
                return status
            await anyio.sleep(interval)

    async def collect(self) -> AsyncIterator[RowResult]:
        """Yield a `RowResult` per row of every ended job, in input order.

        Results download into the manifest first, once per job, so collecting again (or
        after a crash) reads them from there. Rows of jobs still running are not yielded:
        `wait` first for every row. A row the provider failed, expired or canceled has its
        ``error`` (a `ProviderError` whose ``code`` is ``"expired"`` or ``"canceled"`` for
        those two).
        """
        ended = []
        for job in await self._manifest.jobs():
            if job.state == "ended":
                job = await self._download(job)
            if job.state == "collected":
                ended.append(job)
        by_index = {job.index: job for job in ended}
        after = -1
        while rows := await self._manifest.rows(list(by_index), after):
            for stored in rows:
                yield self._backend.row(stored, by_index[stored.job])
            after = rows[-1].index

    async def cancel(self) -> None:
        """Ask the provider to cancel every submitted job that has not ended.

        Rows already answered keep their answers; the others end up canceled. `poll`
        until the jobs have ended, then `collect`.
        """
        for job in await self._manifest.jobs():
            if job.state == "submitted":
                await self._backend.cancel(job)

    async def aclose(self) -> None:
        """Close the manifest and the HTTP client. Idempotent; the batch itself goes on."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            try:
                await self._backend.aclose()
            finally:
                await self._manifest.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _download(self, job: JobRecord) -> JobRecord:
        page: list[tuple[str, dict[str, Any]]] = []
        results = self._backend.results(job)
        async with aclosing(results):
            async for item in results:
                page.append(item)
                if len(page) >= _STORE_PAGE:
                    await self._manifest.store_results(page)
                    page = []
        await self._manifest.store_results(page)
        return await self._manifest.update(job, state="collected")


def _backend(model: BaseChatModel) -> Backend:
    # Imported here: a provider module is loaded only for a batch that uses it.
    from ..providers.anthropic import ChatAnthropic
    from ..providers.openai import ChatOpenAI

    if isinstance(model, ChatOpenAI):
        from ._openai import OpenAIBatches

        return OpenAIBatches(model)
    if isinstance(model, ChatAnthropic):
        from ._anthropic import AnthropicBatches

        return AnthropicBatches(model)
    raise UnsupportedFeatureError(
        f"{type(model).__name__} has no Batch API: use ChatOpenAI or ChatAnthropic",
        where="model",
    )


def _model_for(meta: dict[str, str]) -> BaseChatModel:
    provider, name, url = meta.get("provider"), meta.get("model"), meta.get("base_url")
    if provider == "openai":
        from ..providers.openai import ChatOpenAI

        return ChatOpenAI(model=name or "gpt-4o-mini", base_url=url)
    if provider == "anthropic":
        from ..providers.anthropic import ChatAnthropic

        return ChatAnthropic(model=name or "claude-sonnet-4-5", base_url=url)
    raise InvalidInputError(
        f"the manifest names an unknown provider {provider!r}", where="manifest"
    )
