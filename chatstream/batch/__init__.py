"""Provider Batch APIs, durable: many requests at half the price, answered within 24 hours.

`submit` sends inputs as an OpenAI Batch (a `ChatOpenAI`) or an Anthropic Message Batch (a
`ChatAnthropic`), split over several provider jobs when they exceed one job's limits. A SQLite
manifest records every job and row, so `open` picks the batch up again in another process,
after a crash, without submitting anything twice; `BatchJob.collect` yields the same
`chatstream.RowResult` records as ``model.amap``.

Example::

    import chatstream.batch

    job = await chatstream.batch.submit(model, prompts, manifest="batch.db")
    ...  # later, perhaps in another process:
    job = await chatstream.batch.open("batch.db")
    await job.wait(interval=60)
    async for row in job.collect():
        print(row.index, row.ok, row.message.text if row.message else row.error)
"""

from ._job import BatchJob as BatchJob
from ._job import open as open
from ._job import submit as submit
from ._split import Limits as Limits
from ._status import BatchStatus as BatchStatus
from ._status import JobStatus as JobStatus

__all__ = ["BatchJob", "BatchStatus", "JobStatus", "Limits", "open", "submit"]
