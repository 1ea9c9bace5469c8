"""`ToolLoop`, made by ``model.tool_loop()``: call the model, run the tools it calls, call again.

The loop is one ``chain`` run (``tool_loop`` unless the config names it); every model call and
every tool run inside it is a child run, so run logs and traces show each step.
"""

from __future__ import annotations

from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING, Any, final

from . import sync
from .errors import StepLimitError
from .inputs import to_messages
from .messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from .runs import Run
from .tools import arun_tools

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Generator, Sequence

    from .inputs import LanguageModelInput
    from .model import BaseChatModel, RunConfig
    from .tools import Tool

__all__ = ["LoopEvent", "ToolLoop"]

LoopEvent = AIMessageChunk | AIMessage | ToolMessage
"""What the loop streams: each step's chunks, then its whole `AIMessage`, then its results."""

_STEP_CONFIG_KEYS = ("tags", "metadata", "callbacks")
"""What of the loop's config each model call inherits (its name and id are the loop's)."""


async def _settle(pending: Awaitable[None] | None) -> None:
    if pending is not None:
        await pending


async def _stream_until_done(
    model: BaseChatModel,
    tools: Sequence[Tool],
    input: LanguageModelInput,
    *,
    max_steps: int,
    config: RunConfig | None,
    params: dict[str, Any],
) -> AsyncGenerator[LoopEvent, None]:
    """Stream the model, run the tools it calls, feed back the results; until it answers.

    Raises:
        StepLimitError: The model still called tools after ``max_steps`` calls.
    """
    messages: list[BaseMessage] = list(to_messages(input))
    config = config or {}
    step_config: Any = {key: config[key] for key in _STEP_CONFIG_KEYS if key in config}  # type: ignore[literal-required]
    loop = Run.create(
        config.get("run_name") or "tool_loop",
        run_type="chain",
        step_inputs={"messages": [message.model_dump(mode="json") for message in messages]},
        tags=list(config.get("tags", ())),
        metadata=dict(config.get("metadata", {})),
    )
    if "run_id" in config:
        loop.id = config["run_id"]
    await _settle(loop.start())
    added: list[BaseMessage] = []
    try:
        for _ in range(max_steps):
            # The loop is the current run only while calls are made, never across a yield:
            # the caller's code between two items must not see it.
            token = loop.enter()
            try:
                stream = model.astream(messages, config=step_config, **params)
            finally:
                loop.leave(token)
            async with stream:
                async for chunk in stream:
                    yield chunk
            message = stream.message
            yield message
            messages.append(message)
            added.append(message)
            if not (message.tool_calls or message.invalid_tool_calls):
                await _settle(loop.end([item.model_dump(mode="json") for item in added]))
                return
            token = loop.enter()
            try:
                results = await arun_tools(message, tools)
            finally:
                loop.leave(token)
            for result in results:
                yield result
            messages += results
            added += results
        raise StepLimitError(
            f"the model still called tools after {max_steps} steps", messages=messages
        )
    except Exception as exc:
        _, pending = loop.fail(exc, wrap=False)
        await _settle(pending)
        raise
    except BaseException as exc:  # closed early or cancelled: record it, await nothing
        loop.fail(exc, wrap=False)
        raise


@final
class ToolLoop:
    """A model that runs the tools it calls and sends back the results, until it answers.

    Made by `BaseChatModel.tool_loop`. Each step streams its `AIMessageChunk`s, then its whole
    `AIMessage`, then the `ToolMessage`s of its calls (`chatstream.tools.arun_tools`: a failed
    tool becomes an error result the model sees). The loop is one ``tool_loop`` chain run
    whose children are every model call and tool run, so run logs and traces show each step.
    Example::

        loop = model.bind_tools([get_weather]).tool_loop(max_steps=5)
        added = await loop.ainvoke("Weather in Paris?")   # [AIMessage, ToolMessage, AIMessage]

    Attributes:
        model: The model called at each step (with the tools bound).
        tools: The tools the loop runs.
        max_steps: The most model calls; one more tool call raises `StepLimitError`.
    """

    __slots__ = ("max_steps", "model", "tools")

    def __init__(self, model: BaseChatModel, tools: Sequence[Tool], *, max_steps: int) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.model = model
        self.tools = tuple(tools)
        self.max_steps = max_steps

    def astream(
        self, input: LanguageModelInput, *, config: RunConfig | None = None, **params: Any
    ) -> AsyncGenerator[LoopEvent, None]:
        """Every step as it streams: chunks, the whole `AIMessage`, then its tool results.

        Raises:
            StepLimitError: The model still called tools after ``max_steps`` calls.
        """
        return _stream_until_done(
            self.model,
            self.tools,
            input,
            max_steps=self.max_steps,
            config=config,
            params=params,
        )

    async def ainvoke(
        self, input: LanguageModelInput, *, config: RunConfig | None = None, **params: Any
    ) -> list[BaseMessage]:
        """The messages the loop added: each `AIMessage` and the results that answer it."""
        async with aclosing(self.astream(input, config=config, **params)) as events:
            return [event async for event in events if not isinstance(event, AIMessageChunk)]

    def stream(
        self, input: LanguageModelInput, *, config: RunConfig | None = None, **params: Any
    ) -> Generator[LoopEvent, None, None]:
        """Sync `astream`."""
        return sync.iterate(lambda: aclosing(self.astream(input, config=config, **params)))

    def invoke(
        self, input: LanguageModelInput, *, config: RunConfig | None = None, **params: Any
    ) -> list[BaseMessage]:
        """Sync `ainvoke`."""
        return sync.run(partial(self.ainvoke, input, config=config, **params))
