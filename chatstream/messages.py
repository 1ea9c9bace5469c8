"""Chat message types and the `AIMessageChunk` a model streams.

Messages are frozen pydantic models told apart by ``type``. Chunks merge with ``+`` (see
`merge_chunks`), which builds a new chunk and leaves both sides untouched.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Annotated, Any, Literal, final

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from . import _merge
from ._compat import NotRequired, TypedDict, Unpack, override

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "CHOICE_INDEX",
    "AIMessage",
    "AIMessageChunk",
    "AnyMessage",
    "BaseMessage",
    "ChatMessage",
    "Content",
    "FunctionMessage",
    "HumanMessage",
    "ImageURLBlock",
    "InvalidToolCall",
    "SystemMessage",
    "TextBlock",
    "ToolCall",
    "ToolCallChunk",
    "ToolMessage",
    "UsageMetadata",
    "merge_chunks",
    "merge_parts",
    "messages_from_dict",
]


CHOICE_INDEX = "choice_index"
"""The ``response_metadata`` key that marks which choice a chunk belongs to when ``n > 1``."""


class TextBlock(TypedDict):
    """A text content block: ``{"type": "text", "text": "..."}``."""

    type: Literal["text"]
    text: str


class ImageURLBlock(TypedDict):
    """An image content block: ``{"type": "image_url", "image_url": {"url": "..."}}``."""

    type: Literal["image_url"]
    image_url: dict[str, str]


Content = str | list[dict[str, Any]]
"""A message's content: a string, or a list of content blocks (`TextBlock`, `ImageURLBlock`,
or a provider's own block such as Anthropic's ``thinking``)."""


class ToolCall(TypedDict):
    """A complete tool call requested by the model, with its arguments parsed."""

    name: str
    args: dict[str, Any]
    id: str | None


class InvalidToolCall(TypedDict):
    """A tool call whose arguments were not a JSON object; kept with the reason, never raised."""

    name: str | None
    args: str | None
    id: str | None
    error: str


class ToolCallChunk(TypedDict):
    """A streamed fragment of a tool call; fragments with the same ``index`` belong together."""

    name: str | None
    args: str | None
    id: str | None
    index: int | None


class UsageMetadata(TypedDict):
    """Token counts of one model call."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_token_details: NotRequired[dict[str, int]]
    output_token_details: NotRequired[dict[str, int]]


class _MessageFields(TypedDict, total=False):
    id: str | None
    additional_kwargs: dict[str, Any]
    response_metadata: dict[str, Any]


class _NamedFields(_MessageFields, total=False):
    name: str | None


class _AIFields(_NamedFields, total=False):
    tool_calls: list[ToolCall]
    invalid_tool_calls: list[InvalidToolCall]
    usage_metadata: UsageMetadata | None


class _AIChunkFields(_NamedFields, total=False):
    tool_call_chunks: list[ToolCallChunk]
    usage_metadata: UsageMetadata | None


class _ToolFields(_NamedFields, total=False):
    status: Literal["success", "error"]


class BaseMessage(BaseModel):
    """Fields every message has. Documented base of the message types; use a concrete one."""

    # defer_build: each message class builds its validator when first used, not at import
    # (`import chatstream` paid about 10 ms for the seven of them).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    type: str
    """The discriminator: ``"human"``, ``"ai"``, ``"system"``, ... (set by each class)."""
    content: Content
    """The text, or a list of content blocks."""
    name: str | None = None
    """An optional name for the speaker."""
    id: str | None = None
    """An id, usually the provider's for AI messages."""
    additional_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Provider payload with no field of its own (a legacy ``function_call``, ...)."""
    response_metadata: dict[str, Any] = Field(default_factory=dict)
    """What the provider said about the response: ``finish_reason``, ``model_name``, ..."""

    def __init__(self, content: Content = "", **fields: Any) -> None:
        # Each message type narrows this with its own typed keywords; this one only forwards.
        super().__init__(content=content, **fields)

    @property
    def text(self) -> str:
        """The text of the content: the string itself, or its text blocks joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            str(block.get("text", "")) for block in self.content if block.get("type") == "text"
        )

    @override
    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Show what differs from the defaults, as in AIMessage(content="J'adore la programmation.")
        for name, field in type(self).model_fields.items():
            if name == "type":
                continue
            value = getattr(self, name)
            if name == "content" or value != field.get_default(call_default_factory=True):
                yield name, value


@final
class HumanMessage(BaseMessage):
    """A message from the user: ``HumanMessage("What is your name?")``."""

    type: Literal["human"] = "human"

    def __init__(self, content: Content = "", **fields: Unpack[_NamedFields]) -> None:
        super().__init__(content=content, **fields)


@final
class SystemMessage(BaseMessage):
    """Instructions that set up the assistant: ``SystemMessage("You are ...")``."""

    type: Literal["system"] = "system"

    def __init__(self, content: Content = "", **fields: Unpack[_NamedFields]) -> None:
        super().__init__(content=content, **fields)


@final
class AIMessage(BaseMessage):
    """A complete answer from the model, as returned by ``invoke``."""

    type: Literal["ai"] = "ai"

    tool_calls: list[ToolCall] = Field(default_factory=list)
    """Tool calls the model requested, arguments parsed."""
    invalid_tool_calls: list[InvalidToolCall] = Field(default_factory=list)
    """Tool calls whose arguments did not parse, with the reason."""
    usage_metadata: UsageMetadata | None = None
    """Token counts, when the provider reported them."""

    def __init__(self, content: Content = "", **fields: Unpack[_AIFields]) -> None:
        super().__init__(content=content, **fields)


@final
class AIMessageChunk(BaseMessage):
    """A piece of a streamed answer. ``a + b`` merges two chunks into a new one."""

    type: Literal["AIMessageChunk"] = "AIMessageChunk"

    tool_call_chunks: list[ToolCallChunk] = Field(default_factory=list)
    """Fragments of tool calls; merged by ``index``."""
    usage_metadata: UsageMetadata | None = None
    """Token counts carried by this chunk; merging sums them."""

    def __init__(self, content: Content = "", **fields: Unpack[_AIChunkFields]) -> None:
        super().__init__(content=content, **fields)

    def __add__(self, other: AIMessageChunk) -> AIMessageChunk:
        if not isinstance(other, AIMessageChunk):
            return NotImplemented
        return merge_chunks((self, other))

    def to_message(self) -> AIMessage:
        """The complete `AIMessage` this (merged) chunk stands for, with tool calls parsed.

        Arguments that are not a JSON object go to ``invalid_tool_calls`` with the reason.
        """
        tool_calls: list[ToolCall] = []
        invalid: list[InvalidToolCall] = []
        for fragment in self.tool_call_chunks:
            raw = fragment.get("args") or ""
            name = fragment.get("name")
            try:
                args = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as exc:
                invalid.append(
                    InvalidToolCall(name=name, args=raw, id=fragment.get("id"), error=str(exc))
                )
                continue
            if not isinstance(args, dict) or name is None:
                reason = "no tool name" if name is None else "arguments are not a JSON object"
                invalid.append(
                    InvalidToolCall(name=name, args=raw, id=fragment.get("id"), error=reason)
                )
            else:
                tool_calls.append(ToolCall(name=name, args=args, id=fragment.get("id")))
        return AIMessage(
            self.content,
            name=self.name,
            id=self.id,
            additional_kwargs=self.additional_kwargs,
            response_metadata=self.response_metadata,
            tool_calls=tool_calls,
            invalid_tool_calls=invalid,
            usage_metadata=self.usage_metadata,
        )


@final
class FunctionMessage(BaseMessage):
    """The result of a legacy function call: ``FunctionMessage("18C", name="get_weather")``."""

    type: Literal["function"] = "function"
    name: str  # required here, optional on other messages

    def __init__(self, content: Content = "", *, name: str, **fields: Unpack[_MessageFields]):
        super().__init__(content=content, name=name, **fields)


@final
class ToolMessage(BaseMessage):
    """The result of a tool call: ``ToolMessage("18C", tool_call_id="call_1")``."""

    type: Literal["tool"] = "tool"

    tool_call_id: str
    """The id of the tool call this answers."""
    status: Literal["success", "error"] = "success"
    """Whether the tool succeeded."""

    def __init__(self, content: Content = "", *, tool_call_id: str, **fields: Unpack[_ToolFields]):
        super().__init__(content=content, tool_call_id=tool_call_id, **fields)


@final
class ChatMessage(BaseMessage):
    """A message with any role: ``ChatMessage("...", role="critic")``."""

    type: Literal["chat"] = "chat"

    role: str
    """The speaker's role, as the provider should see it."""

    def __init__(self, content: Content = "", *, role: str, **fields: Unpack[_NamedFields]):
        super().__init__(content=content, role=role, **fields)


AnyMessage = Annotated[
    HumanMessage
    | SystemMessage
    | AIMessage
    | AIMessageChunk
    | FunctionMessage
    | ToolMessage
    | ChatMessage,
    Field(discriminator="type"),
]
"""Any message, told apart by ``type``; use it as a pydantic field type."""


@functools.cache
def _message_list() -> TypeAdapter[list[AnyMessage]]:
    # Built on first use: the schema costs milliseconds that `import chatstream` need not pay.
    return TypeAdapter(list[AnyMessage])


def messages_from_dict(data: Sequence[dict[str, Any]]) -> list[AnyMessage]:
    """Load messages saved with ``message.model_dump(mode="json")``."""
    return _message_list().validate_python(list(data))


def merge_chunks(chunks: Sequence[AIMessageChunk]) -> AIMessageChunk:
    """Merge streamed chunks in order into one chunk, in one pass.

    Content concatenates (strings and block lists), metadata dicts merge recursively (strings
    concatenate, the last ``finish_reason`` and other naming keys win), tool-call fragments merge
    by ``index``, usage sums, and ``id``/``name`` keep the last value given. The result is new;
    no input is changed. ``a + b`` is ``merge_chunks((a, b))``.
    """
    return merge_parts([chunk.content for chunk in chunks], chunks)


def merge_parts(contents: Sequence[Content], chunks: Sequence[AIMessageChunk]) -> AIMessageChunk:
    """Merge streamed chunks given as their contents plus the chunks that carry more.

    ``contents`` are every chunk's content, in order; ``chunks`` are, in order, those chunks
    that carry anything besides content (ids, metadata, tool calls, usage). The result is the
    same as `merge_chunks` over every chunk, for a caller that kept content-only chunks as
    plain strings.
    """
    if len(chunks) == 1 and len(contents) == 1:
        return chunks[0]  # one chunk merges to itself, unchanged
    additional: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    tool_call_chunks: list[Any] = []
    msg_id = name = None
    for chunk in chunks:
        if chunk.additional_kwargs:
            additional = _merge.merge_dicts(additional, chunk.additional_kwargs)
        if chunk.response_metadata:
            metadata = _merge.merge_dicts(metadata, chunk.response_metadata)
        if chunk.tool_call_chunks:
            tool_call_chunks = _merge.merge_indexed(tool_call_chunks, chunk.tool_call_chunks)
        msg_id = chunk.id or msg_id
        name = chunk.name or name
    return AIMessageChunk(
        _merge.merge_content(contents),
        id=msg_id,
        name=name,
        additional_kwargs=additional,
        response_metadata=metadata,
        tool_call_chunks=tool_call_chunks,
        usage_metadata=_merge.merge_usage(chunk.usage_metadata for chunk in chunks),  # type: ignore[arg-type]  # sums of UsageMetadata keep its keys
    )
