"""What the local Batch API servers share: their knobs, creating a batch, and pacing its rows.

`chatstream.testing.openai_batch_server.OpenAIBatchServer` and
`chatstream.testing.anthropic_batch_server.AnthropicBatchServer` build on it; each keeps its
own endpoints, objects and error shapes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import anyio
from aiohttp import web

from chatstream._compat import TypedDict, Unpack

from ._base import LocalServer

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from ._script import ScriptedReply

__all__ = ["BatchOptions", "BatchServer", "json_response"]

B = TypeVar("B")


class BatchOptions(TypedDict, total=False):
    """How a local Batch API server behaves (see `BatchServer`)."""

    rows_per_poll: int | None
    failing: Collection[str]
    expire_after: int | None
    max_requests: int
    max_bytes: int
    stall_create: int | None


class BatchServer(LocalServer, Generic[B]):
    """A local Batch API: batches advance one step per poll, so no test waits on a clock.

    Documented base of the two Batch API servers, not meant for other use.

    Args:
        replies: Answers, used in turn across every request processed; default a greeting.
        api_key: When set, requests need it, the provider's way.
        rows_per_poll: Requests processed per poll while in progress (``None``: all at once).
        failing: Custom ids whose requests fail.
        expire_after: Expire each batch once it has processed this many requests.
        max_requests: Most requests per batch (default: the provider's limit).
        max_bytes: Most bytes of a batch's input (default: the provider's limit).
        stall_create: Stall the response of this batch creation (1 for the first): the batch
            exists, but its creator never hears of it (a client killed at that moment).

    Attributes:
        batches_created: How many batches were created: what a resumed client must not
            repeat.
    """

    default_max_requests: ClassVar[int]
    default_max_bytes: ClassVar[int]

    def __init__(
        self,
        replies: Sequence[ScriptedReply] = (),
        *,
        api_key: str | None = None,
        **options: Unpack[BatchOptions],
    ) -> None:
        super().__init__(replies, api_key=api_key)
        self.rows_per_poll = options.get("rows_per_poll")
        self.failing = frozenset(options.get("failing", ()))
        self.expire_after = options.get("expire_after")
        self.max_requests = options.get("max_requests") or self.default_max_requests
        self.max_bytes = options.get("max_bytes") or self.default_max_bytes
        self.stall_create = options.get("stall_create")
        self.batches_created = 0
        self._batches: dict[str, B] = {}

    async def _created(self, batch_id: str, batch: B, obj: dict[str, Any]) -> web.Response:
        """Keep a new batch and answer with its object (or never, when asked to stall)."""
        self._batches[batch_id] = batch
        self.batches_created += 1
        self._notify()
        if self.batches_created == self.stall_create:
            await anyio.sleep_forever()  # until the client leaves (aiohttp cancels us)
        return json_response(obj)

    def _this_poll(self, done: int, total: int) -> range:
        """The rows one poll processes, after ``done`` of ``total``."""
        return range(done, min(total, done + (self.rows_per_poll or total)))

    def _expires_at(self, done: int) -> bool:
        """Whether a batch that has processed ``done`` rows expires now."""
        return self.expire_after is not None and done >= self.expire_after


def json_response(value: Any) -> web.Response:
    """``value`` as a JSON response."""
    return web.Response(text=json.dumps(value), content_type="application/json")
