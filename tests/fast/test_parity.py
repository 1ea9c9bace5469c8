"""With msgspec decoding, `_json.loads` answers exactly as ``json.loads``: values and errors."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatstream import _json

CHUNK = (
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    '"choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}'
)

VALID = [
    CHUNK,
    '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" hi"}}',
    '{"model":"m","message":{"content":"caf\\u00e9 \\ud83d\\ude00"},"done":false}',
    '"\u00e9t\u00e9 \u4f60\u597d \U0001f600"',  # raw non-ASCII
    r'"\" \\ \/ \b \f \n \r \t \u0000 \u001f \u2028"',  # every escape
    '"\x7f"',
    "NaN",
    "[NaN, Infinity, -Infinity]",
    '{"logprob": -Infinity}',
    "1e400",
    "-1e400",
    "1.5e-400",
    "5e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "0.1",
    "1E2",
    "-0",
    "-0.0",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",  # past int64: orjson would give a float here
    "18446744073709551615",
    "18446744073709551616",  # past uint64: orjson would give a float here too
    "123456789012345678901234567890",
    "-" + "9" * 4300,  # the int digit limit is 4300: the stdlib accepts this one
    "123456789012345678901234567890.5",
    '"\\ud800"',  # a lone surrogate, escaped
    '"\\udc00x"',
    '"\ud800"',  # a lone surrogate, raw in the text
    '{"a": 1, "b": 2, "a": 3}',  # duplicate keys: the last value, at the first key's place
    '{"a": {"x": 1}, "a": [2]}',
    ' {"a": 1} ',
    "\t\n\r [1, 2] \r\n",
    "[" * 200 + "]" * 200,
    "true",
    "null",
    "{}",
    "[]",
    '""',
]

INVALID = [
    "",
    " ",
    "[DONE]",
    "nul",
    "True",
    "[1,]",
    '{"a":1,}',
    '{"a" 1}',
    '{"a":1}x',
    '{"a":1} {"b":2}',
    "01",
    "-",
    "1.",
    ".5",
    "1e",
    "NaNx",
    "infinity",
    '"\x01"',  # a raw control character
    '"abc',
    '"\\x"',
    '"\\u12"',
    "\ufeff{}",  # a byte order mark
    "\x0c1",
    "{'a': 1}",
    "9" * 4301,  # over the int digit limit: a ValueError, not a JSONDecodeError
    "[" * 100_000 + "]" * 100_000,  # RecursionError
]


def same(a: Any, b: Any) -> bool:
    """Equal, with equal types all the way down, keys in the same order, and NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)  # tells -0.0 from 0.0, and NaN from anything but NaN
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def outcome(decode: Any, data: str) -> tuple[str, Any]:
    """What ``decode(data)`` gives: its value, or everything that describes its error."""
    try:
        return "value", decode(data)
    except RecursionError as exc:  # its text names the depth reached: only the type counts
        return "error", (RecursionError, exc.__context__, exc.__cause__)
    except ValueError as exc:
        return "error", (
            type(exc),
            exc.args,
            [getattr(exc, name, None) for name in ("msg", "doc", "pos", "lineno", "colno")],
            type(exc.__context__),
            type(exc.__cause__),
            exc.__suppress_context__,
        )


def assert_parity(data: str) -> None:
    expected = outcome(json.loads, data)
    got = outcome(_json.loads, data)
    assert got[0] == expected[0], (data[:80], got, expected)
    if expected[0] == "value":
        assert same(got[1], expected[1]), (data[:80], got, expected)
    else:
        assert got[1] == expected[1], (data[:80], got, expected)


def test_msgspec_is_the_decoder() -> None:
    assert _json.get_decoder() == "msgspec"


def test_a_plain_chunk_is_decoded_by_msgspec(monkeypatch: pytest.MonkeyPatch) -> None:
    # Otherwise every parity test below would pass on the stdlib alone.
    def fail(data: str, index: int) -> Any:
        raise AssertionError("the stdlib scanner ran")

    monkeypatch.setattr(_json, "_scan", fail)
    assert _json.loads(CHUNK)["choices"][0]["delta"]["content"] == "tok"


@pytest.mark.parametrize("data", VALID, ids=lambda data: repr(data[:30]))
def test_valid_documents_decode_as_json_loads_does(data: str) -> None:
    assert_parity(data)


@pytest.mark.parametrize("data", INVALID, ids=lambda data: repr(data[:30]))
def test_invalid_documents_raise_what_json_loads_raises(data: str) -> None:
    assert_parity(data)


@pytest.mark.parametrize(
    "data", ["NaN", "9" * 5000, '"\\ud800"', "1e400", "-" + "9" * 4300, "[1,]"]
)
def test_msgspec_refuses_what_it_would_read_otherwise(data: str) -> None:
    # The fallback rests on msgspec refusing these rather than reading them its own way.
    with pytest.raises(ValueError):  # noqa: PT011  # msgspec's own error classes vary
        msgspec.json.decode(data)


@pytest.mark.parametrize("data", ['{"a": [1,]}', "[DONE]", "NaNx"])
def test_an_error_carries_no_trace_of_msgspec(data: str) -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        _json.loads(data)
    chain: BaseException | None = caught.value
    while chain is not None:
        assert not isinstance(chain, msgspec.MsgspecError), repr(chain)
        chain = chain.__context__


# -- generated documents -------------------------------------------------------------------------

_ANY_CHAR = st.characters(codec=None, exclude_categories=())
"""Every code point, lone surrogates included (hypothesis leaves those out by default)."""
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and the infinities included
    | st.text(_ANY_CHAR, max_size=20)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(_ANY_CHAR, max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
_SPACE = st.text(st.sampled_from(" \t\r\n"), max_size=3)


@st.composite
def _documents(draw: st.DrawFn) -> str:
    text = json.dumps(
        draw(_VALUES),
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")])),
        indent=draw(st.none() | st.integers(0, 2)),
    )
    return draw(_SPACE) + text + draw(_SPACE)


@st.composite
def _numbers(draw: st.DrawFn) -> str:
    """Number literals with up to 41 digits a part: exact ints, and floats that round hard."""
    sign = draw(st.sampled_from(["", "-"]))
    whole = str(draw(st.integers(min_value=0, max_value=10**41)))
    fraction = draw(st.none() | st.text("0123456789", min_size=1, max_size=40))
    exponent = draw(st.none() | st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"])))
    text = sign + whole + ("" if fraction is None else "." + fraction)
    if exponent is not None:
        text += "".join(exponent) + str(draw(st.integers(min_value=0, max_value=400)))
    return text


_JSONISH = st.text(st.sampled_from('[]{}":,. 0123456789-+eEtruefalsnNIiy\\u"'), max_size=30)
"""Mostly broken documents, built from the characters JSON is made of."""


@settings(max_examples=400, deadline=None)
@given(_documents())
def test_generated_documents_decode_as_json_loads_does(data: str) -> None:
    assert_parity(data)


@settings(max_examples=400, deadline=None)
@given(_numbers())
def test_generated_numbers_decode_as_json_loads_does(data: str) -> None:
    assert_parity(data)
    assert_parity(f'{{"n": [{data}]}}')


@settings(max_examples=400, deadline=None)
@given(_JSONISH | st.text(_ANY_CHAR, max_size=30))
def test_generated_text_decodes_or_fails_as_json_loads_does(data: str) -> None:
    assert_parity(data)


def test_same_tells_apart_what_it_must() -> None:
    # The comparison itself can fail: types, zero signs, NaN, key order.
    assert not same(1, 1.0)
    assert not same(0.0, -0.0)
    assert same(math.nan, math.nan)
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not same([True], [1])
