"""What the provider test modules share: the model side of a harness, a raw server, one answer."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from chatstream.messages import AIMessage, AIMessageChunk, merge_chunks
from chatstream.providers.anthropic import ChatAnthropic
from chatstream.providers.ollama import ChatOllama
from chatstream.providers.openai import ChatOpenAI, Timeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from chatstream.model import BaseChatModel
    from chatstream.testing._base import LocalServer
    from chatstream.transport.http import PoolStats

HTTPModel = ChatOpenAI | ChatAnthropic | ChatOllama


class ModelHarness:
    """The `ProviderHarness` methods that differ between providers only by the model class."""

    model_class: ClassVar[type[HTTPModel]]

    def model(
        self,
        base_url: str,
        api_key: str,
        *,
        max_retries: int = 0,
        idle_timeout: float | None = None,
        max_connections: int = 100,
    ) -> BaseChatModel:
        return self.model_class(
            base_url=base_url,
            api_key=api_key,
            max_retries=max_retries,
            timeout=Timeout(connect=5, idle=idle_timeout),
            max_connections=max_connections,
        )

    def pool_stats(self, model: BaseChatModel) -> PoolStats:
        assert isinstance(model, self.model_class)
        return model.pool_stats()


async def stream_answer(
    server: LocalServer, model_class: type[HTTPModel], prompt: Any, **settings: Any
) -> tuple[AIMessage, list[AIMessageChunk]]:
    """Start ``server``, stream one answer from it: the merged message and the chunks."""
    async with server:
        async with model_class(base_url=server.base_url, **settings) as model:
            chunks = [chunk async for chunk in model.astream(prompt)]
    return merge_chunks(chunks).to_message(), chunks


@asynccontextmanager
async def serve_raw(
    path: str, content_type: str, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A bare server answering POST ``path`` with whatever body the test queues in the list."""
    bodies: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        body = bodies.pop(0)
        kind = "application/json" if body.startswith(b"{") and "json" not in content_type else None
        response = web.Response(body=body, content_type=kind or content_type)
        response.headers.update(headers or {})
        return response

    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", bodies
    finally:
        await runner.cleanup()
