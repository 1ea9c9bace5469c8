"""`ChatOpenAI`: OpenAI Chat Completions, and every OpenAI-compatible server, streamed.

The wire format and the deviations of compatible servers are in ``protocols.md`` section 1
("OpenAI Chat Completions", including 1.7 "OpenAI-compatible servers: known deviations").
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated, Any, final

from pydantic import Field, PrivateAttr, SecretStr

from .._compat import override
from ..errors import BadRequestError, ProviderError, StreamInterruptedError
from ..messages import (
    CHOICE_INDEX,
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolCallChunk,
    ToolMessage,
    UsageMetadata,
)
from ..model import BaseChatModel
from ..settings import PerCall, Stop
from ..transport.http import HTTPClient, PoolStats, Timeout
from ..transport.sse import SSEDataDecoder
from ._chunks import new_chunk
from ._common import (
    URL,
    ErrorEvent,
    Headers,
    TimeoutSetting,
    dump_arguments,
    env_secret,
    http_client,
    loads,
    request_target,
    require_key,
    usage_metadata,
)
from ._http import Request, copy_settings, stream_chunks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

__all__ = ["ChatOpenAI", "Timeout"]

PROVIDER = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


# -- request ------------------------------------------------------------------------------------


def _to_wire(messages: list[BaseMessage], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The request body for ``messages`` under ``settings`` (protocols.md §1.2, §1.3).

    Args:
        messages: The conversation.
        settings: ``model``, ``stream_usage`` (ask for the usage chunk) and the call's
            resolved settings (``None`` means unset): each goes to the body under its wire
            name, and ``extra_body`` is merged over everything else.
    """
    body: dict[str, Any] = {
        "model": settings["model"],
        "messages": [_message_to_wire(message) for message in messages],
        "stream": True,
    }
    if settings.get("stream_usage"):
        body["stream_options"] = {"include_usage": True}
    copy_settings(body, settings, ChatOpenAI.settings_spec.wire)
    if (choice := settings.get("tool_choice")) is not None:
        body["tool_choice"] = _tool_choice_to_wire(choice)
    body.update(settings.get("extra_body") or {})
    return body


def _tool_choice_to_wire(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    """A mode as it is; a tool's name as the ``{"type": "function", ...}`` that forces it."""
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


def _message_to_wire(message: BaseMessage) -> dict[str, Any]:
    if isinstance(message, AIMessageChunk):
        message = message.to_message()
    wire: dict[str, Any]
    match message:
        case SystemMessage():
            wire = {"role": "system", "content": _parts(message.content, ("text",))}
        case HumanMessage():
            wire = {"role": "user", "content": _user_parts(message.content)}
        case AIMessage():
            wire = _assistant_to_wire(message)
        case ToolMessage():
            wire = {
                "role": "tool",
                "tool_call_id": message.tool_call_id,
                "content": _parts(message.content, ("text",)),
            }
        case FunctionMessage():
            wire = {"role": "function", "name": message.name, "content": message.text}
            return wire
        case ChatMessage():
            wire = {"role": message.role, "content": _user_parts(message.content)}
        case _:
            raise TypeError(f"ChatOpenAI cannot send a {type(message).__name__}")
    if message.name is not None:
        wire["name"] = message.name
    return wire


def _assistant_to_wire(message: AIMessage) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "role": "assistant",
        "content": _parts(message.content, ("text", "refusal")) or None,
    }
    calls = [
        _wire_call(call["id"], call["name"], json.dumps(call["args"], ensure_ascii=False))
        for call in message.tool_calls
    ]
    # Broken calls go back as the model sent them, so that it sees (and can fix) its arguments.
    calls += [
        _wire_call(call["id"], call["name"] or "", call["args"] or "")
        for call in message.invalid_tool_calls
    ]
    if calls:
        wire["tool_calls"] = calls
    function_call = message.additional_kwargs.get("function_call")
    if function_call:
        wire["function_call"] = function_call
    if wire["content"] is None and not calls and not function_call:
        wire["content"] = ""  # content may be null only beside a call
    return wire


def _wire_call(call_id: str | None, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _parts(content: str | list[dict[str, Any]], kinds: tuple[str, ...]) -> Any:
    if isinstance(content, str):
        return content
    return [block for block in content if block.get("type") in kinds]


def _user_parts(content: str | list[dict[str, Any]]) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        url = block.get("image_url")
        if block.get("type") == "image_url" and isinstance(url, str):
            block = {"type": "image_url", "image_url": {"url": url}}
        parts.append(block)
    return parts


# -- response -----------------------------------------------------------------------------------


def _to_chunk(event: Any, *, n: int = 1) -> AIMessageChunk | None:
    """The chunk for one decoded stream object, or ``None`` when it holds nothing to stream.

    Handles one choice (the caller splits an object with several). A non-streamed completion
    object is accepted too: its ``message`` reads like a whole ``delta``. Usage is not read
    here (see `_usage`), so that it is emitted exactly once. Unknown keys are ignored.

    Args:
        event: A ``chat.completion.chunk`` (or ``chat.completion``) object.
        n: The number of choices requested; above 1, every chunk names its choice.

    Raises:
        ErrorEvent: The object is an error report (``{"error": ...}``).
    """
    # Plain lookups rather than a `match`: its mapping and sequence patterns cost more than
    # the rest of reading a content delta, and this runs once per token.
    if event.get("error"):
        raise ErrorEvent(event["error"])
    choices = event.get("choices")
    if type(choices) is not list or len(choices) != 1 or type(choice := choices[0]) is not dict:
        return None  # a usage-only chunk, or a shape that carries nothing for us
    delta = choice.get("delta") or choice.get("message") or {}
    content = delta.get("content") or ""
    calls: list[ToolCallChunk] = []
    extra: dict[str, Any] = {}
    # Most deltas hold only content (and perhaps the role): skip the rarer keys for them.
    if not delta.keys() <= _PLAIN_DELTA:
        calls, extra = _delta_extras(delta)
    metadata: dict[str, Any] = {}
    finish = choice.get("finish_reason")
    logprobs = choice.get("logprobs")
    if finish is not None or logprobs is not None:
        metadata = _choice_metadata(event, finish, logprobs)
    elif not (content or calls or extra):
        return None
    if n > 1:
        metadata[CHOICE_INDEX] = choice.get("index", 0)
    return new_chunk(content, event.get("id") or None, calls, extra, metadata)


_PLAIN_DELTA = frozenset({"content", "role"})


def _delta_extras(delta: Mapping[str, Any]) -> tuple[list[ToolCallChunk], dict[str, Any]]:
    """Tool-call fragments and ``additional_kwargs`` of a delta beyond its content."""
    calls = delta.get("tool_calls")
    tool_call_chunks = [_tool_call_chunk(call, i) for i, call in enumerate(calls)] if calls else []
    extra: dict[str, Any] = {}
    if (function_call := delta.get("function_call")) is not None:
        extra["function_call"] = {
            key: value
            for key, value in (
                ("name", function_call.get("name")),
                ("arguments", dump_arguments(function_call.get("arguments"))),
            )
            if value is not None
        }
    if (refusal := delta.get("refusal")) is not None:
        extra["refusal"] = refusal
    if (reasoning := delta.get("reasoning_content") or delta.get("reasoning")) is not None:
        extra["reasoning_content"] = reasoning
    return tool_call_chunks, extra


def _choice_metadata(event: Mapping[str, Any], finish: Any, logprobs: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if finish is not None:
        # Named once, here: repeated on every chunk they would just be merged again and again.
        metadata["finish_reason"] = finish
        for key, name in (("model", "model_name"), ("system_fingerprint", "system_fingerprint")):
            if value := event.get(key):
                metadata[name] = value
        if value := event.get("id"):
            metadata["id"] = value
    if logprobs is not None:
        metadata["logprobs"] = logprobs
    return metadata


def _tool_call_chunk(call: Mapping[str, Any], position: int) -> ToolCallChunk:
    function = call.get("function") or {}
    return ToolCallChunk(
        name=function.get("name") or None,
        args=dump_arguments(function.get("arguments")),
        id=call.get("id") or None,
        index=call.get("index", position),
    )


def _usage(event: Mapping[str, Any]) -> UsageMetadata | None:
    """The usage an object reports (``usage``, or Groq's ``x_groq.usage``), else ``None``."""
    usage = event.get("usage")
    if not usage:
        groq = event.get("x_groq")
        usage = groq.get("usage") if isinstance(groq, dict) else None
        if not usage:
            return None
    return usage_metadata(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        total_tokens=int(usage.get("total_tokens") or 0),
        input_details=_details(usage.get("prompt_tokens_details"), _INPUT_DETAILS),
        output_details=_details(usage.get("completion_tokens_details"), _OUTPUT_DETAILS),
    )


def _details(details: Any, names: tuple[tuple[str, str], ...]) -> dict[str, int] | None:
    if not isinstance(details, dict):
        return None
    return {name: int(details[key]) for key, name in names if isinstance(details.get(key), int)}


_INPUT_DETAILS = (("cached_tokens", "cache_read"), ("audio_tokens", "audio"))
_OUTPUT_DETAILS = (("reasoning_tokens", "reasoning"), ("audio_tokens", "audio"))


def _split_choices(event: Mapping[str, Any]) -> list[Any]:
    """One object per choice: OpenAI sends one choice per chunk, but nothing guarantees it."""
    return [{**event, "choices": [choice]} for choice in event["choices"]]


def _refuses_stream_options(error: BadRequestError) -> bool:
    return "stream_options" in f"{error.message} {error.body or ''}"


def _add_choice_usage(total: UsageMetadata | None, usage: UsageMetadata) -> UsageMetadata:
    """Usage reported per choice (one usage-only chunk each): the prompt once, outputs summed."""
    if total is None:
        return usage
    input_tokens = max(total["input_tokens"], usage["input_tokens"])
    output_tokens = total["output_tokens"] + usage["output_tokens"]
    return usage_metadata(input_tokens, output_tokens)


@final
class _StreamState:
    """What one response has shown so far: whether it finished, and its usage."""

    __slots__ = ("done", "finished", "n", "usage")

    def __init__(self, n: int) -> None:
        self.n = n
        self.done = False
        self.finished = False
        self.usage: UsageMetadata | None = None

    def feed(self, data: str) -> Sequence[AIMessageChunk]:
        """The chunks of one SSE event's data; ``[DONE]`` ends the stream."""
        if data.startswith("[DONE]"):
            self.done = True
            return ()
        if not data:  # a bare ``data:`` line has none (protocols.md §4.2)
            return ()
        return self.feed_value(loads(data))

    def feed_value(self, data: Any) -> Sequence[AIMessageChunk]:
        """The chunks of one decoded object; its usage is kept for the end, not streamed."""
        if type(data) is not dict:
            return ()  # not a chunk object: nothing we know how to read
        choices = data.get("choices")
        if data.get("usage") or "x_groq" in data:
            usage = _usage(data)
            if usage is not None and not choices and self.n > 1:
                # One usage-only chunk per choice (some servers do this for n > 1): add up.
                self.usage = _add_choice_usage(self.usage, usage)
            else:
                # Servers that repeat usage on every chunk (vLLM) send running totals.
                self.usage = usage or self.usage
        found: Sequence[AIMessageChunk]
        if choices and len(choices) > 1:
            chunks = [_to_chunk(event, n=self.n) for event in _split_choices(data)]
            found = [chunk for chunk in chunks if chunk is not None]
        else:  # the common case, once per token: one choice, or none
            chunk = _to_chunk(data, n=self.n)
            if chunk is None:
                return ()
            found = (chunk,)
        for chunk in found:
            if "finish_reason" in chunk.response_metadata:
                self.finished = True
        return found

    def check_end(self) -> None:
        """Raise unless the stream ended normally: after a finish reason or the usage."""
        if self.finished or self.usage is not None:
            return
        why = (
            "[DONE] came without a finish_reason: the server failed, perhaps reporting it in a "
            "non-standard way"
            if self.done
            else "no [DONE] and no finish_reason: the response was cut short"
        )
        raise StreamInterruptedError(f"the stream ended before the model finished ({why})")

    def final_chunks(self) -> Sequence[AIMessageChunk]:
        """The usage, once, after the whole response."""
        return () if self.usage is None else (new_chunk("", None, [], {}, {}, self.usage),)


@final
class _ModelState:
    """What a `ChatOpenAI` holds at run time: its HTTP client and what it learnt of the server."""

    __slots__ = ("client", "stream_options_refused")

    def __init__(self, client: HTTPClient) -> None:
        self.client = client
        self.stream_options_refused = False

    def without_stream_options(self, request: Request, error: ProviderError) -> Request | None:
        """The request again without ``stream_options``, if the server refused those.

        Some OpenAI-compatible servers reject the field with a 400; the model then stops
        asking for streamed usage, for this request and every later one.
        """
        if not isinstance(error, BadRequestError) or "stream_options" not in request.payload:
            return None
        if not _refuses_stream_options(error):
            return None
        self.stream_options_refused = True
        payload = {key: value for key, value in request.payload.items() if key != "stream_options"}
        return Request(request.url, payload, request.headers, request.secrets)


# -- the model ----------------------------------------------------------------------------------


@final
class ChatOpenAI(BaseChatModel):
    """A chat model served by OpenAI's Chat Completions API or any compatible server.

    Point ``base_url`` at vLLM, llama.cpp, Ollama (``/v1``), LM Studio, Groq, DeepSeek, ... to
    use them; their known deviations are handled. Every call streams; ``invoke`` merges.

    A missing API key raises `chatstream.errors.AuthenticationError` (``status`` ``None``:
    the server was never asked) at the first call, naming ``OPENAI_API_KEY``, so that one
    ``except AuthenticationError`` covers a missing key and a refused one. A keyless local
    server accepts any placeholder key.

    Example:
        >>> model = ChatOpenAI(model="gpt-4o-mini", temperature=0)  # doctest: +SKIP
        >>> model.invoke("Say hi").content  # doctest: +SKIP
        'Hi!'
    """

    model: str = "gpt-4o-mini"
    """The model to call."""
    api_key: SecretStr | None = Field(default_factory=lambda: env_secret("OPENAI_API_KEY"))
    """The API key; default: the ``OPENAI_API_KEY`` environment variable. Never shown. A
    server other than OpenAI's may need none (vLLM, llama.cpp, LM Studio): then no
    ``Authorization`` header is sent."""
    base_url: URL = Field(
        default_factory=lambda: os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    )
    """The API root (``.../v1``); default: ``OPENAI_BASE_URL``, else OpenAI's."""
    organization: str | None = Field(default_factory=lambda: os.environ.get("OPENAI_ORG_ID"))
    """Sent as ``OpenAI-Organization``; default: ``OPENAI_ORG_ID``."""
    temperature: Annotated[float | None, PerCall()] = None
    """Sampling temperature, 0 to 2."""
    top_p: Annotated[float | None, PerCall()] = None
    """Nucleus sampling mass."""
    max_tokens: Annotated[int | None, PerCall(), Field(ge=1)] = None
    """Most tokens to generate (sent as ``max_tokens``, which compatible servers understand;
    reasoning models want ``extra_body={"max_completion_tokens": ...}``)."""
    stop: Annotated[Stop, PerCall()] = None
    """Stop sequences (a string is one); a call's ``stop`` replaces them."""
    n: Annotated[int | None, PerCall(), Field(ge=1)] = None
    """How many choices to generate; ``generate`` returns one generation per choice."""
    seed: Annotated[int | None, PerCall()] = None
    """Best-effort deterministic sampling."""
    response_format: Annotated[dict[str, Any] | None, PerCall()] = None
    """``{"type": "json_object"}`` or a ``json_schema`` format."""
    tools: Annotated[list[dict[str, Any]] | None, PerCall()] = None
    """Tools in OpenAI's format (``{"type": "function", "function": {...}}``)."""
    tool_choice: Annotated[str | dict[str, Any] | None, PerCall(converted=True)] = None
    """``"auto"``, ``"none"``, ``"required"``, a tool's name, or the API's dict."""
    parallel_tool_calls: Annotated[bool | None, PerCall()] = None
    """Whether the model may call several tools in one answer (the API's default: yes)."""
    extra_body: Annotated[dict[str, Any] | None, PerCall(converted=True)] = None
    """Fields merged into the request body last (provider extensions)."""
    timeout: TimeoutSetting = Field(default_factory=Timeout)
    """Connect, idle (headers and between chunks) and total limits, in seconds; a number is
    a total limit (``timeout=30``)."""
    max_retries: int = Field(default=2, ge=0)
    """Retries of a request that failed before streaming (connection, 408, 409, 429, 5xx)."""
    max_connections: int = Field(default=100, ge=1)
    """Connection pool size per event loop, shared by the models with the same
    ``max_connections`` on that loop (a new model reuses their idle connections)."""
    default_headers: Headers = Field(default_factory=dict)
    """Headers added to every request (credentials among them never show in a repr)."""
    stream_usage: bool = True
    """Ask for the usage chunk (``stream_options.include_usage``). A server that refuses the
    option is asked again without it, and never again by this model."""

    # One private attribute, not two: each costs a trip through pydantic's __getattr__.
    _state: _ModelState = PrivateAttr()

    @override
    def model_post_init(self, context: Any, /) -> None:
        """Create the HTTP client from the transport settings (no connection is opened)."""
        self._state = _ModelState(http_client(PROVIDER, self))

    def pool_stats(self) -> PoolStats:
        """Connection counts of this model's pool on the running event loop.

        The pool is shared with the models of the same ``max_connections`` on that loop.
        """
        return self._state.client.stats()

    def _target(
        self, path: str = "/chat/completions", *, accept: str = "text/event-stream"
    ) -> tuple[str, dict[str, str], tuple[str, ...]]:
        """The URL of ``path``, the credential headers and the secrets to scrub.

        `chatstream.batch` uses it too, for the provider's other endpoints.
        """
        headers = {"Content-Type": "application/json", "Accept": accept}
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        if key or self.base_url.rstrip("/") == DEFAULT_BASE_URL:
            key = require_key(
                self.api_key,
                provider=PROVIDER,
                hint="no OpenAI API key: set the OPENAI_API_KEY environment variable or pass "
                "ChatOpenAI(api_key=...) (a local server at base_url needs none)",
            )
            headers["Authorization"] = f"Bearer {key}"
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        secrets = (key,) if key else ()
        return request_target(self.base_url, path, headers, self.default_headers, secrets)

    @override
    def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **settings: Any
    ) -> AsyncIterator[AIMessageChunk]:
        # The shared stream itself, closed by whoever consumes it: no generator of its own.
        url, headers, secrets = self._target()
        state = self._state
        ask_usage = self.stream_usage and not state.stream_options_refused
        payload = _to_wire(
            messages, {**settings, "stop": stop, "model": self.model, "stream_usage": ask_usage}
        )
        response = _StreamState(settings["n"] or 1)
        return stream_chunks(
            state.client,
            Request(url, payload, headers, secrets),
            SSEDataDecoder(),
            response,
            on_json_body=response.feed_value,
            fallback=state.without_stream_options,
        )

    @override
    async def _aclose(self) -> None:
        await self._state.client.aclose()
