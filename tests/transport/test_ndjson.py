from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatstream.errors import ClosedError, StreamProtocolError
from chatstream.transport.ndjson import NDJSONDecoder


def decode(*chunks: bytes, max_line_length: int | None = None) -> list[Any]:
    decoder = NDJSONDecoder(max_line_length=max_line_length)
    values: list[Any] = []
    for chunk in chunks:
        values += decoder.feed(chunk)
    values += decoder.close()
    return values


def test_values_are_returned_as_their_lines_complete() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a": 1}\n{"b"') == [{"a": 1}]
    assert decoder.feed(b": [2, 3]}\n") == [{"b": [2, 3]}]
    assert decoder.feed(b"") == []
    assert decoder.close() == []


def test_every_json_type_per_line() -> None:
    assert decode(b'1\n"s"\nnull\ntrue\n[1, {"x": 2.5}]\n{}\n') == [
        1,
        "s",
        None,
        True,
        [1, {"x": 2.5}],
        {},
    ]


def test_crlf_is_tolerated() -> None:
    assert decode(b'{"a": 1}\r\n{"b": 2}\r\n') == [{"a": 1}, {"b": 2}]


def test_crlf_split_between_cr_and_lf() -> None:
    assert decode(b'{"a": 1}\r', b'\n{"b": 2}\r', b"\n") == [{"a": 1}, {"b": 2}]


def test_blank_and_whitespace_lines_are_skipped() -> None:
    assert decode(b'\n\n{"a": 1}\n \t \r\n\r\n\n2\n\n') == [{"a": 1}, 2]


def test_last_line_without_newline_is_parsed_at_close() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a": 1}\n{"done": true}') == [{"a": 1}]
    assert decoder.close() == [{"done": True}]


def test_last_line_with_crlf_but_no_more() -> None:
    assert decode(b'{"a": 1}\r') == [{"a": 1}]


def test_close_is_idempotent_and_feed_after_close_raises() -> None:
    decoder = NDJSONDecoder()
    decoder.feed(b"1")
    assert decoder.close() == [1]
    assert decoder.close() == []
    with pytest.raises(ClosedError):
        decoder.feed(b"2\n")


def test_multibyte_character_split_every_way() -> None:
    raw = '{"c": "\u0438\U0001f600"}\n'.encode()
    for cut in range(len(raw) + 1):
        assert decode(raw[:cut], raw[cut:]) == [{"c": "\u0438\U0001f600"}]


def test_line_separators_inside_strings_do_not_split() -> None:
    assert decode('{"t": "a\u2028b\u2029c\x85d"}\n'.encode()) == [{"t": "a\u2028b\u2029c\x85d"}]


def test_leading_bom_is_dropped_once() -> None:
    assert decode(b"\xef", b"\xbb\xbf1\n2\n") == [1, 2]
    with pytest.raises(StreamProtocolError):
        decode(b"1\n\xef\xbb\xbf2\n")
    with pytest.raises(StreamProtocolError):
        decode(b"1\n", b"\xef\xbb\xbf2\n")


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert decode(b'{"s": "a\xffb"}\n') == [{"s": "a\ufffdb"}]


def test_truncated_utf8_at_close_is_invalid_json() -> None:
    with pytest.raises(StreamProtocolError) as info:
        decode(b'1\n"\xe2\x82')
    assert info.value.line == '"\ufffd'


def test_invalid_json_raises_with_the_line() -> None:
    decoder = NDJSONDecoder()
    with pytest.raises(StreamProtocolError) as info:
        decoder.feed(b'{"a": 1}\n{"a": \n')
    assert info.value.line == '{"a": '


def test_invalid_json_excerpt_is_at_most_200_characters() -> None:
    line = "[" + "1," * 500
    with pytest.raises(StreamProtocolError) as info:
        decode(line.encode() + b"\n")
    assert info.value.line == line[:200]


def test_invalid_last_line_raises_at_close() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b"1\nnot json") == [1]
    with pytest.raises(StreamProtocolError) as info:
        decoder.close()
    assert info.value.line == "not json"


@pytest.mark.parametrize("line", [b"[" * 100_000, b"1" * 5000, b"1 2", b"{'a': 1}"])
def test_other_invalid_lines(line: bytes) -> None:
    with pytest.raises(StreamProtocolError):
        decode(line + b"\n")


def test_ten_megabyte_line_in_4k_pieces() -> None:
    payload = "y" * 10_000_000
    raw = json.dumps({"text": payload}).encode() + b"\n"
    decoder = NDJSONDecoder()
    values: list[Any] = []
    for start in range(0, len(raw), 4096):
        values += decoder.feed(raw[start : start + 4096])
    assert len(values) == 1
    assert values[0]["text"] == payload


def test_max_line_length_allows_exactly_the_limit_with_or_without_cr() -> None:
    assert decode(b"[1,2,3]\n", max_line_length=7) == [[1, 2, 3]]
    assert decode(b"[1,2,3]\r\n", max_line_length=7) == [[1, 2, 3]]
    assert decode(b"[1,2,3]\r", b"\n", max_line_length=7) == [[1, 2, 3]]
    assert decode(b"[1,2,3]", max_line_length=7) == [[1, 2, 3]]


@pytest.mark.parametrize(
    "chunks", [[b"[1,2,3,4]\n"], [b"[1,2,", b"3,4]\n"], [b"[1,2,3,4]"], [b"[1,2,3,4]\r\n"]]
)
def test_max_line_length_rejects_a_longer_line(chunks: list[bytes]) -> None:
    with pytest.raises(StreamProtocolError) as info:
        decode(*chunks, max_line_length=7)
    assert info.value.line is not None
    assert info.value.line.startswith("[1,2,3,4]")


def test_max_line_length_rejects_an_unterminated_line_before_it_ends() -> None:
    decoder = NDJSONDecoder(max_line_length=1000)
    assert decoder.feed(b'"' + b"z" * 900) == []
    with pytest.raises(StreamProtocolError) as info:
        decoder.feed(b"z" * 300)
    assert info.value.line == '"' + "z" * 199


# --- property tests --------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def ndjson_streams(draw: st.DrawFn) -> tuple[list[Any], bytes]:
    values = draw(st.lists(_json_values, max_size=10))
    out: list[str] = []
    for value in values:
        out.append("\n" * draw(st.integers(0, 2)))  # blank lines are skipped
        ascii_only = draw(st.booleans())
        out.append(json.dumps(value, ensure_ascii=ascii_only))
        out.append(draw(st.sampled_from(["\n", "\r\n"])))
    drop_last_newline = draw(st.booleans())
    if values and drop_last_newline:
        out.pop()  # the last newline may be missing
    return values, "".join(out).encode()


@settings(max_examples=300, deadline=None)
@given(stream=ndjson_streams(), data=st.data())
def test_any_split_yields_the_encoded_values(
    stream: tuple[list[Any], bytes], data: st.DataObject
) -> None:
    values, raw = stream
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    bounds = [0, *cuts, len(raw)]
    assert decode(*(raw[a:b] for a, b in itertools.pairwise(bounds))) == values
