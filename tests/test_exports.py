from __future__ import annotations

import inspect
import subprocess
import sys

import chatstream
from chatstream import BaseChatModel, BaseMessage, CallbackHandler, PromptValue, RunObserver


def test_all_is_sorted_and_complete() -> None:
    assert chatstream.__all__ == sorted(chatstream.__all__)
    # Some names are re-exported lazily (chatstream._LAZY): the transport loads aiohttp.
    public = {name for name in vars(chatstream) if not name.startswith("_")} | set(chatstream._LAZY)
    modules = {name for name in public if inspect.ismodule(getattr(chatstream, name))}
    assert set(chatstream.__all__) == public - modules


def test_concrete_public_classes_are_final() -> None:
    documented_bases = {BaseChatModel, BaseMessage, PromptValue, CallbackHandler, RunObserver}
    for name in chatstream.__all__:
        obj = getattr(chatstream, name)
        if not inspect.isclass(obj) or obj in documented_bases:
            continue
        if issubclass(obj, BaseException) or _is_typeddict(obj):
            continue  # exceptions are meant to be subclassed; TypedDicts cannot be final
        assert getattr(obj, "__final__", False), f"{name} is neither @final nor a documented base"


def _is_typeddict(obj: type) -> bool:
    return hasattr(obj, "__required_keys__")


def test_import_loads_no_transport_tracing_or_extras() -> None:
    code = (
        "import sys, chatstream; "
        "bad = [m for m in ('aiohttp', 'chatstream.tracing', 'chatstream.transport', "
        "'llama_cpp', 'opentelemetry') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
