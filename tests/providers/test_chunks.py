"""The unvalidated chunk builder gives exactly what validation gives."""

from __future__ import annotations

from typing import Any

import pytest

from chatstream.messages import AIMessageChunk, ToolCallChunk
from chatstream.providers._chunks import (
    _FAST_CHUNKS,
    _build_chunk,
    _same_chunk,
    _validated_chunk,
    new_chunk,
)
from chatstream.providers._common import usage_metadata

CALL = ToolCallChunk(name="f", args='{"a"', id="c1", index=0)


def test_the_fast_path_is_on() -> None:
    assert _FAST_CHUNKS


@pytest.mark.parametrize(
    "fields",
    [
        ("", None, [], {}, {}),
        ("Zoë", "chatcmpl-1", [], {}, {}),
        ("", "x", [CALL], {"refusal": "no"}, {"finish_reason": "stop", "choice_index": 1}),
        ("", None, [], {}, {}, usage_metadata(7, 3)),
        ("", None, [], {}, {}, usage_metadata(7, 3, input_details={"cache_read": 2})),
    ],
)
def test_built_equals_validated(fields: tuple[Any, ...]) -> None:
    built, validated = _build_chunk(*fields), _validated_chunk(*fields)
    assert _same_chunk(built, validated)
    assert (built + validated).content == validated.content * 2
    assert built.to_message() == validated.to_message()


def test_non_text_content_is_validated() -> None:
    blocks = [{"type": "text", "text": "a"}]
    chunk = new_chunk(blocks, None, [], {}, {})
    assert isinstance(chunk, AIMessageChunk)
    assert chunk.content == blocks


def test_a_usage_chunk_adds_up_like_a_validated_one() -> None:
    usage = usage_metadata(7, 3)
    built = new_chunk("", None, [], {}, {}, usage)
    assert built.usage_metadata == usage
    assert "usage_metadata" in built.model_fields_set
    total = new_chunk("a", None, [], {}, {}) + built + built
    assert total.usage_metadata == usage_metadata(14, 6)
