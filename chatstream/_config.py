"""Checks of what a caller configures: a call's ``config`` and a model's constructor settings.

Both fail with a typed error that names the bad key and, where one is close, the right one.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from .callbacks import check_handlers
from .errors import InputTypeError, InvalidInputError, InvalidParameterError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["LANGCHAIN_NAMES", "check_config", "unknown_setting"]

_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "run_name": str,
    "run_id": uuid.UUID,
    "tags": list,
    "metadata": dict,
    "callbacks": (list, tuple),
    "max_concurrency": (int, type(None)),
    "cache": bool,
}
"""The keys of `chatstream.model.RunConfig` and the types their values must have."""

LANGCHAIN_NAMES = {
    "openai_api_key": "api_key",
    "anthropic_api_key": "api_key",
    "api_key_env": "api_key",
    "model_name": "model",
    "openai_api_base": "base_url",
    "openai_organization": "organization",
    "anthropic_api_url": "base_url",
    "request_timeout": "timeout",
    "max_tokens_to_sample": "max_tokens",
    "num_predict": "max_tokens",
    "stop_sequences": "stop",
    "model_kwargs": "extra_body",
}
"""LangChain's names for settings that chatstream spells otherwise. They are not accepted as
aliases, so that each setting has one name in code, traces and docs; the error teaches it."""


def check_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config`` itself, once every key and value is one a `RunConfig` may have.

    Raises:
        InvalidInputError: An unknown key (the closest known one is suggested).
        InputTypeError: A value of the wrong type (``callbacks="nope"``).
    """
    if not isinstance(config, dict):
        raise InputTypeError(f"expected a dict, got {type(config).__name__}", where="config")
    for key, value in config.items():
        expected = _CONFIG_TYPES.get(key)
        if expected is None:
            import difflib  # only on a typo: `import chatstream` need not load difflib

            close = difflib.get_close_matches(str(key), _CONFIG_TYPES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidInputError(
                f"unknown config key {key!r}{hint} (known: {', '.join(_CONFIG_TYPES)})",
                where="config",
            )
        if key == "callbacks":
            check_handlers(value, "config['callbacks']")
        elif not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise InputTypeError(
                f"config[{key!r}] must be {_names(expected)}, got {type(value).__name__}",
                where=f"config[{key!r}]",
            )
    return config


def unknown_setting(owner: str, key: str, fields: Mapping[str, Any]) -> InvalidParameterError:
    """The error for a constructor argument ``key`` that ``owner`` has no field for."""
    import difflib  # only on a typo: `import chatstream` need not load difflib

    right = LANGCHAIN_NAMES.get(key)
    if right is not None and right in fields:
        hint = f"; chatstream calls it {right!r}"
    elif close := difflib.get_close_matches(key, list(fields), n=1):
        hint = f"; did you mean {close[0]!r}?"
    else:
        hint = ""
    return InvalidParameterError(f"{owner} has no setting {key!r}{hint}", where=key)


def _names(expected: type | tuple[type, ...]) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join("None" if kind is type(None) else kind.__name__ for kind in kinds)
