"""Structured output: a model that answers with objects of a schema (``with_structured_output``).

Three ways to ask: ``json_schema`` (the provider's response format holds the answer to the
schema), ``tool_calling`` (the model is forced to call one tool whose arguments are the answer)
and ``json_mode`` (any JSON object; the schema only validates). The answer streams as partial
objects, parsed best-effort from the JSON so far, and is validated once complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, final

from pydantic import BaseModel, ValidationError

from . import sync
from ._compat import TypedDict
from ._partial_json import INCOMPLETE, parse_partial_json
from .errors import InputTypeError, OutputParserError, UnsupportedFeatureError
from .messages import AIMessage, AIMessageChunk
from .tools import Tool, ToolSupport, as_tool, strict_schema

if TYPE_CHECKING:
    from .inputs import LanguageModelInput
    from .model import BaseChatModel, RunConfig

__all__ = ["Method", "StructuredOutput", "StructuredResult", "create_structured_output"]

_PARSE_EVERY_CHUNK = 512
"""Characters of answer below which every chunk is parsed for a partial object."""

Method = Literal["json_schema", "tool_calling", "json_mode"]
"""How a structured answer is asked for (see the module docstring)."""

T = TypeVar("T")
S = TypeVar("S")

_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


class StructuredResult(TypedDict, Generic[S]):
    """What ``include_raw=True`` returns: the message, the object, and why it did not parse."""

    raw: AIMessage
    """The model's whole answer."""
    parsed: S | None
    """The validated object, ``None`` when it did not parse."""
    parsing_error: OutputParserError | None
    """Why it did not parse, ``None`` when it did."""


@dataclass(frozen=True, slots=True)
class _Schema:
    """A schema as the wire sees it, and how to validate what comes back."""

    name: str
    description: str
    json_schema: dict[str, Any]
    validate: Callable[[Any], Any]


def _schema_of(schema: type[BaseModel] | Mapping[str, Any]) -> _Schema:
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        described = as_tool(schema)
        return _Schema(
            described.name, described.description, described.parameters, schema.model_validate
        )
    if isinstance(schema, Mapping):
        if schema.get("type") == "function" or "input_schema" in schema or "parameters" in schema:
            described = as_tool(schema)  # a tool dict: its arguments are the answer
            json_schema, name, description = (
                described.parameters,
                described.name,
                described.description,
            )
        else:
            json_schema = dict(schema)
            name = str(schema.get("title") or "output")
            description = str(schema.get("description") or "")
        return _Schema(
            _NAME.sub("_", name)[:64], description, json_schema, partial(_check, json_schema)
        )
    raise InputTypeError(
        f"expected a pydantic model class or a JSON schema dict, got {type(schema).__name__}",
        where="schema",
    )


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def _check(schema: Mapping[str, Any], value: Any) -> Any:
    """A light check of ``value`` against a dict schema: object, required keys, their types.

    Enough to catch an answer of the wrong shape; a pydantic model validates fully.
    """
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    missing = [key for key in schema.get("required", ()) if key not in value]
    if missing:
        raise ValueError(f"missing required keys: {', '.join(missing)}")
    for key, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if key not in value or not isinstance(kind, str) or kind not in _JSON_TYPES:
            continue
        item = value[key]
        wrong = not isinstance(item, _JSON_TYPES[kind]) or (
            isinstance(item, bool) and kind in ("integer", "number")
        )
        if wrong:
            raise ValueError(f"{key}: expected {kind}, got {type(item).__name__}")
    return value


@final
class StructuredOutput(Generic[T]):
    """A model that answers with objects: returned by ``model.with_structured_output(...)``.

    ``ainvoke`` returns the validated object (or, with ``include_raw``, a `StructuredResult`);
    ``astream`` yields the object as parsed so far, a new dict each time it grew.
    """

    __slots__ = ("_finish", "_method", "_schema", "model")

    def __init__(
        self,
        model: BaseChatModel,
        schema: _Schema,
        method: Method,
        finish: Callable[[AIMessage, _Schema, Method], T],
    ) -> None:
        self.model = model
        """The bound model that is called: its settings ask for the schema."""
        self._schema = schema
        self._method = method
        self._finish = finish

    @property
    def method(self) -> Method:
        """How the answer is asked for."""
        return self._method

    @property
    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the answer."""
        return self._schema.json_schema

    async def ainvoke(
        self, input: LanguageModelInput, *, config: RunConfig | None = None, **params: Any
    ) -> T:
        """The answer as an object.

        Raises:
            OutputParserError: The answer is not JSON or does not match the schema (unless
                ``include_raw``); the message is on ``raw``.
        """
        message = await self.model.ainvoke(input, config=config, **params)
        return self._finish(message, self._schema, self._method)

    async def astream(
        self, input: LanguageModelInput, *, config: RunConfig | None = None, **params: Any
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The answer as it streams: the object parsed so far, each a refinement of the last.

        A value is added only once it is certain (strings may still grow), so every partial
        is consistent with the final object. The whole answer is validated at the end.

        Raises:
            OutputParserError: The complete answer does not parse (unless ``include_raw``).
        """
        so_far: AIMessageChunk | None = None  # the merged chunks (tool calls stream in them)
        pieces: list[str] = []  # or the text alone, joined only to be parsed
        size = parsed = 0  # the answer's length so far, and when it was parsed last
        last: Any = INCOMPLETE
        by_tool = self._method == "tool_calling"
        async with self.model.astream(input, config=config, **params) as stream:
            async for chunk in stream:
                if by_tool:
                    so_far = chunk if so_far is None else so_far + chunk
                    text = _text_of(so_far, self._schema.name, self._method)
                    size = len(text)
                else:
                    pieces.append(piece := chunk.text)
                    size += len(piece)
                # Each parse reads the whole text: past a few hundred characters, parse again
                # only once it has grown by a sixteenth, so that parsing stays linear in the
                # answer's length (it was quadratic: 1.5 ms a chunk at 1,000 chunks) while
                # short answers still refine with every chunk.
                if size > _PARSE_EVERY_CHUNK and size < parsed + parsed // 16:
                    continue
                parsed = size
                if not by_tool:
                    text = _FENCE.sub("", "".join(pieces))
                current = _partial(text)
                if isinstance(current, dict) and current != last:
                    last = current
                    yield current
            message = stream.message
        final = _partial(_text_of(message, self._schema.name, self._method))
        if isinstance(final, dict) and final != last:
            yield final
        self._finish(message, self._schema, self._method)  # raises if the whole does not parse

    async def abatch(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        **params: Any,
    ) -> list[T]:
        """Answer every input concurrently, as objects, in input order."""
        messages = await self.model.abatch(
            inputs, config=config, max_concurrency=max_concurrency, **params
        )
        return [self._finish(message, self._schema, self._method) for message in messages]

    def invoke(
        self, input: LanguageModelInput, *, config: RunConfig | None = None, **params: Any
    ) -> T:
        """Sync `ainvoke`."""
        return sync.run(partial(self.ainvoke, input, config=config, **params))

    def stream(
        self, input: LanguageModelInput, *, config: RunConfig | None = None, **params: Any
    ) -> Generator[dict[str, Any], None, None]:
        """Sync `astream`."""
        return sync.iterate(lambda: aclosing(self.astream(input, config=config, **params)))

    def batch(
        self,
        inputs: Sequence[LanguageModelInput],
        *,
        config: RunConfig | None = None,
        max_concurrency: int | None = None,
        **params: Any,
    ) -> list[T]:
        """Sync `abatch`."""
        call = partial(self.abatch, inputs, config=config, max_concurrency=max_concurrency)
        return sync.run(partial(call, **params))


def _text_of(message: AIMessage | AIMessageChunk, name: str, method: Method) -> str:
    """The JSON text of the answer: the message text, or the forced tool call's arguments."""
    if method != "tool_calling":
        return _FENCE.sub("", message.text)
    if isinstance(message, AIMessageChunk):
        fragments = [f for f in message.tool_call_chunks if f.get("name") in (name, None)]
        return (fragments[0].get("args") or "") if fragments else ""
    for call in message.tool_calls:
        if call["name"] == name:
            return json.dumps(call["args"], ensure_ascii=False)
    return next(
        (call["args"] or "" for call in message.invalid_tool_calls if call["name"] == name), ""
    )


def _partial(text: str) -> Any:
    try:
        return parse_partial_json(text)
    except json.JSONDecodeError:
        return INCOMPLETE


def _parse(message: AIMessage, schema: _Schema, method: Method) -> Any:
    text = _text_of(message, schema.name, method)
    if method == "tool_calling" and not any(c["name"] == schema.name for c in message.tool_calls):
        if not text:
            raise OutputParserError(
                f"the model did not call the {schema.name!r} tool", raw=message, text=text
            )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputParserError(
            f"the answer is not valid JSON ({exc.msg} at {exc.pos})", raw=message, text=text
        ) from exc
    try:
        return schema.validate(value)
    except (ValidationError, ValueError) as exc:
        raise OutputParserError(
            f"the answer does not match the {schema.name!r} schema: {exc}", raw=message, text=text
        ) from exc


def _parsed(message: AIMessage, schema: _Schema, method: Method) -> Any:
    return _parse(message, schema, method)


def _with_raw(message: AIMessage, schema: _Schema, method: Method) -> StructuredResult[Any]:
    try:
        return StructuredResult(
            raw=message, parsed=_parse(message, schema, method), parsing_error=None
        )
    except OutputParserError as exc:
        return StructuredResult(raw=message, parsed=None, parsing_error=exc)


def create_structured_output(
    model: BaseChatModel,
    schema: type[BaseModel] | Mapping[str, Any],
    *,
    method: Method | None = None,
    include_raw: bool = False,
    strict: bool | None = None,
) -> StructuredOutput[Any]:
    """What ``model.with_structured_output`` returns (see there).

    Raises:
        UnsupportedFeatureError: The model has no way to ask for ``method``.
    """
    described = _schema_of(schema)
    settings = type(model).call_params
    if method is None:
        method = "json_schema" if "response_format" in settings else "tool_calling"
    owner = type(model).__name__
    match method:
        case "json_schema" | "json_mode":
            if "response_format" not in settings:
                raise UnsupportedFeatureError(
                    f"{owner} has no response format for method={method!r}; use "
                    "method='tool_calling'",
                    where="method",
                )
            bound = model.model_copy(
                update={"response_format": _response_format(described, method, strict)}
            )
        case "tool_calling":
            bound = _force_tool(model, described, strict)
        case _:
            raise InputTypeError(f"unknown method {method!r}", where="method")
    return StructuredOutput(bound, described, method, _with_raw if include_raw else _parsed)


def _response_format(schema: _Schema, method: Method, strict: bool | None) -> dict[str, Any]:
    if method == "json_mode":
        return {"type": "json_object"}
    body: dict[str, Any] = {"name": schema.name}
    if schema.description:
        body["description"] = schema.description
    body["schema"] = strict_schema(schema.json_schema) if strict else schema.json_schema
    if strict is not None:
        body["strict"] = strict
    return {"type": "json_schema", "json_schema": body}


def _force_tool(model: BaseChatModel, schema: _Schema, strict: bool | None) -> BaseChatModel:
    choices = ToolSupport.of(type(model)).tool_choices
    if "named" in choices:
        choice = schema.name
    elif "required" in choices:
        choice = "required"  # the only tool: requiring a call is forcing this one
    else:
        raise UnsupportedFeatureError(
            f"{type(model).__name__} cannot force a tool call for method='tool_calling'; "
            "use method='json_schema'",
            where="method",
        )
    answer = Tool(schema.name, schema.description, schema.json_schema, strict=strict)
    parallel = False if "parallel_tool_calls" in type(model).call_params else None
    return model.bind_tools([answer], tool_choice=choice, parallel_tool_calls=parallel)
