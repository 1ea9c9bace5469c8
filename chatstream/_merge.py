"""Pure merge rules for streamed values: content, metadata dicts, tool-call fragments, usage.

Every function here returns new containers and never mutates its arguments, and every rule is
associative, so ``(a + b) + c == a + (b + c)`` holds for chunks built on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import InputTypeError

__all__ = ["LAST_WINS_KEYS", "merge_content", "merge_dicts", "merge_indexed", "merge_usage"]

LAST_WINS_KEYS = frozenset(
    {
        "finish_reason",
        "stop_reason",
        "stop_sequence",
        "model_name",
        "model",
        "id",
        "system_fingerprint",
        "service_tier",
        "request_id",
        "role",
        "type",
        "name",
        "index",
        "created",
    }
)
"""Keys that name a thing rather than stream text: the last non-empty value wins.

Concatenating them would turn a model name repeated on every chunk into ``"gpt-4ogpt-4o"``.
"""

Content = str | list[dict[str, Any]]


def _kind(value: Any) -> type:
    if isinstance(value, bool):
        return bool
    if isinstance(value, (int, float)):
        return float
    if isinstance(value, Mapping):
        return dict
    return list if isinstance(value, list) else type(value)


def _merge_value(key: str, left: Any, right: Any) -> Any:
    if right is None or (right == "" and key in LAST_WINS_KEYS):
        return left
    if left is None:
        return right
    if _kind(left) is not _kind(right):
        # No rule for mixed kinds is associative (dict then str then dict depends on grouping),
        # so a stream that changes a value's kind is refused rather than merged inconsistently.
        raise InputTypeError(
            f"cannot merge a {type(left).__name__} with a {type(right).__name__}", where=key
        )
    if isinstance(left, str):
        return right if key in LAST_WINS_KEYS else left + right
    if isinstance(left, Mapping):
        return merge_dicts(left, right)
    if isinstance(left, list):
        return merge_indexed(left, right)
    return right


def merge_dicts(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two metadata dicts.

    Strings concatenate (except the keys in `LAST_WINS_KEYS`), dicts merge recursively, lists
    merge by their elements' ``index``, ``None`` never overwrites, and any other value is replaced
    by the right one.

    Raises:
        InputTypeError: a key holds values of different kinds (a str and a dict, say).
    """
    if not right:
        return dict(left)
    if not left:
        return dict(right)
    merged = dict(left)
    for key, value in right.items():
        merged[key] = _merge_value(key, merged[key], value) if key in merged else value
    return merged


def _index_of(item: Any) -> Any:
    return item.get("index") if isinstance(item, Mapping) else None


def merge_indexed(left: Sequence[Any], right: Sequence[Any]) -> list[Any]:
    """Concatenate two lists, merging dict elements that share an ``index`` key.

    This is how streamed fragments of one element (a tool call, a content block) find each other:
    an element whose ``index`` was seen before is merged into it, any other is appended.
    """
    merged = list(left)
    positions = {
        idx: pos for pos, item in enumerate(merged) if (idx := _index_of(item)) is not None
    }
    for item in right:
        idx = _index_of(item)
        pos = positions.get(idx) if idx is not None else None
        if pos is not None and isinstance(merged[pos], Mapping):
            merged[pos] = merge_dicts(merged[pos], item)
        else:
            if idx is not None:
                positions[idx] = len(merged)
            merged.append(item)
    return merged


def _is_plain_text(block: Any) -> bool:
    return (
        isinstance(block, Mapping) and block.keys() == {"type", "text"} and block["type"] == "text"
    )


def _as_blocks(content: Content) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def merge_content(parts: Iterable[Content]) -> Content:
    """Concatenate streamed contents: strings join; block lists merge.

    Blocks with an ``index`` merge with the earlier block of that index; adjacent plain text
    blocks (only ``type`` and ``text``) coalesce, so a string followed by text blocks reads the
    same however the stream was cut. All-string input stays a string.
    """
    items = list(parts)
    if all(isinstance(part, str) for part in items):
        return "".join(items)  # type: ignore[arg-type]  # every part was just checked to be a str
    merged: list[dict[str, Any]] = []
    positions: dict[Any, int] = {}
    for part in items:
        for block in _as_blocks(part):
            idx = _index_of(block)
            if idx is not None and idx in positions:
                merged[positions[idx]] = merge_dicts(merged[positions[idx]], block)
            elif idx is None and _is_plain_text(block) and merged and _is_plain_text(merged[-1]):
                merged[-1] = {"type": "text", "text": merged[-1]["text"] + block["text"]}
            else:
                if idx is not None:
                    positions[idx] = len(merged)
                merged.append(dict(block))
    return merged


def merge_usage(
    usages: Iterable[Mapping[str, Any] | None],
) -> dict[str, Any] | None:
    """Sum token counts (nested detail dicts too); ``None`` when no part had usage."""
    total: dict[str, Any] | None = None
    for usage in usages:
        if usage is None:
            continue
        total = _sum_counts(total or {}, usage)
    return total


def _sum_counts(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(left)
    for key, value in right.items():
        if key not in merged:
            merged[key] = dict(value) if isinstance(value, Mapping) else value
        elif isinstance(value, Mapping):
            merged[key] = _sum_counts(merged[key], value)
        else:
            merged[key] = merged[key] + value
    return merged
