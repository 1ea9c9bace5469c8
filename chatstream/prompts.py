"""Prompt values (what a model accepts besides messages) and `ChatPromptTemplate`."""

from __future__ import annotations

import string
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, final

from pydantic import BaseModel, ConfigDict

from ._compat import override
from .errors import InputTypeError, InvalidInputError, MissingVariableError
from .messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["ChatPromptTemplate", "ChatPromptValue", "PromptValue", "StringPromptValue"]

_PREFIXES = {
    HumanMessage: "Human",
    AIMessage: "AI",
    AIMessageChunk: "AI",
    SystemMessage: "System",
    FunctionMessage: "Function",
    ToolMessage: "Tool",
}


class PromptValue(BaseModel, ABC):
    """A formatted prompt, usable as model input. Documented base of the two prompt values."""

    # defer_build, as for the messages: building these validators at import would build the
    # message schemas inside them, and start pydantic's plugin discovery (see `chatstream.model`).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    @abstractmethod
    def to_messages(self) -> list[BaseMessage]:
        """The prompt as chat messages."""

    @abstractmethod
    def to_string(self) -> str:
        """The prompt as one string."""


@final
class StringPromptValue(PromptValue):
    """A plain text prompt; as messages it is one human message."""

    text: str
    """The prompt text."""

    @override
    def to_messages(self) -> list[BaseMessage]:
        """One human message with the text."""
        return [HumanMessage(self.text)]

    @override
    def to_string(self) -> str:
        """The text."""
        return self.text


@final
class ChatPromptValue(PromptValue):
    """A prompt made of chat messages."""

    messages: list[AnyMessage]
    """The messages, in order."""

    @override
    def to_messages(self) -> list[BaseMessage]:
        """The messages."""
        return list(self.messages)

    @override
    def to_string(self) -> str:
        """One ``Role: text`` line per message."""
        lines = []
        for message in self.messages:
            prefix = message.role if isinstance(message, ChatMessage) else _PREFIXES[type(message)]
            lines.append(f"{prefix}: {message.text}")
        return "\n".join(lines)


_ROLE_CLASSES: dict[str, type[HumanMessage | AIMessage | SystemMessage]] = {
    "human": HumanMessage,
    "user": HumanMessage,
    "ai": AIMessage,
    "assistant": AIMessage,
    "system": SystemMessage,
}


def _variables(template: str, where: str) -> list[str]:
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError as exc:
        raise InvalidInputError(f"bad template {template!r}: {exc}", where=where) from exc
    for field in fields:
        if not field.isidentifier():
            raise InvalidInputError(
                f"template variable {{{field}}} must be a plain name; write {{{{ and }}}} for "
                "literal braces",
                where=where,
            )
    return fields


@final
class ChatPromptTemplate(BaseModel):
    """A list of message templates with ``{variables}``, formatted into messages.

    Example:
        >>> prompt = ChatPromptTemplate.from_messages(
        ...     [("system", "Translate into {lang}."), ("human", "{text}")]
        ... )
        >>> prompt.format_messages(lang="French", text="I love programming.")[1]
        HumanMessage(content='I love programming.')
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    templates: list[tuple[str, str] | AnyMessage]
    """``(role, template)`` pairs, and messages that are used as they are."""
    input_variables: list[str]
    """Every variable the templates use, in order of first appearance."""

    @classmethod
    def from_messages(cls, messages: Sequence[tuple[str, str] | BaseMessage]) -> ChatPromptTemplate:
        """Build a template from ``(role, template)`` pairs and literal messages.

        Roles are ``"system"``, ``"human"``/``"user"`` and ``"ai"``/``"assistant"``.
        """
        variables: dict[str, None] = {}
        templates: list[Any] = []
        for position, item in enumerate(messages):
            where = f"messages[{position}]"
            if isinstance(item, BaseMessage):
                templates.append(item)
                continue
            if not (
                isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, str) for x in item)
            ):
                raise InputTypeError(
                    f"expected a (role, template) pair of strings or a message, got {item!r}",
                    where=where,
                )
            role, template = item
            if role not in _ROLE_CLASSES:
                raise InvalidInputError(
                    f"unknown role {role!r}; use one of {sorted(_ROLE_CLASSES)}", where=where
                )
            variables.update(dict.fromkeys(_variables(template, where)))
            templates.append((role, template))
        return cls(templates=templates, input_variables=list(variables))

    def format_messages(self, **values: Any) -> list[BaseMessage]:
        """Fill in the variables; a variable without a value raises `MissingVariableError`."""
        return self._format(values)

    def format_prompt(self, **values: Any) -> ChatPromptValue:
        """Fill in the variables and return a `ChatPromptValue` a model accepts as input."""
        return ChatPromptValue(messages=self._format(values))

    def _format(self, values: Mapping[str, Any]) -> list[BaseMessage]:
        for variable in self.input_variables:
            if variable not in values:
                raise MissingVariableError(variable, available=list(values))
        result: list[BaseMessage] = []
        for item in self.templates:
            if isinstance(item, BaseMessage):
                result.append(item)
            else:
                role, template = item
                result.append(_ROLE_CLASSES[role](template.format_map(values)))
        return result
