"""What a provider's Batch API adapter provides (`Backend`), and the row helpers they share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from ..errors import ProviderError
from ..outputs import RowResult

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from ..messages import AIMessage, BaseMessage, UsageMetadata
    from ._manifest import JobRecord, Manifest, StoredRow
    from ._split import Limits
    from ._status import JobStatus

__all__ = ["Backend", "missing_result", "row_result"]


class Backend(Protocol):
    """One provider's Batch API: how rows are encoded, jobs started and results read."""

    provider: str
    limits: Limits
    """The provider's documented limits of one job."""
    overhead: int
    """Bytes one job costs besides its rows."""

    def meta(self) -> dict[str, str]:
        """What the manifest records to rebuild the model on resume (never a secret)."""
        ...

    def check_id(self, custom_id: str, where: str) -> None:
        """Raise `InvalidInputError` unless the provider accepts ``custom_id``."""
        ...

    def request(self, messages: list[BaseMessage], settings: Mapping[str, Any]) -> dict[str, Any]:
        """The request one row sends (the provider's non-streamed request body)."""
        ...

    def encode(self, custom_id: str, request: Mapping[str, Any]) -> bytes:
        """A row as it goes into the job's upload; its length is what the limits count."""
        ...

    async def start(self, manifest: Manifest, job: JobRecord) -> JobRecord:
        """Hand ``job`` to the provider, recording each step, and return it submitted.

        Picks up where a killed process stopped: a step recorded is never repeated.
        """
        ...

    async def refresh(self, job: JobRecord) -> tuple[str, bool, dict[str, Any]]:
        """The job's status word, whether it ended, and what to record of it."""
        ...

    def status(self, job: JobRecord) -> JobStatus:
        """The job's status as the manifest last recorded it."""
        ...

    def results(self, job: JobRecord) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """Stream an ended job's results as ``(custom_id, the provider's result line)``."""
        ...

    def row(self, stored: StoredRow, job: JobRecord) -> RowResult:
        """The `RowResult` of one row of an ended job, from its stored result."""
        ...

    async def cancel(self, job: JobRecord) -> None:
        """Ask the provider to cancel a submitted job."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client. Idempotent."""
        ...


def row_result(
    stored: StoredRow,
    message: AIMessage | None,
    error: Exception | None,
    usage: UsageMetadata | None,
    times: tuple[float | None, float | None],
) -> RowResult:
    """The `RowResult` of a batch row: the same record `BaseChatModel.amap` yields.

    A batch row has no streaming, so ``first_token_time`` is ``None``; its start and end are
    the job's (the provider reports no per-row times), and it was sent once.
    """
    start, end = times
    return RowResult(
        stored.index,
        message,
        error,
        UUID(stored.run_id),
        usage,
        start,
        None,
        end,
        1,
    )


def missing_result(provider: str, job: JobRecord) -> ProviderError:
    """The error of a row an ended job gave no result for (a job that failed validation)."""
    why = job.info.get("errors") or f"the job ended {job.status!r} without a result for this row"
    # One word per outcome, whichever provider: "canceled" (OpenAI spells it "cancelled").
    code = "canceled" if job.status == "cancelled" else job.status
    return ProviderError(str(why), provider=provider, code=code)
