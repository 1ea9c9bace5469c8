"""The JSON decoder of every stream: the stdlib's C scanner, or msgspec (``chatstream[fast]``).

Whichever decodes, a document gives exactly what ``json.loads`` gives, or raises its error.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ENV_VAR", "Decoder", "get_decoder", "loads", "set_decoder"]

Decoder = Literal["stdlib", "msgspec"]
"""The decoders ``CHATSTREAM_JSON`` and `set_decoder` can name."""

ENV_VAR = "CHATSTREAM_JSON"
"""Names the decoder (``stdlib`` or ``msgspec``); unset or empty, msgspec when it is installed."""

_FAST_EXTRA = "pip install 'chatstream[fast]'"

_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set by __init__; typeshed omits it


def _named(value: str, label: str) -> Decoder:
    if value == "stdlib":
        return "stdlib"
    if value == "msgspec":
        return "msgspec"
    raise ValueError(f"{label} names no JSON decoder: use 'stdlib' or 'msgspec'")


def _from_env() -> Decoder | None:
    value = os.environ.get(ENV_VAR, "").strip()
    return _named(value, f"{ENV_VAR}={value!r}") if value else None


_wanted: Decoder | None = _from_env()
"""The decoder asked for (by the environment, then by `set_decoder`); ``None`` for the default."""
_chosen: Decoder | None = None
"""The decoder in use; ``None`` until the first decode chooses one (msgspec is imported then)."""
_fast: Callable[[str], Any] | None = None
"""msgspec's decode while msgspec is in use."""


def loads(data: str) -> Any:
    """``json.loads(data)``: the same value, or the same error.

    msgspec, when in use, decodes first. What it refuses (NaN and Infinity, lone surrogates,
    numbers past the float range or with thousands of digits, which ``json.loads`` accepts,
    and invalid JSON) is decoded by the stdlib, so that its value or its error is the answer.
    """
    fast = _fast
    if fast is not None:
        try:
            return fast(data)
        except (ValueError, RecursionError):  # msgspec.DecodeError, UnicodeEncodeError
            pass  # the stdlib decides, outside the handler: its error carries no msgspec context
    elif _chosen is None:
        _choose()
        return loads(data)
    # The C scanner alone: json.loads adds two wrapper calls and two regex matches per event.
    try:
        value, end = _scan(data, 0)
    except StopIteration:
        end = -1
    if end != len(data):  # leading or trailing whitespace, junk, or not JSON: the full path
        return json.loads(data)
    return value


def get_decoder() -> Decoder:
    """The decoder in use, choosing it now if nothing was decoded yet."""
    return _chosen or _choose()


def set_decoder(name: Decoder | None = None) -> Decoder:
    """Decode JSON with ``name`` from now on, in every stream of the process.

    For benchmarks and tests; applications choose with the ``CHATSTREAM_JSON`` environment
    variable. Both decoders give the same values and errors: only the speed differs.

    Args:
        name: ``"stdlib"``, ``"msgspec"``, or ``None`` for the default (``CHATSTREAM_JSON``,
            read again; unset, msgspec when installed, else the stdlib).

    Returns:
        The decoder now in use.

    Raises:
        ImportError: ``"msgspec"`` was asked for (here or by ``CHATSTREAM_JSON``) but is not
            installed; the decoder in use stays as it was.
        ValueError: ``name`` (or ``CHATSTREAM_JSON``) names no decoder.
    """
    global _wanted
    wanted = _from_env() if name is None else _named(name, f"set_decoder({name!r})")
    previous = _wanted
    _wanted = wanted
    try:
        return _choose()
    except ImportError:
        _wanted = previous
        raise


def _choose() -> Decoder:
    global _chosen, _fast
    fast: Callable[[str], Any] | None = None
    if _wanted != "stdlib":
        try:
            import msgspec.json
        except ImportError as exc:
            if _wanted == "msgspec":
                raise ImportError(
                    f"the msgspec JSON decoder was asked for ({ENV_VAR}=msgspec or "
                    f"set_decoder('msgspec')) but msgspec is not installed: {_FAST_EXTRA}",
                    name="msgspec",
                ) from exc
        else:
            fast = msgspec.json.Decoder().decode
    _fast = fast
    _chosen = "stdlib" if fast is None else "msgspec"
    return _chosen
