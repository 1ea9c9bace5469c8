"""`serve_in_thread`: run a local protocol server on its own event loop, for sync tests."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from anyio.from_thread import start_blocking_portal

if TYPE_CHECKING:
    from collections.abc import Iterator
    from contextlib import AbstractAsyncContextManager

__all__ = ["serve_in_thread"]

ServerT = TypeVar("ServerT")


@contextmanager
def serve_in_thread(server: AbstractAsyncContextManager[ServerT]) -> Iterator[ServerT]:
    """Run ``server`` in a background thread with its own event loop while the block runs.

    This lets code without an event loop (plain pytest functions, unittest, scripts) talk to a
    local protocol server over a real socket. The block gets what ``async with server`` gives,
    so ``base_url``, ``requests``, ``script()`` and the counters keep their types. On exit, also
    when the block raises, the server stops (open connections are closed) and the thread is
    joined before the exception propagates.

    Read the server's attributes freely from the block; call `script` only while no request
    is in flight, since the server thread reads the script between requests. The async
    ``wait_for_*`` methods belong to the server's loop and cannot be awaited from the block.

    Example:
        >>> from chatstream.providers.openai import ChatOpenAI
        >>> from chatstream.testing import OpenAIServer, ScriptedReply, serve_in_thread
        >>> with serve_in_thread(OpenAIServer([ScriptedReply.from_text("Hello!")])) as server:
        ...     model = ChatOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        ...     print(model.invoke("hi").content)
        ...     print(len(server.requests))
        Hello!
        1

    Args:
        server: A server that is not running yet, such as `OpenAIServer`, `AnthropicServer` or
            `OllamaServer` (any async context manager works).

    Yields:
        The running server, as its ``__aenter__`` returned it.

    Raises:
        OSError: The server could not bind its port; any other error raised while the server
            starts is likewise re-raised here, unchanged, after the thread was joined.
    """
    # A recognisable name for thread dumps and leak checks.
    name = f"chatstream-testing-{type(server).__name__}"
    # The servers are aiohttp apps, so the loop is asyncio's whatever the caller uses.
    with (
        start_blocking_portal("asyncio", name=name) as portal,
        portal.wrap_async_context_manager(server) as running,
    ):
        yield running
