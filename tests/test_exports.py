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


# What `import chatstream` must not load: the transport (aiohttp), tracing (sqlite3), optional
# extras, modules only an error path or a repr needs, and pydantic's plugin discovery, which
# starts with the first validator built (importlib.metadata, then every installed
# distribution's entry points).
_NOT_AT_IMPORT = (
    "aiohttp",
    "chatstream.tracing",
    "chatstream.transport",
    "chatstream.providers",
    "sqlite3",
    "jsonpatch",
    "logging",
    "difflib",
    "pprint",
    "llama_cpp",
    "opentelemetry",
    "pydantic.plugin._loader",
    "importlib.metadata",
)

_IMPORT_PROBE = """
import sys, pydantic, chatstream
print([m for m in sys.argv[1:] if m in sys.modules])
print(sorted({
    f"{value.__module__}.{value.__qualname__}"
    for name, module in list(sys.modules.items()) if name.startswith("chatstream")
    for value in vars(module).values()
    if isinstance(value, type) and issubclass(value, pydantic.BaseModel)
    and value.__pydantic_complete__
}))
print(chatstream.Timeout.__name__, "aiohttp" in sys.modules)
"""


def test_import_loads_no_transport_tracing_extras_or_validators() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, *_NOT_AT_IMPORT],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded, built, lazy = out.stdout.splitlines()
    assert loaded == "[]"
    assert built == "[]"  # every model class builds its validator on first use
    assert lazy == "Timeout True"  # the lazy names still resolve


def test_deferred_models_build_on_first_use() -> None:
    from chatstream.providers.fake import FakeChatModel

    # Only the abstract base defers: a subclass is built (and checked) when it is defined.
    assert FakeChatModel.__pydantic_complete__
    assert "defer_build" not in BaseChatModel.model_config
    generation = chatstream.ChatGeneration(message=chatstream.AIMessage("hi"))
    assert generation.text == "hi"
    result = chatstream.LLMResult(generations=[[generation]])
    assert chatstream.LLMResult.model_validate(result.model_dump()) == result
    prompt = chatstream.ChatPromptTemplate.from_messages([("human", "{x}")])
    assert prompt.format_messages(x="hi") == [chatstream.HumanMessage("hi")]
