"""langchain-core's contender: a `BaseChatModel` streaming the same chunks as `_models.Streamer`.

Imported only inside the bench environment, where langchain-core is installed; the project's own
environment (and so mypy there) does not have it, hence the ignores on the import and the base.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

# langchain-core is a peer installed only in the bench environment (never a project dependency).
from langchain_core.language_models.chat_models import (  # type: ignore[import-not-found, unused-ignore]
    BaseChatModel,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.messages import AIMessageChunk  # type: ignore[import-not-found, unused-ignore]
from langchain_core.outputs import (  # type: ignore[import-not-found, unused-ignore]
    ChatGenerationChunk,
)

from ._models import PIECES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


class LangChainStreamer(BaseChatModel):  # type: ignore[misc, unused-ignore]  # base is Any without langchain
    """Yields ``n`` chunks from ``_astream`` (and its hand-written sync twin ``_stream``).

    ``streaming=True`` makes langchain's ``ainvoke`` merge ``_astream`` as chatstream's does,
    instead of running ``_generate`` on a thread; ``_stream`` is what its sync ``stream`` calls.
    """

    n: int = 1000
    streaming: bool = True

    @property
    def _llm_type(self) -> str:
        return "bench-streamer"

    def _stream(
        self, messages: list[Any], stop: list[str] | None = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[Any]:
        for i in range(self.n):
            yield ChatGenerationChunk(message=AIMessageChunk(content=PIECES[i % len(PIECES)]))

    async def _astream(
        self, messages: list[Any], stop: list[str] | None = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[Any]:
        for i in range(self.n):
            yield ChatGenerationChunk(message=AIMessageChunk(content=PIECES[i % len(PIECES)]))

    def _generate(
        self, messages: list[Any], stop: list[str] | None = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        return generate_from_stream(self._stream(messages, stop))

    async def _agenerate(
        self, messages: list[Any], stop: list[str] | None = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        return await agenerate_from_stream(self._astream(messages, stop))


def quiet_deprecations() -> None:
    """Hide langchain's deprecation warning for ``astream_log``: it is called on purpose."""
    # Importing langchain_core (done above) installs an "always show" filter: this one wins.
    warnings.filterwarnings("ignore", message=r".*astream_log.*", category=DeprecationWarning)
