"""`BaseChatModel`'s tool and structured-output methods, made its methods there.

`bind_tools` returns a copy of the model offering tools, `with_structured_output` a model
answering with validated objects (`chatstream.structured`), `tool_loop` a `ToolLoop` that runs
the tools the model calls. The work is done in `chatstream.tools`, `chatstream.structured` and
`chatstream._tool_loop`; these only bind it to a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from pydantic import BaseModel

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._tool_loop import ToolLoop
    from .model import BaseChatModel
    from .structured import Method, StructuredOutput, StructuredResult
    from .tools import ToolChoice, ToolLike

__all__ = ["bind_tools", "tool_loop", "with_structured_output"]

_M = TypeVar("_M", bound="BaseChatModel")
_S = TypeVar("_S", bound=BaseModel)


def bind_tools(
    self: _M,
    tools: Sequence[ToolLike],
    *,
    tool_choice: ToolChoice | None = None,
    parallel_tool_calls: bool | None = None,
    strict: bool | None = None,
) -> _M:
    """A copy of this model that offers ``tools`` to every call (this one is unchanged).

    A tool is a pydantic model, a typed function, a `chatstream.tools.tool`, or a raw
    OpenAI or Anthropic tool dict. ``tool_choice`` is ``"auto"``, ``"none"``,
    ``"required"`` or a tool's name; ``parallel_tool_calls=False`` asks for one call at a
    time; ``strict`` holds the model to the schemas exactly. Functions among the tools are
    what `tool_loop` runs.

    Raises:
        UnsupportedFeatureError: The provider cannot honour the choice, the switch or
            strict mode (it never ignores one silently).
    """
    from .tools import bind_settings

    bound, update = bind_settings(
        type(self),
        tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        strict=strict,
    )
    model = self.model_copy(update=update)
    model._bound_tools = bound
    return model


@overload
def with_structured_output(
    self: BaseChatModel,
    schema: type[_S],
    *,
    method: Method | None = None,
    include_raw: Literal[False] = False,
    strict: bool | None = None,
) -> StructuredOutput[_S]: ...


@overload
def with_structured_output(
    self: BaseChatModel,
    schema: Mapping[str, Any],
    *,
    method: Method | None = None,
    include_raw: Literal[False] = False,
    strict: bool | None = None,
) -> StructuredOutput[dict[str, Any]]: ...


@overload
def with_structured_output(
    self: BaseChatModel,
    schema: type[_S],
    *,
    method: Method | None = None,
    include_raw: Literal[True],
    strict: bool | None = None,
) -> StructuredOutput[StructuredResult[_S]]: ...


@overload
def with_structured_output(
    self: BaseChatModel,
    schema: Mapping[str, Any],
    *,
    method: Method | None = None,
    include_raw: Literal[True],
    strict: bool | None = None,
) -> StructuredOutput[StructuredResult[dict[str, Any]]]: ...


def with_structured_output(
    self: BaseChatModel,
    schema: type[BaseModel] | Mapping[str, Any],
    *,
    method: Method | None = None,
    include_raw: bool = False,
    strict: bool | None = None,
) -> StructuredOutput[Any]:
    """A model that answers with instances of ``schema`` (a dict for a JSON-schema dict).

    ``method`` is ``"json_schema"`` (the provider's response format), ``"tool_calling"``
    (one forced tool call) or ``"json_mode"`` (any JSON object, validated after); the
    default is ``json_schema`` where the provider has a response format, else
    ``tool_calling``. ``astream`` yields the object as parsed so far. A failed validation
    raises `OutputParserError` with the message on ``raw``, unless ``include_raw`` returns
    ``{"raw", "parsed", "parsing_error"}`` instead.

    Raises:
        UnsupportedFeatureError: The provider has no way to ask for ``method``.
    """
    from .structured import create_structured_output

    return create_structured_output(
        self, schema, method=method, include_raw=include_raw, strict=strict
    )


def tool_loop(
    self: BaseChatModel, tools: Sequence[ToolLike] | None = None, *, max_steps: int = 10
) -> ToolLoop:
    """A `ToolLoop`: this model, running the tools it calls until it answers.

    ``tools`` (default: the functions bound with `bind_tools`) are what the loop runs; at
    most ``max_steps`` model calls are made.
    """
    from ._tool_loop import ToolLoop
    from .tools import as_tool

    runnable = self._bound_tools if tools is None else tuple(map(as_tool, tools))
    return ToolLoop(self, runnable, max_steps=max_steps)
