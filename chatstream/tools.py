"""Tools a model may call: `Tool`, the `tool` decorator, binding them, and running the calls.

A tool is described once, as a name, a description and a JSON schema of its arguments, from a
pydantic model, a typed function (its signature and Google-style docstring; ``Annotated[...,
"description"]`` is honoured), a `tool`-decorated function or a raw OpenAI or Anthropic dict.
Models receive tools in OpenAI's shape, which every provider converts to its own wire.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, TypeVar, final, overload

import anyio
import anyio.to_thread
from pydantic import BaseModel, Field, ValidationError, create_model

from . import sync
from ._compat import TypedDict
from ._partial_json import INCOMPLETE, parse_partial_json
from .errors import InputTypeError, InvalidInputError, UnsupportedFeatureError
from .messages import AIMessage, AIMessageChunk, ToolMessage
from .trace import trace

if TYPE_CHECKING:
    from .messages import InvalidToolCall, ToolCall

__all__ = [
    "PartialToolCall",
    "Tool",
    "ToolChoice",
    "ToolLike",
    "ToolSupport",
    "arun_tools",
    "as_tool",
    "bind_settings",
    "partial_tool_calls",
    "run_tools",
    "strict_schema",
    "tool",
]

F = TypeVar("F", bound=Callable[..., Any])

ToolChoice = str
"""``"auto"`` (the model decides), ``"none"`` (no call), ``"required"`` (at least one call) or
the name of the one tool the model must call."""

MODES: Final = frozenset({"auto", "none", "required"})
"""The tool choices that are not a tool's name."""

_EMPTY_PARAMETERS: Final = {"type": "object", "properties": {}}


@final
@dataclass(frozen=True, slots=True)
class Tool:
    """A tool: what the model is told about it, and the function that runs it (if any).

    Build one with `tool` or `as_tool`; a `Tool` is called like the function it wraps.
    """

    name: str
    """The name the model calls it by."""
    description: str = ""
    """What it does, for the model."""
    parameters: dict[str, Any] = field(default_factory=lambda: dict(_EMPTY_PARAMETERS))
    """The JSON schema of its arguments (an object schema)."""
    strict: bool | None = None
    """Ask the provider to hold the model to the schema exactly (OpenAI ``strict``)."""
    func: Callable[..., Any] | None = None
    """What runs a call: a sync or async function taking the arguments by keyword; ``None``
    for a tool that only describes (a pydantic model, a raw dict)."""
    args_model: type[BaseModel] | None = None
    """Validates (and converts) a call's arguments before ``func`` gets them."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly."""
        if self.func is None:
            raise InputTypeError(f"tool {self.name!r} has no function to call", where=self.name)
        return self.func(*args, **kwargs)

    def to_openai(self, *, strict: bool | None = None) -> dict[str, Any]:
        """The tool in OpenAI's shape (``{"type": "function", "function": {...}}``)."""
        strict = self.strict if strict is None else strict
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = strict_schema(self.parameters) if strict else self.parameters
        if strict is not None:
            function["strict"] = strict
        return {"type": "function", "function": function}

    async def ainvoke(self, args: Mapping[str, Any]) -> Any:
        """Run the tool on a call's arguments: validated, then given to ``func`` by keyword.

        A sync ``func`` runs on a worker thread, so that a slow tool never blocks the loop.

        Raises:
            InputTypeError: The tool has no function.
            pydantic.ValidationError: The arguments do not match the schema.
        """
        if self.func is None:
            raise InputTypeError(f"tool {self.name!r} has no function to run", where=self.name)
        kwargs = dict(args)
        if self.args_model is not None:
            validated = self.args_model.model_validate(kwargs)
            kwargs = {name: getattr(validated, name) for name in type(validated).model_fields}
        if inspect.iscoroutinefunction(self.func):
            return await self.func(**kwargs)
        result = await anyio.to_thread.run_sync(functools.partial(self.func, **kwargs))
        if inspect.isawaitable(result):  # a sync wrapper around a coroutine function
            return await result
        return result


ToolLike = Tool | type[BaseModel] | Callable[..., Any] | Mapping[str, Any]
"""Anything `as_tool` takes."""


@overload
def tool(func: F, /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None, strict: bool | None = None
) -> Callable[[F], Tool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function a `Tool`: ``@tool`` or ``@tool(name=..., description=..., strict=...)``.

    The arguments' schema comes from the signature's type hints; each argument's description
    from ``Annotated[T, "description"]`` or the docstring's ``Args:`` section, and the tool's
    description from the rest of the docstring. Example::

        @tool
        def get_weather(city: Annotated[str, "The city's name"]) -> str:
            \"\"\"The current weather in a city.\"\"\"
            return "18C and sunny"
    """

    def decorate(function: Callable[..., Any]) -> Tool:
        made = _from_function(function)
        return replace(
            made,
            name=name or made.name,
            description=made.description if description is None else description,
            strict=strict,
        )

    return decorate if func is None else decorate(func)


def as_tool(value: ToolLike) -> Tool:
    """The `Tool` for a pydantic model class, a function, a `Tool` or a raw tool dict.

    Dicts may be OpenAI's (``{"type": "function", "function": {"name", "description",
    "parameters"}}``, or the bare function object) or Anthropic's (``{"name", "description",
    "input_schema"}``).

    Raises:
        InputTypeError: Something else, or a dict without a name.
    """
    if isinstance(value, Tool):
        return value
    if isinstance(value, type) and issubclass(value, BaseModel):
        return Tool(
            name=value.__name__,
            description=_own_doc(value),
            parameters=_clean_schema(value.model_json_schema()),
            args_model=value,
        )
    if isinstance(value, Mapping):
        return _from_dict(value)
    if callable(value):
        return _from_function(value)
    raise InputTypeError(
        f"cannot make a tool of a {type(value).__name__} (give a pydantic model, a function "
        "or a tool dict)",
        where="tools",
    )


def _from_dict(value: Mapping[str, Any]) -> Tool:
    function = value.get("function") if value.get("type") == "function" else value
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise InputTypeError("a tool dict needs a name", where="tools")
    parameters = function.get("parameters", function.get("input_schema"))
    strict = function.get("strict", value.get("strict"))
    return Tool(
        name=function["name"],
        description=str(function.get("description") or ""),
        parameters=dict(parameters) if isinstance(parameters, Mapping) else dict(_EMPTY_PARAMETERS),
        strict=strict if isinstance(strict, bool) else None,
    )


def _from_function(function: Callable[..., Any]) -> Tool:
    summary, documented = _parse_docstring(inspect.getdoc(function) or "")
    hints = typing.get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue  # *args and **kwargs have no place in an arguments object
        annotation, described = _split_description(hints.get(name, Any))
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[name] = (
            annotation,
            Field(default, description=described or documented.get(name)),
        )
    name = getattr(function, "__name__", type(function).__name__)
    model = create_model(f"{name}_arguments", **fields)
    return Tool(
        name=name,
        description=summary,
        parameters=_clean_schema(model.model_json_schema()),
        func=function,
        args_model=model,
    )


def _split_description(annotation: Any) -> tuple[Any, str | None]:
    """``Annotated[T, "text", *more]`` as ``(Annotated[T, *more], "text")``."""
    if typing.get_origin(annotation) is not Annotated:
        return annotation, None
    base, *metadata = typing.get_args(annotation)
    texts = [item for item in metadata if isinstance(item, str)]
    others = [item for item in metadata if not isinstance(item, str)]
    annotated: Any = Annotated  # rebuilt at run time with what metadata is left
    arguments = (base, *others)
    kept = annotated[arguments] if others else base
    return kept, " ".join(texts) or None


_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SECTIONS = ("Args:", "Arguments:", "Returns:", "Raises:", "Yields:", "Example:", "Examples:")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description and the ``Args:`` entries of a Google-style docstring."""
    summary: list[str] = []
    arguments: dict[str, str] = {}
    section, current, entry_indent = "", "", -1
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in _SECTIONS:
            section, current, entry_indent = stripped, "", -1
            continue
        if not section:
            summary.append(stripped)
            continue
        if section not in ("Args:", "Arguments:") or not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(stripped)
        if match and (entry_indent < 0 or indent <= entry_indent):
            entry_indent = indent
            current = match.group(1).lstrip("*")
            arguments[current] = match.group(2)
        elif current:  # a continuation line of the entry above
            arguments[current] = f"{arguments[current]} {stripped}".strip()
    return "\n".join(summary).strip(), arguments


def _own_doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic schema without the titles it generates (noise for the model)."""
    cleaned = {k: v for k, v in schema.items() if k not in ("title", "description")}
    properties = cleaned.get("properties")
    if isinstance(properties, dict):
        cleaned["properties"] = {
            name: {k: v for k, v in prop.items() if k != "title"}
            if isinstance(prop, dict)
            else prop
            for name, prop in properties.items()
        }
    return cleaned


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` as OpenAI's strict mode wants it: every object closed, every property required.

    Properties that were optional stay as they are typed (a default does not reach the model).
    """

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, Mapping):
            return node
        out = {key: walk(value) for key, value in node.items()}
        if out.get("type") == "object" or "properties" in out:
            out["additionalProperties"] = False
            out["required"] = list(out.get("properties") or {})
        out.pop("default", None)  # strict mode refuses defaults
        return out

    result: dict[str, Any] = walk(schema)
    return result


# -- what a model can do with tools ---------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class ToolSupport:
    """What a model class can honour when tools are bound; declared as its ``tool_support``.

    A model class without one is read from its per-call settings: every tool choice when it
    has a ``tool_choice`` setting, else only ``"auto"``.
    """

    tool_choices: frozenset[str] = frozenset({"auto", "none", "required", "named"})
    """The tool choices it can honour (``"named"``: forcing one tool by its name)."""
    strict: bool = True
    """Whether it can hold the model to a schema exactly."""

    ATTRIBUTE: ClassVar[str] = "tool_support"

    @classmethod
    def of(cls, model_type: type) -> ToolSupport:
        """The support a model class declares, or what its settings imply."""
        declared = getattr(model_type, cls.ATTRIBUTE, None)
        if isinstance(declared, ToolSupport):
            return declared
        names: frozenset[str] = getattr(model_type, "call_params", frozenset())
        if "tool_choice" in names:
            return cls()
        return cls(tool_choices=frozenset({"auto"}))


def bind_settings(
    model_type: type,
    tools: Sequence[ToolLike],
    *,
    tool_choice: ToolChoice | None = None,
    parallel_tool_calls: bool | None = None,
    strict: bool | None = None,
) -> tuple[tuple[Tool, ...], dict[str, Any]]:
    """The tools as `Tool`s and the settings that bind them to a model of ``model_type``.

    Raises:
        UnsupportedFeatureError: The model cannot honour the choice, the parallel-calls switch
            or strict mode (``where`` names the argument).
        InvalidInputError: ``tool_choice`` names a tool that is not among ``tools``, or two
            tools share a name.
    """
    owner = model_type.__name__
    names: frozenset[str] = getattr(model_type, "call_params", frozenset())
    if "tools" not in names:
        raise UnsupportedFeatureError(f"{owner} cannot call tools", where="tools")
    if isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence):
        raise InputTypeError(f"expected a list of tools, got {type(tools).__name__}", where="tools")
    bound = tuple(as_tool(item) for item in tools)
    seen = [item.name for item in bound]
    if len(set(seen)) != len(seen):
        raise InvalidInputError(f"two tools share a name: {seen}", where="tools")
    support = ToolSupport.of(model_type)
    if (strict or any(item.strict for item in bound)) and not support.strict:
        raise UnsupportedFeatureError(f"{owner} has no strict tool schemas", where="strict")
    update: dict[str, Any] = {"tools": [item.to_openai(strict=strict) for item in bound]}
    if tool_choice is not None:
        kind = tool_choice if tool_choice in MODES else "named"
        if kind == "named" and tool_choice not in seen:
            raise InvalidInputError(
                f"tool_choice {tool_choice!r} is none of the tools ({', '.join(seen)})",
                where="tool_choice",
            )
        if kind not in support.tool_choices:
            can = ", ".join(sorted(support.tool_choices))
            raise UnsupportedFeatureError(
                f"{owner} cannot honour tool_choice={tool_choice!r} (it can: {can})",
                where="tool_choice",
            )
        if "tool_choice" in names:
            update["tool_choice"] = tool_choice
    if parallel_tool_calls is not None:
        if "parallel_tool_calls" not in names:
            raise UnsupportedFeatureError(
                f"{owner} has no switch for parallel tool calls", where="parallel_tool_calls"
            )
        update["parallel_tool_calls"] = parallel_tool_calls
    return bound, update


# -- watching calls stream -------------------------------------------------------------------------


class PartialToolCall(TypedDict):
    """A tool call as streamed so far, its arguments parsed as far as they go."""

    name: str | None
    args: dict[str, Any]
    id: str | None
    index: int | None


def partial_tool_calls(chunk: AIMessageChunk) -> list[PartialToolCall]:
    """The tool calls of a merged chunk so far, with best-effort parsed arguments.

    Merge the chunks as they come (``so_far = so_far + chunk``) and call this on ``so_far``:
    ``'{"city": "Par'`` reads ``{"city": "Par"}``. Arguments only ever grow from one call to
    the next; text that is not JSON reads ``{}``.
    """
    calls = []
    for fragment in chunk.tool_call_chunks:
        try:
            parsed = parse_partial_json(fragment.get("args") or "")
        except json.JSONDecodeError:
            parsed = INCOMPLETE
        calls.append(
            PartialToolCall(
                name=fragment.get("name"),
                args=parsed if isinstance(parsed, dict) else {},
                id=fragment.get("id"),
                index=fragment.get("index"),
            )
        )
    return calls


# -- running calls -------------------------------------------------------------------------------


async def arun_tools(message: AIMessage, tools: Sequence[ToolLike]) -> list[ToolMessage]:
    """Run every tool call of ``message`` concurrently: one `ToolMessage` per call, in order.

    Each run is a child run named after the tool (tagged ``"tool"``), traced like a
    ``chatstream.trace`` step. A failure never raises: an unknown tool, arguments that do not
    parse or validate, and an exception in the tool become ``ToolMessage(status="error")``
    saying what went wrong, so that the model can see it and recover.
    """
    by_name = {item.name: item for item in map(as_tool, tools)}
    calls: list[Callable[[], Awaitable[ToolMessage]]] = [
        functools.partial(_run_call, call, by_name) for call in message.tool_calls
    ]
    calls += [functools.partial(_refuse_invalid, call) for call in message.invalid_tool_calls]
    results: list[ToolMessage | None] = [None] * len(calls)

    async def run(position: int, call: Callable[[], Awaitable[ToolMessage]]) -> None:
        results[position] = await call()

    # Each call reports its own failure as a message, so one never cancels the others.
    async with anyio.create_task_group() as group:
        for position, call in enumerate(calls):
            group.start_soon(run, position, call)
    return [result for result in results if result is not None]


def run_tools(message: AIMessage, tools: Sequence[ToolLike]) -> list[ToolMessage]:
    """Sync `arun_tools`."""
    return sync.run(functools.partial(arun_tools, message, tools))


async def _run_call(call: ToolCall, tools: Mapping[str, Tool]) -> ToolMessage:
    call_id = call["id"] or ""
    found = tools.get(call["name"])
    if found is None:
        known = ", ".join(tools) or "none"
        return _error(call_id, call["name"], f"no tool named {call['name']!r} (tools: {known})")
    try:
        with trace(
            found.name, inputs=dict(call["args"]), tags=["tool"], metadata={"tool_call_id": call_id}
        ) as step:
            content = _as_content(await found.ainvoke(call["args"]))
            step.step_outputs = content
    except ValidationError as exc:
        return _error(call_id, found.name, f"invalid arguments: {_validation_summary(exc)}")
    except Exception as exc:  # the tool's own failure: reported to the model, never raised
        return _error(call_id, found.name, f"{type(exc).__name__}: {exc}")
    return ToolMessage(content, tool_call_id=call_id, name=found.name)


async def _refuse_invalid(call: InvalidToolCall) -> ToolMessage:
    return _error(call["id"] or "", call["name"], f"the arguments are not valid: {call['error']}")


def _error(call_id: str, name: str | None, reason: str) -> ToolMessage:
    return ToolMessage(f"Error: {reason}", tool_call_id=call_id, name=name, status="error")


def _validation_summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'arguments'}: {error['msg']}"
        for error in exc.errors()
    )


def _as_content(result: Any) -> str:
    """A tool's return value as message text: strings as they are, anything else as JSON."""
    if isinstance(result, str):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    try:
        return json.dumps(result, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(result)
