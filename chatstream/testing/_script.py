"""Provider-neutral scripts for the local test servers: what to answer and how to misbehave."""

from __future__ import annotations

import hashlib
import json
import re
import string
from typing import Any, Literal, final

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Faults", "ScriptedReply", "ScriptedToolCall", "derived_id", "estimate_prompt_tokens"]

_PIECE = re.compile(r"\s*\S+|\s+")


@final
class ScriptedToolCall(BaseModel):
    """One tool call the server streams as fragments.

    Attributes:
        id: The call id sent on the first fragment (e.g. ``"call_abc"``).
        name: The function name.
        argument_chunks: The JSON argument text, one fragment per streamed delta. The pieces need
            not form valid JSON, so clients can be tested against broken arguments.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    argument_chunks: list[str] = Field(default_factory=list)

    @property
    def arguments(self) -> str:
        """The whole argument text, as a non-streaming response carries it."""
        return "".join(self.argument_chunks)

    @property
    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as the JSON object Anthropic and Ollama carry whole.

        ``{}`` when the text is empty, not valid JSON or not an object (streams still carry the
        raw fragments, so broken arguments remain testable there).
        """
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@final
class ScriptedReply(BaseModel):
    """What one choice of one response contains, in streaming order.

    A server streams reasoning pieces first, then refusal pieces, then text pieces, then the tool
    calls; every piece becomes one delta.

    Attributes:
        text_chunks: Visible content pieces.
        tool_calls: Tool calls, streamed after the text.
        finish_reason: The raw finish reason (``"stop"``, ``"length"``, ``"tool_calls"``, ...).
        usage: Token counts (``prompt_tokens``, ``completion_tokens``, extra provider keys);
            missing counts are computed: prompt tokens from the request, completion tokens as the
            number of streamed pieces.
        refusal_chunks: Refusal pieces (OpenAI ``delta.refusal``).
        reasoning_chunks: Reasoning pieces (``reasoning_content``/``reasoning`` deltas, thinking).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text_chunks: list[str] = Field(default_factory=list)
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    finish_reason: str = "stop"
    usage: dict[str, Any] | None = None
    refusal_chunks: list[str] = Field(default_factory=list)
    reasoning_chunks: list[str] = Field(default_factory=list)

    @classmethod
    def from_text(cls, text: str, **kwargs: Any) -> ScriptedReply:
        """Build a reply whose text is split into word-like pieces that keep their spaces.

        Args:
            text: The whole reply text.
            **kwargs: Other fields of the reply.

        Returns:
            The reply.
        """
        return cls(text_chunks=_PIECE.findall(text), **kwargs)

    @property
    def text(self) -> str:
        """The whole visible text."""
        return "".join(self.text_chunks)

    @property
    def refusal(self) -> str:
        """The whole refusal text."""
        return "".join(self.refusal_chunks)

    @property
    def reasoning(self) -> str:
        """The whole reasoning text."""
        return "".join(self.reasoning_chunks)

    def token_counts(self, prompt_tokens: int) -> tuple[int, int]:
        """Return ``(prompt_tokens, completion_tokens)``, scripted values winning over estimates.

        Args:
            prompt_tokens: The estimate from the request, used unless the script sets one.
        """
        pieces = (
            len(self.text_chunks)
            + len(self.refusal_chunks)
            + len(self.reasoning_chunks)
            + sum(len(call.argument_chunks) for call in self.tool_calls)
        )
        usage = self.usage or {}
        return int(usage.get("prompt_tokens", prompt_tokens)), int(
            usage.get("completion_tokens", pieces)
        )


@final
class Faults(BaseModel):
    """Deviations and failures a local server injects; everything is off by default.

    Event counts (``*_after``) index the data events (NDJSON lines) of a stream, including the
    final end marker (OpenAI's ``[DONE]``, Anthropic's ``message_stop``, Ollama's ``done`` line);
    a count at or past the end applies after the last event.

    Attributes:
        line_ending: Line terminator of the event stream (sse-starlette uses CRLF).
        no_space_after_colon: Write ``data:{...}`` instead of ``data: {...}``.
        comments: Write ``: ping``/``: keep-alive`` comments before every event (and leading blank
            lines before a non-streaming JSON body, as DeepSeek does under load); NDJSON streams
            get an empty line instead.
        bom: Start the event stream with a UTF-8 byte order mark.
        multiline_data: Split each JSON payload over two ``data:`` lines.
        spaced_json: Encode JSON with ``json.dumps`` default separators and ASCII escapes
            (llama-cpp-python) instead of compact UTF-8.
        split_writes: Write the body in pieces of this many bytes (cuts fall inside UTF-8
            sequences and between CR and LF; 1 = every byte boundary). Each event is still
            flushed whole before the next one.
        first_byte_delay: Seconds to wait before sending the status line.
        chunk_delay: Seconds to wait between events.
        stall_after: Stop after this many events and hold the connection until the client leaves.
        disconnect_after: After this many events write half of the next one, then close the
            connection abruptly (no terminating chunk).
        malformed_after: Insert a non-JSON data event after this many events.
        error_event_after: Replace the rest of the stream with an in-stream error event.
        error_event: The object sent under ``"error"`` by ``error_event_after`` (Ollama sends
            its ``"message"`` as the error string).
        done_after_error: Still send the end marker (``[DONE]``) after the in-stream error.
        legacy_error_field: Send the in-stream error as an ``error:`` field line instead of
            ``data:`` (llama.cpp before PR #16109), followed by ``[DONE]``.
        omit_done: Never send the end marker.
        usage_every_chunk: Put cumulative usage on every chunk (vLLM continuous usage stats).
        role_every_chunk: Repeat ``role: "assistant"`` on every delta (older Ollama).
        finish_on_content_chunk: Put the finish reason on the last content delta instead of a
            separate finish chunk (older Ollama, Mistral).
        obfuscation: Add OpenAI's random ``obfuscation`` padding key to every chunk unless the
            request sets ``stream_options.include_obfuscation`` to false.
        reasoning_key: Delta/message key for reasoning text (``reasoning_content`` or
            ``reasoning``).
        http_error: Answer with this HTTP status instead of a completion.
        error_body: Body of the HTTP error: ``None`` for the provider's standard error object,
            a dict to send as JSON verbatim, a string to send as plain text (a proxy page).
        headers: Extra response headers on every response (``retry-after``, ``retry-after-ms``,
            ``x-should-retry``, ``x-ratelimit-*``).
        fail_times: Answer ``http_error`` only for this many requests after (re)scripting, then
            succeed; ``None`` fails every request.
        fastapi_detail_error: Use FastAPI's ``{"detail": ...}`` error body (llama-cpp-python).
        trailing_spaces: Pad every streamed JSON payload with trailing spaces (seen in recorded
            Anthropic streams), so clients must parse JSON rather than slice strings.
        unclosed_last_block: Anthropic: leave the last content block without its
            ``content_block_stop``, as the API does when ``max_tokens`` cuts a tool call.
        omit_tool_call_ids: Ollama: send tool calls without ``id`` and ``function.index``, as
            servers before those fields existed did.
        interleave_tool_calls: OpenAI: alternate the fragments of parallel tool calls (call 0,
            call 1, call 0, ...) instead of streaming one call after the other; the protocol
            allows it, and a client must merge by ``index``, never by arrival.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    line_ending: Literal["\n", "\r\n", "\r"] = "\n"
    no_space_after_colon: bool = False
    comments: bool = False
    bom: bool = False
    multiline_data: bool = False
    spaced_json: bool = False
    split_writes: int | None = Field(default=None, ge=1)
    first_byte_delay: float = Field(default=0.0, ge=0)
    chunk_delay: float = Field(default=0.0, ge=0)
    stall_after: int | None = Field(default=None, ge=0)
    disconnect_after: int | None = Field(default=None, ge=0)
    malformed_after: int | None = Field(default=None, ge=0)
    error_event_after: int | None = Field(default=None, ge=0)
    error_event: dict[str, Any] | None = None
    done_after_error: bool = False
    legacy_error_field: bool = False
    omit_done: bool = False
    usage_every_chunk: bool = False
    role_every_chunk: bool = False
    finish_on_content_chunk: bool = False
    obfuscation: bool = False
    reasoning_key: Literal["reasoning_content", "reasoning"] = "reasoning_content"
    http_error: int | None = Field(default=None, ge=400, le=599)
    error_body: dict[str, Any] | str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    fail_times: int | None = Field(default=None, ge=0)
    fastapi_detail_error: bool = False
    trailing_spaces: bool = False
    unclosed_last_block: bool = False
    omit_tool_call_ids: bool = False
    interleave_tool_calls: bool = False


def estimate_prompt_tokens(messages: Any) -> int:
    """Estimate prompt tokens deterministically: words in every string plus 3 per message.

    Args:
        messages: The request's message list (any JSON value is accepted).
    """

    def words(value: Any) -> int:
        if isinstance(value, str):
            return len(value.split())
        if isinstance(value, dict):
            return sum(words(v) for v in value.values())
        if isinstance(value, list):
            return sum(words(v) for v in value)
        return 0

    count = len(messages) if isinstance(messages, list) else 0
    return words(messages) + 3 * count


def derived_id(
    seed: str, prefix: str, size: int, alphabet: str = string.ascii_lowercase + string.digits
) -> str:
    """Derive a provider-style id from a scripted one: the same seed always gives the same id.

    Args:
        seed: The scripted id.
        prefix: The provider's id prefix (``"toolu_01"``, ``"call_"``).
        size: How many characters follow the prefix.
        alphabet: The characters those are drawn from.
    """
    digest = hashlib.sha256(seed.encode()).digest()
    return prefix + "".join(alphabet[byte % len(alphabet)] for byte in digest[:size])
