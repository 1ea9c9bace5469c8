"""What `BatchJob.poll` reports: each provider job's status and the row counts, summed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

__all__ = ["BatchStatus", "JobStatus"]


@final
@dataclass(frozen=True, slots=True)
class JobStatus:
    """One provider job (a batch of the provider's Batch API) as last seen.

    Counts are the provider's, normalised: rows an ended job never ran count as expired (or
    canceled), not as processing.
    """

    index: int
    """The job's position in the batch (jobs hold consecutive rows)."""
    batch_id: str | None
    """The provider's batch id; ``None`` while the job is not submitted."""
    status: str
    """The provider's status word (``in_progress``, ``completed``, ``ended``, ...), or
    ``planned``/``uploaded`` before the provider has the job."""
    is_ended: bool
    """No row of the job will change any more (completed, failed, expired or canceled)."""
    rows: int
    """Rows in the job."""
    succeeded: int = 0
    """Rows answered."""
    errored: int = 0
    """Rows that failed."""
    expired: int = 0
    """Rows the provider did not run before the completion window closed."""
    canceled: int = 0
    """Rows not run because the job was canceled."""

    @property
    def processing(self) -> int:
        """Rows without an outcome yet."""
        return max(self.rows - self.succeeded - self.errored - self.expired - self.canceled, 0)


@final
@dataclass(frozen=True, slots=True)
class BatchStatus:
    """Every job of a batch, and their counts summed."""

    jobs: tuple[JobStatus, ...]
    """The jobs, in order."""

    @property
    def is_done(self) -> bool:
        """Whether every job has ended: `BatchJob.collect` then yields every row."""
        return all(job.is_ended for job in self.jobs)

    @property
    def rows(self) -> int:
        """Rows in the batch."""
        return sum(job.rows for job in self.jobs)

    @property
    def succeeded(self) -> int:
        """Rows answered, over every job."""
        return sum(job.succeeded for job in self.jobs)

    @property
    def errored(self) -> int:
        """Rows that failed, over every job."""
        return sum(job.errored for job in self.jobs)

    @property
    def expired(self) -> int:
        """Rows that expired, over every job."""
        return sum(job.expired for job in self.jobs)

    @property
    def canceled(self) -> int:
        """Rows canceled, over every job."""
        return sum(job.canceled for job in self.jobs)

    @property
    def processing(self) -> int:
        """Rows without an outcome yet, over every job."""
        return sum(job.processing for job in self.jobs)
