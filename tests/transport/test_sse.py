from __future__ import annotations

import itertools
from dataclasses import FrozenInstanceError, dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatstream.errors import ClosedError, StreamProtocolError
from chatstream.transport.sse import Event, SSEDataDecoder, SSEDecoder


def decode(*chunks: bytes) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.close()
    return events


def datas(*chunks: bytes) -> list[str]:
    return [event.data for event in decode(*chunks)]


# --- the edge-case table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param([b"data: a\n\n"], ["a"], id="1-space"),
        pytest.param([b"data:a\n\n"], ["a"], id="2-no-space"),
        pytest.param([b"data:  a\n\n"], [" a"], id="3-only-one-space-removed"),
        pytest.param([b"data: a\r\n\r\n"], ["a"], id="4-crlf"),
        pytest.param([b"data: a\r\rdata: b\r\r"], ["a", "b"], id="5-lone-cr"),
        pytest.param([b"data: a\r", b"\n\r\n"], ["a"], id="6-crlf-split-across-feeds"),
        pytest.param([b'data: {\ndata: "k":1}\n\n'], ['{\n"k":1}'], id="7-multiline-data"),
        pytest.param([b"data\n\n"], [""], id="8-data-without-colon"),
        pytest.param([b"data:\n\n"], [""], id="8-data-empty-value"),
        pytest.param([b"event: ping\n\n"], [], id="9-event-without-data"),
        pytest.param([b": keep-alive\n\n"], [], id="10-comment"),
        pytest.param([b"\xef\xbb\xbfdata: a\n\n"], ["a"], id="11-bom"),
        pytest.param([b"data: a"], [], id="12-unterminated"),
        pytest.param([b"retry: 10x\n"], [], id="15-bad-retry"),
        pytest.param(["data: a\u2028b\n\n".encode()], ["a\u2028b"], id="16-u2028"),
        pytest.param([b'data: {"c":"\xd0', b'\xb8"}\n\n'], ['{"c":"\u0438"}'], id="17-split-utf8"),
        pytest.param([b"data: [DONE]\n\n"], ["[DONE]"], id="18-done"),
        pytest.param([b"data: x\n\n\n\n"], ["x"], id="19-extra-blank-lines"),
        pytest.param([b"foo: bar\n"], [], id="20-unknown-field"),
    ],
)
def test_edge_cases(chunks: list[bytes], expected: list[str]) -> None:
    events = decode(*chunks)
    assert [event.data for event in events] == expected
    assert all(event.event == "message" for event in events)
    assert data_only(chunks) == expected


def data_only(chunks: list[bytes]) -> list[str]:
    decoder = SSEDataDecoder()
    return [data for chunk in [*chunks, None] for data in feed_or_close(decoder, chunk)]


def feed_or_close(decoder: SSEDataDecoder, chunk: bytes | None) -> list[str]:
    return decoder.close() if chunk is None else decoder.feed(chunk)


def test_6_no_phantom_blank_line_between_cr_and_lf() -> None:
    # Had the LF after the split CR counted as a blank line, "a" would dispatch early and the
    # next block would lose its first data line.
    assert datas(b"data: a\r", b"\ndata: b\n\n") == ["a\nb"]
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r\n") == [Event(data="a")]


def test_12_unterminated_event_is_discarded_and_reported() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a") == []
    assert decoder.pending
    assert decoder.close() == []
    assert decoder.pending


def test_14_id_persists_across_events() -> None:
    events = decode(b"id: 7\ndata: a\n\ndata: b\n\n")
    assert events == [Event(data="a", id="7"), Event(data="b", id="7")]


# --- fields ----------------------------------------------------------------------------------


def test_event_type_and_reset_after_dispatch() -> None:
    events = decode(b"event: add\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n")
    assert [(e.event, e.data) for e in events] == [("add", "1"), ("message", "2"), ("message", "3")]


def test_event_type_is_reset_by_a_block_without_data() -> None:
    assert decode(b"event: ping\n\ndata: x\n\n") == [Event(event="message", data="x")]


def test_field_names_are_case_sensitive_and_split_on_the_first_colon() -> None:
    assert decode(b"Data: no\ndata: a: b\n\n") == [Event(data="a: b")]


def test_only_a_space_is_stripped_not_a_tab() -> None:
    assert datas(b"data:\ta\n\n") == ["\ta"]


def test_comment_lines_inside_a_block() -> None:
    assert datas(b"data: a\n: comment\ndata: b\n:\n\n") == ["a\nb"]


def test_empty_id_resets_and_nul_id_is_ignored() -> None:
    events = decode(b"id: 1\ndata: a\n\nid\ndata: b\n\nid: 2\x003\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "", ""]


def test_id_is_none_until_sent() -> None:
    assert decode(b"data: a\n\n") == [Event(data="a", id=None)]


def test_last_event_id_is_committed_only_at_a_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.last_event_id is None
    decoder.feed(b"id: 1\n\n")  # commits even though no event is dispatched
    assert decoder.last_event_id == "1"
    decoder.feed(b"id: 2\ndata: x\n")
    assert decoder.last_event_id == "1"
    decoder.close()
    assert decoder.last_event_id == "1"
    assert decoder.pending


def test_retry() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: 1500\ndata: a\n\ndata: b\n\nretry: 20\n\n")
    assert events == [Event(data="a", retry=1500), Event(data="b", retry=None)]
    assert decoder.retry == 20


@pytest.mark.parametrize(
    "value", [b"10x", b"", b"  5", b"5 ", b"-1", b"1.5", "\u0663".encode(), b"\xc2\xb2"]
)
def test_retry_ignored_unless_all_ascii_digits(value: bytes) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry:" + value + b"\ndata: a\n\n") == [Event(data="a")]
    assert decoder.retry is None


def test_retry_with_too_many_digits_is_ignored() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: " + b"9" * 5000 + b"\ndata: a\n\n") == [Event(data="a")]
    assert decoder.retry is None


def test_retry_keeps_leading_zeros_as_a_number() -> None:
    assert decode(b"retry: 007\ndata: a\n\n") == [Event(data="a", retry=7)]


# --- text decoding and line breaking --------------------------------------------------------


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1e", "\x85"])
def test_only_cr_and_lf_break_lines(char: str) -> None:
    assert datas(f"data: a{char}b\n\n".encode()) == [f"a{char}b"]


def test_bom_split_across_feeds() -> None:
    assert datas(b"\xef", b"\xbb", b"\xbfdata: a\n\n") == ["a"]


def test_only_one_leading_bom_is_dropped() -> None:
    # The second BOM makes the line a field named "\ufeffdata", which is ignored.
    assert datas(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n") == []
    assert datas(b"data: a\n\n\xef\xbb\xbfdata: b\n\ndata: c\n\n") == ["a", "c"]
    assert datas(b"data: a\n\n", b"\xef\xbb\xbfdata: b\n\n") == ["a"]


def test_bom_inside_data_is_kept() -> None:
    assert datas(b"data: \xef\xbb\xbfa\n\n") == ["\ufeffa"]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert datas(b"data: a\xffb\xc3\n\n") == ["a\ufffdb\ufffd"]


def test_four_byte_character_split_every_way() -> None:
    raw = "data: \U0001f600\n\n".encode()
    for cut in range(len(raw) + 1):
        assert datas(raw[:cut], raw[cut:]) == ["\U0001f600"]


def test_truncated_utf8_at_close_counts_as_pending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n\xe2\x82") == [Event(data="a")]
    assert decoder.pending
    decoder.close()
    assert decoder.pending


def test_nothing_pending_after_a_complete_stream_or_a_trailing_cr() -> None:
    for raw in (b"data: a\n\n", b"data: a\r\r", b": comment\n", b""):
        decoder = SSEDecoder()
        decoder.feed(raw)
        decoder.close()
        assert not decoder.pending, raw


def test_byte_by_byte_equals_whole() -> None:
    raw = b'\xef\xbb\xbfid: 1\r\nevent: x\rdata: \xd0\xb8\r\n\r: c\n\ndata: {"a": 1}\n\n'
    expected = decode(raw)
    assert expected == [Event(event="x", data="\u0438", id="1"), Event(data='{"a": 1}', id="1")]
    assert decode(*(raw[i : i + 1] for i in range(len(raw)))) == expected


# --- long lines and limits -------------------------------------------------------------------


def test_ten_megabyte_data_line_in_4k_pieces() -> None:
    payload = b"x" * 10_000_000
    raw = b"data: " + payload + b"\n\n"
    decoder = SSEDecoder()
    events: list[Event] = []
    for start in range(0, len(raw), 4096):
        events += decoder.feed(raw[start : start + 4096])
    assert len(events) == 1
    assert len(events[0].data) == len(payload)
    assert events[0].data == payload.decode()


def test_max_line_length_allows_a_line_of_exactly_the_limit() -> None:
    decoder = SSEDecoder(max_line_length=10)
    assert decoder.feed(b"data: 1234\n\n") == [Event(data="1234")]


def test_max_line_length_rejects_a_complete_long_line() -> None:
    decoder = SSEDecoder(max_line_length=300)
    with pytest.raises(StreamProtocolError) as info:
        decoder.feed(b"data: " + b"y" * 400 + b"\n\n")
    assert info.value.line is not None
    assert info.value.line == ("data: " + "y" * 400)[:200]


def test_max_line_length_rejects_an_unterminated_line_before_it_ends() -> None:
    decoder = SSEDecoder(max_line_length=1000)
    for _ in range(3):
        assert decoder.feed(b"z" * 300) == []
    with pytest.raises(StreamProtocolError) as info:
        decoder.feed(b"z" * 300)
    assert info.value.line == "z" * 200


def test_max_line_length_counts_the_joined_pieces() -> None:
    decoder = SSEDecoder(max_line_length=8)
    decoder.feed(b"data:")
    with pytest.raises(StreamProtocolError):
        decoder.feed(b"1234\n")


# --- lifecycle and the Event type ------------------------------------------------------------


def test_feed_after_close_raises_and_close_is_idempotent() -> None:
    decoder = SSEDecoder()
    assert decoder.close() == []
    assert decoder.close() == []
    with pytest.raises(ClosedError):
        decoder.feed(b"data: a\n\n")


def test_event_is_frozen_and_compares_by_value() -> None:
    event = decode(b"event: e\nid: i\nretry: 3\ndata: d\n\n")[0]
    assert event == Event(event="e", data="d", id="i", retry=3)
    assert event != Event(event="e", data="d", id="i", retry=4)
    assert hash(event) == hash(Event(event="e", data="d", id="i", retry=3))
    with pytest.raises(FrozenInstanceError):
        event.data = "x"  # type: ignore[misc]


# --- property tests --------------------------------------------------------------------------

# Text that may appear inside a line: everything but CR and LF, with the awkward characters
# (multi-byte UTF-8, U+2028, NUL, BOM, colons, spaces) made likely.
_line_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(["a", " ", ":", "\x00", "\u2028", "\ufeff", "\u0438", "\U0001f600"]),
        st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
    ),
    max_size=12,
)


@dataclass(frozen=True)
class Line:
    """A line whose meaning the generator knows, so the model need not parse it."""

    kind: str  # "field", "comment" or "blank"
    name: str = ""
    value: str = ""
    text: str = ""


@st.composite
def field_lines(draw: st.DrawFn) -> tuple[Line, str]:
    name = draw(
        st.one_of(
            st.sampled_from(["data", "data", "event", "id", "retry", "Data", "foo"]),
            # Unknown names: no colon or line break, and no BOM first (it could be the BOM).
            _line_text.filter(lambda s: s and ":" not in s and not s.startswith("\ufeff")),
        )
    )
    value = draw(
        st.from_regex(r"\A[0-9]{1,4}\Z") if name == "retry" and draw(st.booleans()) else _line_text
    )
    separators = [": "] if value.startswith(" ") else [": ", ":"]
    if not value:
        separators.append("")  # a line without colon: the whole line is the name
    separator = draw(st.sampled_from(separators))
    return Line("field", name, value), f"{name}{separator}{value}"


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Line], str | None, bytes]:
    """A stream as meaningful lines, an unterminated tail (or None) and its bytes."""
    lines: list[Line] = []
    out = ["\ufeff"] if draw(st.booleans()) else []
    previous_terminator = ""
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["field", "field", "field", "blank", "comment"]))
        if kind == "field":
            line, raw = draw(field_lines())
        elif kind == "comment":
            raw = ":" + draw(_line_text)
            line = Line("comment")
        else:
            raw = ""
            line = Line("blank")
        terminator = draw(st.sampled_from(["\n", "\r", "\r\n"]))
        if previous_terminator == "\r" and raw == "" and terminator == "\n":
            terminator = "\r\n"  # CR + LF would be read as one terminator, not two
        lines.append(line)
        out += [raw, terminator]
        previous_terminator = terminator
    tail = None
    if draw(st.booleans()):
        tail = draw(_line_text.filter(lambda s: s and not s.startswith("\ufeff")))
        out.append(tail)
    return lines, tail, "".join(out).encode()


@dataclass
class Outcome:
    events: list[Event]
    last_event_id: str | None
    retry: int | None
    pending: bool


def reference(lines: list[Line], tail: str | None) -> Outcome:
    """The WHATWG algorithm written literally, over lines already split and parsed."""
    events: list[Event] = []
    data = event_type = ""
    id_buffer: str | None = None
    last_event_id: str | None = None
    retry: int | None = None
    block_retry: int | None = None
    dirty = False
    for line in lines:
        if line.kind == "blank":
            last_event_id = id_buffer
            if data != "":
                if data.endswith("\n"):
                    data = data[:-1]
                events.append(Event(event_type or "message", data, id_buffer, block_retry))
            data = event_type = ""
            block_retry = None
            dirty = False
        elif line.kind == "field":
            dirty = True
            if line.name == "data":
                data += line.value + "\n"
            elif line.name == "event":
                event_type = line.value
            elif line.name == "id" and "\x00" not in line.value:
                id_buffer = line.value
            elif line.name == "retry" and line.value and set(line.value) <= set("0123456789"):
                retry = block_retry = int(line.value)
    return Outcome(events, last_event_id, retry, dirty or tail is not None)


def run(chunks: list[bytes]) -> Outcome:
    decoder = SSEDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.close()
    return Outcome(events, decoder.last_event_id, decoder.retry, decoder.pending)


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(streams())
def test_matches_reference_model(stream: tuple[list[Line], str | None, bytes]) -> None:
    lines, tail, raw = stream
    assert run([raw]) == reference(lines, tail)


@settings(max_examples=300, deadline=None)
@given(stream=streams(), data=st.data())
def test_any_split_of_a_stream_gives_the_same_result(
    stream: tuple[list[Line], str | None, bytes], data: st.DataObject
) -> None:
    lines, tail, raw = stream
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    expected = reference(lines, tail)
    assert run(split(raw, cuts)) == expected
    # The data decoder interprets alike: the same events, each as its data alone.
    assert data_only(split(raw, cuts)) == [event.data for event in expected.events]


# Byte soup from the tokens that matter, including invalid and partial UTF-8, so that splits
# land between CR and LF, inside sequences and around the BOM.
_tokens = st.sampled_from(
    [
        *(b"data:", b"data: ", b"id:", b"event:", b"retry:", b":", b" ", b"x", b"7"),
        *(b"\r", b"\n", b"\r\n", b"\xef\xbb\xbf", b"\xe2\x80\xa8", b"\xd0", b"\xb8"),
        *(b"\xf0\x9f\x98", b"\xff", b"\x00"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(_tokens, max_size=60), data=st.data())
def test_any_split_of_arbitrary_bytes_gives_the_same_result(
    tokens: list[bytes], data: st.DataObject
) -> None:
    raw = b"".join(tokens)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20))
    whole = run([raw])
    assert run(split(raw, cuts)) == whole
    assert run([raw[i : i + 1] for i in range(len(raw))]) == whole
    assert data_only(split(raw, cuts)) == [event.data for event in whole.events]
