"""What a model accepts as input, and `to_messages`, which turns any of it into messages."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from .errors import InputTypeError, InvalidInputError
from .messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    messages_from_dict,
)
from .prompts import PromptValue

__all__ = ["LanguageModelInput", "MessageLike", "to_messages"]

MessageLike = BaseMessage | str | tuple[str, Any] | Mapping[str, Any]
"""One message: a message object, a string (a human message), a ``(role, content)`` pair, or an
OpenAI-style ``{"role": ..., "content": ...}`` dict (or a saved ``model_dump()`` dict)."""

LanguageModelInput = str | BaseMessage | PromptValue | Sequence[MessageLike]
"""Anything a chat model accepts: a string, a message, a prompt value, or a list of messages."""

_SIMPLE_ROLES: dict[str, type[HumanMessage | AIMessage | SystemMessage]] = {
    "human": HumanMessage,
    "user": HumanMessage,
    "ai": AIMessage,
    "assistant": AIMessage,
    "system": SystemMessage,
    "developer": SystemMessage,
}


def to_messages(value: LanguageModelInput, *, where: str = "input") -> list[BaseMessage]:
    """Turn any accepted input into a list of messages.

    Raises:
        InputTypeError: the input, or an item of it, has a type that is not accepted.
        InvalidInputError: an item has the right type but cannot become a message; the error's
            ``where`` names it (``"input[2]"``).

    Args:
        value: The input.
        where: How errors name the input (``"inputs[3]"`` inside a batch).
    """
    if isinstance(value, str):
        return [HumanMessage(value)]
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [_to_message(item, f"{where}[{position}]") for position, item in enumerate(value)]
    raise InputTypeError(
        "expected a str, a message, a PromptValue or a list of messages, "
        f"got {type(value).__name__}",
        where=where,
    )


def _to_message(item: object, where: str) -> BaseMessage:
    if isinstance(item, BaseMessage):
        return item
    if isinstance(item, str):
        return HumanMessage(item)
    if isinstance(item, (tuple, list)):
        return _from_pair(item, where)
    if isinstance(item, Mapping):
        return _from_dict(item, where)
    raise InputTypeError(
        f"expected a message, a str, a (role, content) pair or a dict, got {type(item).__name__}",
        where=where,
    )


def _from_pair(item: tuple[Any, ...] | list[Any], where: str) -> BaseMessage:
    if len(item) != 2 or not isinstance(item[0], str):
        raise InvalidInputError(f"expected a (role, content) pair, got {item!r}", where=where)
    role, content = item
    if role in ("function", "tool"):
        needed = "name" if role == "function" else "tool_call_id"
        raise InvalidInputError(
            f"a ({role!r}, content) pair cannot carry the required {needed!r}; use a dict "
            f"{{'role': {role!r}, {needed!r}: ..., 'content': ...}} instead",
            where=where,
        )
    return _build(role, {"content": content}, where)


def _from_dict(item: Mapping[str, Any], where: str) -> BaseMessage:
    if "role" not in item:
        if "type" in item:  # a saved model_dump() dict
            try:
                return messages_from_dict([dict(item)])[0]
            except ValidationError as exc:
                raise InvalidInputError(f"not a valid saved message: {exc}", where=where) from exc
        raise InvalidInputError(
            f"a message dict needs a 'role', got keys {sorted(item)}", where=where
        )
    if "content" not in item and not item.get("tool_calls") and not item.get("function_call"):
        raise InvalidInputError("a message dict needs 'content'", where=where)
    fields = {key: value for key, value in item.items() if key != "role"}
    if fields.get("content") is None:
        fields["content"] = ""  # OpenAI sends null content next to tool calls
    return _build(item["role"], fields, where)


_KNOWN_ROLES = [*_SIMPLE_ROLES, "function", "tool"]
_TYPO_CUTOFF = 0.75
"""How alike a custom role and a known one must be to be taken for a typo ("sytem": 0.91; a
real custom role such as "critic" or "model" is far from every known one)."""


def _build(role: object, fields: dict[str, Any], where: str) -> BaseMessage:
    if not isinstance(role, str):
        raise InputTypeError(f"role must be a str, got {type(role).__name__}", where=where)
    try:
        if role in ("ai", "assistant"):
            return _assistant(fields)
        if role in _SIMPLE_ROLES:
            return _SIMPLE_ROLES[role](**fields)
        if role == "function":
            return FunctionMessage(**fields)
        if role == "tool":
            return ToolMessage(**fields)
        import difflib  # only for an unknown role: `import chatstream` need not load difflib

        if close := difflib.get_close_matches(role, _KNOWN_ROLES, n=1, cutoff=_TYPO_CUTOFF):
            raise InvalidInputError(
                f"unknown role {role!r}; did you mean {close[0]!r}? (for a custom role, pass "
                f"ChatMessage(content, role={role!r}))",
                where=where,
            )
        return ChatMessage(role=role, **fields)
    except (ValueError, TypeError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
        raise InvalidInputError(f"cannot make a {role!r} message: {exc}", where=where) from exc


def _assistant(fields: dict[str, Any]) -> AIMessage:
    """An assistant dict, accepting OpenAI-style ``tool_calls`` and ``function_call``."""
    wire_calls = fields.pop("tool_calls", None) or []
    function_call = fields.pop("function_call", None)
    tool_calls = [call if "args" in call else _parse_wire_call(call) for call in wire_calls]
    if function_call is not None:
        extra = dict(fields.pop("additional_kwargs", {}))
        fields["additional_kwargs"] = {**extra, "function_call": function_call}
    return AIMessage(tool_calls=tool_calls, **fields)


def _parse_wire_call(call: Mapping[str, Any]) -> ToolCall:
    function = call["function"]
    arguments = function.get("arguments") or "{}"
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    return ToolCall(name=function["name"], args=args, id=call.get("id"))
