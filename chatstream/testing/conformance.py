"""The provider conformance suite: one set of pytest tests that every provider runs unchanged.

A provider's test module subclasses `ChatModelConformance` (under a ``Test...`` name) and
defines a ``harness`` fixture returning its `ProviderHarness`; what its wire cannot express is
declared in `Capabilities`, never by editing tests. Needs pytest and anyio's plugin.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, final

import anyio
import pytest

from chatstream.errors import (
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ChatStreamError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ProviderError,
    RateLimitError,
    ServerError,
)
from chatstream.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from chatstream.transport.http import PoolStats

from ._conformance_secrets import HELLO, SecretsConformance
from ._conformance_tools import ToolConformance
from ._script import Faults, ScriptedReply, ScriptedToolCall

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence

    from chatstream.model import BaseChatModel

    from ._base import LocalServer

__all__ = ["Capabilities", "ChatModelConformance", "ProviderHarness", "ReceivedRequest"]

LONG = ScriptedReply(text_chunks=["tick "] * 100)
WEATHER = ScriptedReply(
    tool_calls=[
        ScriptedToolCall(
            id="call_a", name="get_weather", argument_chunks=['{"ci', 'ty": ', '"Paris"}']
        ),
        ScriptedToolCall(id="call_b", name="get_time", argument_chunks=['{"tz": "CET"}']),
    ],
    finish_reason="tool_calls",
)


@dataclass(frozen=True)
class ReceivedRequest:
    """A request the provider's server received, in provider-neutral terms.

    Attributes:
        messages: The conversation as ``{"role", "content"}`` dicts: roles ``system``, ``user``,
            ``assistant``, ``tool``; ``content`` as text; assistant ``tool_calls`` as
            ``[{"id", "name", "args"}]`` with parsed ``args``; tool results with
            ``tool_call_id``. A system prompt sent out of line comes first as a message.
        stream: Whether the request asked for a streamed answer.
        headers: Request headers, lower-case names.
        body: The provider's own request body, for provider-specific checks.
    """

    messages: list[dict[str, Any]]
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    """The tools offered, as ``{"name", "description", "parameters"}``."""
    tool_choice: str | None = None
    """``"auto"``, ``"none"``, ``"required"`` or the forced tool's name; ``None`` if unsent."""
    parallel_tool_calls: bool | None = None
    """``False`` when the request asked for one call at a time."""
    output_format: Any = None
    """The answer's format: ``"json"``, the JSON schema it must follow, or ``None``."""


def _same_id(scripted: str) -> str:
    return scripted


@final
@dataclass(frozen=True)
class Capabilities:
    """What a provider's wire can express; a test that needs more adapts or is skipped, saying so.

    The defaults describe OpenAI's wire, so a harness without ``capabilities`` gets every test.
    """

    request_ids: bool = True
    """The server names every response with a request id header (Ollama sends none)."""
    credential_header: str = "authorization"
    """The request header that carries the API key (Anthropic: ``x-api-key``)."""
    streamed_tool_arguments: bool = True
    """Tool-call arguments stream as text fragments (Ollama sends each call whole)."""
    raw_tool_arguments: bool = True
    """Arguments that are not JSON reach the client as the model wrote them (Ollama's server
    parses them into an object, so a broken one cannot be sent)."""
    tool_call_id: Callable[[str], str] = _same_id
    """The id the server gives a scripted tool call id (Anthropic's server makes ``toolu_`` ids)."""
    tool_choices: frozenset[str] = frozenset({"auto", "none", "required", "named"})
    """The tool choices the API can express (``"named"``: forcing one tool)."""
    parallel_tool_switch: bool = True
    """The API can ask for one tool call at a time."""
    interleaved_tool_arguments: bool = True
    """The server can interleave the argument fragments of parallel calls (OpenAI's can)."""
    structured_methods: frozenset[str] = frozenset({"json_schema", "tool_calling", "json_mode"})
    """The ``with_structured_output`` methods the provider can ask for."""
    rejects_non_object_tool_parameters: bool = True
    """The API refuses tool parameters whose schema is not an object (Ollama takes any)."""


class ProviderHarness(Protocol):
    """What the suite needs from a provider: its server, its model, and its wire, read back.

    A harness may also have a ``capabilities`` attribute (`Capabilities`); without one, every
    capability is assumed.
    """

    @property
    def finish_reasons(self) -> Mapping[str, str]:
        """Raw scripted finish reasons that normalise to ``stop``, ``length``, ``tool_calls``."""
        ...

    def server(
        self, replies: Sequence[ScriptedReply] = (), faults: Faults | None = None, *, api_key: str
    ) -> LocalServer:
        """A not yet started local server for the provider, requiring ``api_key``."""
        ...

    def model(
        self,
        base_url: str,
        api_key: str,
        *,
        max_retries: int = 0,
        idle_timeout: float | None = None,
        max_connections: int = 100,
    ) -> BaseChatModel:
        """The provider's model pointed at ``base_url``."""
        ...

    def received(self, server: LocalServer) -> list[ReceivedRequest]:
        """Every request the server got, in order, in neutral terms."""
        ...

    def pool_stats(self, model: BaseChatModel) -> PoolStats:
        """The model's connection pool on the running loop."""
        ...


def capabilities_of(harness: ProviderHarness) -> Capabilities:
    found = getattr(harness, "capabilities", None)
    return found if isinstance(found, Capabilities) else Capabilities()


API_KEY = "conformance-key"
_SETTLE = 5.0
"""Seconds a test waits for the server to notice something (a bound, not a measurement)."""


async def _until(condition: Any) -> None:
    # Polling: the servers expose no event for every counter (``active_streams``).
    with anyio.fail_after(_SETTLE):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.005)


class ChatModelConformance(ToolConformance, SecretsConformance):
    """The conformance tests; subclass as ``TestXConformance`` and provide ``harness``.

    The tool and structured-output cases come from `ToolConformance`.
    """

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        """Run on asyncio: aiohttp needs it."""
        return "asyncio"  # aiohttp runs on asyncio only

    @asynccontextmanager
    async def running(
        self,
        harness: ProviderHarness,
        replies: Sequence[ScriptedReply] = (HELLO,),
        faults: Faults | None = None,
        *,
        api_key: str = API_KEY,
        **settings: Any,
    ) -> AsyncIterator[tuple[LocalServer, BaseChatModel]]:
        """A started server and a model pointed at it, both closed at the end."""
        async with harness.server(replies, faults, api_key=API_KEY) as server:
            model = harness.model(server.base_url, api_key, **settings)
            async with model:
                yield server, model

    # -- results ----------------------------------------------------------------------------

    async def test_invoke(self, harness: ProviderHarness) -> None:
        """``ainvoke`` returns the merged text, finish reason, usage and an id."""
        async with self.running(harness) as (_, model):
            message = await model.ainvoke("Say hello")
        assert isinstance(message, AIMessage)
        assert message.content == "Hello, world!"
        assert message.response_metadata["finish_reason"] == "stop"
        assert message.usage_metadata is not None
        assert (
            message.usage_metadata["input_tokens"],
            message.usage_metadata["output_tokens"],
        ) == (
            7,
            4,
        )
        assert message.usage_metadata["total_tokens"] == 11
        assert message.id

    async def test_stream_merges_to_the_invoke_result(self, harness: ProviderHarness) -> None:
        """Streamed chunks arrive piece by piece and merge into what ``ainvoke`` returns."""
        async with self.running(harness) as (_, model):
            chunks = [chunk async for chunk in model.astream("Say hello")]
            whole = await model.ainvoke("Say hello")
        assert [chunk.content for chunk in chunks if chunk.content] == ["Hello", ",", " world", "!"]
        merged = AIMessageChunk.to_message(sum(chunks[1:], chunks[0]))
        assert merged.content == whole.content
        assert merged.usage_metadata == whole.usage_metadata
        assert merged.response_metadata["finish_reason"] == "stop"

    async def test_usage_arrives_exactly_once(self, harness: ProviderHarness) -> None:
        """Exactly one chunk carries the usage, with the scripted counts."""
        async with self.running(harness) as (_, model):
            chunks = [chunk async for chunk in model.astream("Say hello")]
        [usage] = [chunk.usage_metadata for chunk in chunks if chunk.usage_metadata]
        assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (7, 4, 11)

    async def test_batch_keeps_the_input_order(self, harness: ProviderHarness) -> None:
        """``abatch`` answers every input, in input order."""
        async with self.running(harness) as (server, model):
            answers = await model.abatch(["one", "two", "three"])
        assert [answer.content for answer in answers] == ["Hello, world!"] * 3
        assert len(server.requests) == 3

    async def test_generate_reports_generations_and_usage(self, harness: ProviderHarness) -> None:
        """``agenerate`` gives one generation list per input, summed usage and the model."""
        async with self.running(harness) as (_, model):
            result = await model.agenerate([["one"], ["two"]])
        assert [[g.message.content for g in gens] for gens in result.generations] == [
            ["Hello, world!"],
            ["Hello, world!"],
        ]
        assert result.generations[0][0].generation_info == {"finish_reason": "stop"}
        assert result.llm_output is not None
        usage = result.llm_output["token_usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (14, 8)
        assert result.llm_output["model_name"]

    @pytest.mark.parametrize("reason", ["stop", "length", "tool_calls"])
    async def test_finish_reasons_are_normalised(
        self, harness: ProviderHarness, reason: str
    ) -> None:
        """The provider's finish reasons read ``stop``, ``length`` and ``tool_calls``."""
        raw = harness.finish_reasons[reason]
        calls = WEATHER.tool_calls[:1] if reason == "tool_calls" else []
        reply = ScriptedReply(text_chunks=["Hi"], tool_calls=calls, finish_reason=raw)
        async with self.running(harness, [reply]) as (_, model):
            message = await model.ainvoke("Hi")
        assert message.response_metadata["finish_reason"] == reason

    # -- tool calls -------------------------------------------------------------------------

    async def test_parallel_tool_calls_stream_and_merge(self, harness: ProviderHarness) -> None:
        """Two tool calls stream as fragments and merge into parsed calls."""
        async with self.running(harness, [WEATHER]) as (_, model):
            chunks = [chunk async for chunk in model.astream("Weather and time?")]
            message = await model.ainvoke("Weather and time?")
        capabilities = capabilities_of(harness)
        fragments = [f for chunk in chunks for f in chunk.tool_call_chunks]
        if capabilities.streamed_tool_arguments:
            assert len(fragments) > 2  # streamed in pieces, not whole
        else:
            assert len({f["index"] for f in fragments}) == 2  # whole calls, told apart
        served = capabilities.tool_call_id
        assert message.tool_calls == [
            {"name": "get_weather", "args": {"city": "Paris"}, "id": served("call_a")},
            {"name": "get_time", "args": {"tz": "CET"}, "id": served("call_b")},
        ]
        assert message.invalid_tool_calls == []
        assert message.response_metadata["finish_reason"] == "tool_calls"

    async def test_invalid_tool_arguments_become_invalid_tool_calls(
        self, harness: ProviderHarness
    ) -> None:
        """Arguments that are not JSON land in ``invalid_tool_calls``, unraised."""
        capabilities = capabilities_of(harness)
        if not capabilities.raw_tool_arguments:
            pytest.skip("the server parses tool arguments, so broken ones cannot reach a client")
        broken = ScriptedToolCall(id="call_x", name="get_weather", argument_chunks=['{"city": '])
        reply = ScriptedReply(tool_calls=[broken], finish_reason="tool_calls")
        async with self.running(harness, [reply]) as (_, model):
            message = await model.ainvoke("Weather?")
        assert message.tool_calls == []
        [invalid] = message.invalid_tool_calls
        assert (invalid["name"], invalid["id"], invalid["args"]) == (
            "get_weather",
            capabilities.tool_call_id("call_x"),
            '{"city": ',
        )

    async def test_every_message_type_is_sent(self, harness: ProviderHarness) -> None:
        """System, user, assistant (with tool calls) and tool messages reach the server."""
        conversation = [
            SystemMessage("Be brief."),
            HumanMessage("Weather in Paris?"),
            AIMessage(
                "",
                tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}],
            ),
            ToolMessage("18C and sunny", tool_call_id="call_1"),
            AIMessage("It is 18C and sunny."),
            HumanMessage("Thanks!"),
        ]
        async with self.running(harness) as (server, model):
            await model.ainvoke(conversation)
        [request] = harness.received(server)
        assert request.stream
        assert request.messages == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}}],
            },
            {"role": "tool", "content": "18C and sunny", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "It is 18C and sunny."},
            {"role": "user", "content": "Thanks!"},
        ]

    # -- errors -----------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (400, BadRequestError),
            (401, AuthenticationError),
            (403, PermissionDeniedError),
            (404, NotFoundError),
            (429, RateLimitError),
            (500, ServerError),
            (503, OverloadedError),
        ],
    )
    async def test_http_errors_are_mapped(
        self, harness: ProviderHarness, status: int, error: type[ProviderError]
    ) -> None:
        """Each error status maps to its class, with status, request id, body and retry-after."""
        faults = Faults(http_error=status, headers={"retry-after": "7"})
        async with self.running(harness, faults=faults) as (server, model):
            with pytest.raises(error) as caught:
                await model.ainvoke("Hi")
        assert type(caught.value) is error
        assert caught.value.status == status
        if capabilities_of(harness).request_ids:
            assert caught.value.request_id
        assert caught.value.message
        assert caught.value.body is not None
        assert 0 < len(caught.value.body) <= 500
        assert caught.value.retry_after == 7
        assert caught.value.partial is None
        assert len(server.requests) == 1  # max_retries=0

    async def test_error_mid_stream_keeps_the_partial_output(
        self, harness: ProviderHarness
    ) -> None:
        """An error event after some chunks raises with those chunks as ``partial``."""
        received: list[AIMessageChunk] = []

        async def consume(model: BaseChatModel) -> None:
            async for chunk in model.astream("Hi"):
                received.append(chunk)

        async with self.running(harness, faults=Faults(error_event_after=3)) as (_, model):
            with pytest.raises(ProviderError) as caught:
                await consume(model)
        assert caught.value.status is None
        partial = caught.value.partial
        assert partial is not None
        assert received
        assert partial.content == "".join(str(chunk.content) for chunk in received)
        assert "Hello, world!".startswith(str(partial.content))
        assert partial.content

    # -- retries ----------------------------------------------------------------------------

    async def test_retries_until_success(self, harness: ProviderHarness) -> None:
        """A retryable status is retried until the server succeeds."""
        faults = Faults(http_error=503, fail_times=2, headers={"retry-after-ms": "1"})
        async with self.running(harness, faults=faults, max_retries=2) as (server, model):
            message = await model.ainvoke("Hi")
        assert message.content == "Hello, world!"
        assert len(server.requests) == 3

    @pytest.mark.parametrize(
        ("headers", "attempts"),
        [({"retry-after-ms": "1"}, 3), ({"x-should-retry": "false"}, 1)],
        ids=["after-max-retries", "x-should-retry-false"],
    )
    async def test_retries_stop(
        self, harness: ProviderHarness, headers: dict[str, str], attempts: int
    ) -> None:
        """Retries stop after ``max_retries``, or at once on ``x-should-retry: false``."""
        faults = Faults(http_error=503, headers=headers)
        async with self.running(harness, faults=faults, max_retries=2) as (server, model):
            with pytest.raises(OverloadedError):
                await model.ainvoke("Hi")
        assert len(server.requests) == attempts

    async def test_retry_after_ms_is_honoured(
        self, harness: ProviderHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The retry waits the ``retry-after-ms`` the server asked for."""
        # retry-after-ms wins over retry-after: obeying the 30 s one would hit the bound below.
        headers = {"retry-after-ms": "2", "retry-after": "30"}
        faults = Faults(http_error=429, fail_times=1, headers=headers)
        caplog.set_level(logging.INFO, logger="chatstream")
        async with self.running(harness, faults=faults, max_retries=1) as (server, model):
            with anyio.fail_after(_SETTLE):
                await model.ainvoke("Hi")
        assert len(server.requests) == 2
        delays = [getattr(r, "retry_delay", None) for r in caplog.records]
        assert 0.002 in delays

    async def test_x_should_retry_true_retries_a_client_error(
        self, harness: ProviderHarness
    ) -> None:
        """``x-should-retry: true`` retries even a 400."""
        headers = {"x-should-retry": "true", "retry-after-ms": "1"}
        faults = Faults(http_error=400, fail_times=1, headers=headers)
        async with self.running(harness, faults=faults, max_retries=2) as (server, model):
            await model.ainvoke("Hi")
        assert len(server.requests) == 2

    async def test_no_retry_once_a_chunk_was_streamed(self, harness: ProviderHarness) -> None:
        """A stream that breaks after chunks were delivered is not sent again."""
        async with self.running(harness, faults=Faults(disconnect_after=3), max_retries=2) as (
            server,
            model,
        ):
            with pytest.raises(ChatStreamError) as caught:
                await model.ainvoke("Hi")
            assert harness.pool_stats(model).in_use == 0
        assert caught.value.partial is not None
        assert caught.value.partial.content
        assert len(server.requests) == 1

    # -- timeouts, early exit, cancellation -------------------------------------------------

    async def test_idle_timeout_raises_with_the_partial_output(
        self, harness: ProviderHarness
    ) -> None:
        """A server that goes silent mid-stream times out, with the partial output."""
        faults = Faults(stall_after=3)
        async with self.running(harness, faults=faults, idle_timeout=0.2, max_retries=2) as (
            server,
            model,
        ):
            with pytest.raises(APITimeoutError) as caught:
                await model.ainvoke("Hi")
            await server.wait_for_disconnects(1)
            assert harness.pool_stats(model).in_use == 0
        assert caught.value.partial is not None
        assert caught.value.partial.content
        assert len(server.requests) == 1

    async def test_back_to_back_calls_to_a_server_that_closes_after_each_stream(
        self, harness: ProviderHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every call is answered, none retried with a backoff, each request sent once.

        The server closes every connection after its response, though the response said
        keep-alive. A call that meets the closed pooled connection is resent at once (the
        transport's rule); the stream's turn of the loop at its end makes that rare against
        a server in another process (the benchmark's ``calls`` section measures it), but a
        server on the test's own loop closes later than that.
        """
        calls = 10
        caplog.set_level(logging.DEBUG, logger="chatstream.transport")
        async with self.running(harness, [HELLO] * calls) as (server, model):
            server.close_after_stream = True
            answers = [(await model.ainvoke("Hi")).text for _ in range(calls)]
        assert answers == [HELLO.text] * calls
        assert len(server.requests) == calls
        assert not [r for r in caplog.records if hasattr(r, "retry_delay")]

    async def test_early_break_releases_the_connection(self, harness: ProviderHarness) -> None:
        """Breaking out of a stream closes its connection at once."""
        faults = Faults(chunk_delay=0.01)
        async with self.running(harness, [LONG], faults) as (server, model):
            async with model.astream("Tick") as stream:
                async for _ in stream:
                    break
            # Released at once: not read to the end, not parked in the pool.
            assert harness.pool_stats(model) == PoolStats(0, 0)
            await server.wait_for_disconnects(1)

    async def test_cancel_while_waiting_for_a_connection(self, harness: ProviderHarness) -> None:
        """Cancelling a call queued for a pool slot leaks nothing."""
        async with self.running(harness, [LONG], Faults(stall_after=2), max_connections=1) as (
            server,
            model,
        ):
            async with model.astream("Hold the only connection") as holder:
                await holder.__anext__()
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as group:
                        group.start_soon(model.ainvoke, "Wait for it")
                        await anyio.wait_all_tasks_blocked()
                        scope.cancel()
                assert harness.pool_stats(model).in_use == 1
            await server.wait_for_disconnects(1)
            assert harness.pool_stats(model) == PoolStats(0, 0)
        assert len(server.requests) == 1  # the waiting call never reached the server

    async def test_cancel_while_waiting_for_headers(self, harness: ProviderHarness) -> None:
        """Cancelling before the response headers leaves no connection open."""
        async with self.running(harness, faults=Faults(first_byte_delay=30)) as (server, model):
            async with anyio.create_task_group() as group:
                group.start_soon(model.ainvoke, "Hi")
                await server.wait_for_requests(1)
                group.cancel_scope.cancel()
            assert harness.pool_stats(model) == PoolStats(0, 0)
            await server.wait_for_disconnects(1)  # the server saw the client go

    async def test_cancel_at_the_first_byte(self, harness: ProviderHarness) -> None:
        """Cancelling after the headers, before any event, closes the connection."""
        async with self.running(harness, faults=Faults(stall_after=0)) as (server, model):
            async with anyio.create_task_group() as group:
                group.start_soon(model.ainvoke, "Hi")
                await _until(lambda: server.active_streams == 1)
                group.cancel_scope.cancel()
            assert harness.pool_stats(model) == PoolStats(0, 0)
            await server.wait_for_disconnects(1)

    async def test_cancel_mid_body(self, harness: ProviderHarness) -> None:
        """Cancelling a consumer mid-stream closes the connection."""
        async with self.running(harness, faults=Faults(stall_after=3)) as (server, model):
            received: list[AIMessageChunk] = []

            async def consume() -> None:
                async for chunk in model.astream("Hi"):
                    received.append(chunk)

            async with anyio.create_task_group() as group:
                group.start_soon(consume)
                await _until(lambda: bool(received))
                await anyio.wait_all_tasks_blocked()
                group.cancel_scope.cancel()
            assert harness.pool_stats(model) == PoolStats(0, 0)
            await server.wait_for_disconnects(1)

    # -- sync API ---------------------------------------------------------------------------

    async def test_sync_invoke_and_stream(self, harness: ProviderHarness) -> None:
        """The sync ``invoke`` and ``stream`` work over the same server."""
        async with self.running(harness) as (server, model):
            # The sync API runs on chatstream's bridge loop, in a thread of its own.
            message = await anyio.to_thread.run_sync(model.invoke, "Hi")
            chunks = await anyio.to_thread.run_sync(lambda: list(model.stream("Hi")))
            await anyio.to_thread.run_sync(model.close)
        assert message.content == "Hello, world!"
        assert "".join(str(chunk.content) for chunk in chunks) == "Hello, world!"
        assert len(server.requests) == 2
