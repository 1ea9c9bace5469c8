"""The local servers' framing and the client decoders agree: any framing, any line-ending mix,
any split gives the same events.

``tests/transport/test_sse.py`` checks `SSEDecoder` against a reference model (any split, a
terminator drawn per line) and ``test_ndjson.py`` checks any split with LF or CRLF lines. What
is added here is the contract between the two sides: the bytes the servers' writers produce
under every framing fault (``line_ending``, ``no_space_after_colon``, ``multiline_data``,
``comments``, ``bom``, ``trailing_spaces``, ``spaced_json``), with line endings then mixed
line by line, decode to exactly the payloads the server meant to send.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatstream.testing._ndjson_writer import encode_line
from chatstream.testing._script import Faults, ScriptedReply
from chatstream.testing._sse_writer import SSEEvent, comment_event, dump_json, encode_event
from chatstream.testing.openai_server import OpenAIServer
from chatstream.transport.ndjson import NDJSONDecoder
from chatstream.transport.sse import SSEDecoder

from ._providers import KEY, PROVIDERS

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_objects = st.dictionaries(st.text(max_size=5), _values, min_size=1, max_size=4)
_event_names = st.none() | st.sampled_from(["message_start", "content_block_delta", "ping"])


def _faults(draw: st.DrawFn, endings: list[str]) -> Faults:
    return Faults(
        line_ending=draw(st.sampled_from(endings)),
        no_space_after_colon=draw(st.booleans()),
        multiline_data=draw(st.booleans()),
        comments=draw(st.booleans()),
        bom=draw(st.booleans()),
        trailing_spaces=draw(st.booleans()),
        spaced_json=draw(st.booleans()),
    )


def _mix_line_endings(draw: st.DrawFn, text: str, blank_lines_follow_cr: bool) -> str:
    """Give every line of an LF-ended ``text`` its own terminator: LF, CR or CRLF."""
    lines = text.split("\n")
    tail = lines.pop()
    out: list[str] = []
    previous = ""
    for line in lines:
        choices = ["\n", "\r\n", "\r"] if blank_lines_follow_cr else ["\n", "\r\n"]
        if previous == "\r" and line == "":
            choices.remove("\n")  # CR then LF would read as one CRLF, eating the blank line
        previous = draw(st.sampled_from(choices))
        out += [line, previous]
    return "".join(out) + tail


def _split(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=16)))
    return [raw[a:b] for a, b in itertools.pairwise([0, *cuts, len(raw)])]


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[list[tuple[str, Any]], list[bytes]]:
    """What a server meant to send (event name, JSON value), and its bytes in pieces."""
    faults = _faults(draw, ["\n", "\r\n", "\r"])
    sent = draw(st.lists(st.tuples(_event_names, _objects | _values), max_size=8))
    # As SSEWriter.play and send write them: the BOM, then each event after its comment.
    body = b"\xef\xbb\xbf" if faults.bom else b""
    for count, (name, value) in enumerate(sent):
        if faults.comments:
            body += comment_event(count, faults)
        body += encode_event(SSEEvent(dump_json(value, faults), event=name), faults)
    text = body.decode()
    if draw(st.booleans()):  # and then the line endings mixed, line by line
        text = _mix_line_endings(draw, text.replace("\r\n", "\n").replace("\r", "\n"), True)
    expected = [(name or "message", value) for name, value in sent]
    return expected, _split(draw, text.encode())


@settings(max_examples=300, deadline=None)
@given(sse_streams())
def test_sse_any_framing_mix_and_split_gives_the_sent_events(
    stream: tuple[list[tuple[str, Any]], list[bytes]],
) -> None:
    expected, pieces = stream
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)] + decoder.close()
    assert [(event.event, json.loads(event.data)) for event in events] == expected
    assert not decoder.pending


@st.composite
def ndjson_streams(draw: st.DrawFn) -> tuple[list[Any], list[bytes]]:
    """What a server meant to send, and its NDJSON bytes (keep-alive blank lines too) in pieces."""
    faults = _faults(draw, ["\n", "\r\n"])
    sent = draw(st.lists(_objects | _values, max_size=8))
    body = b"\xef\xbb\xbf" if faults.bom else b""
    for value in sent:
        if faults.comments:
            body += faults.line_ending.encode()  # the NDJSON writer's keep-alive: a blank line
        body += encode_line(SSEEvent(dump_json(value, faults)), faults)
    text = body.decode()
    if draw(st.booleans()):
        text = _mix_line_endings(draw, text.replace("\r\n", "\n"), False)
    return sent, _split(draw, text.encode())


@settings(max_examples=300, deadline=None)
@given(ndjson_streams())
def test_ndjson_any_framing_mix_and_split_gives_the_sent_values(
    stream: tuple[list[Any], list[bytes]],
) -> None:
    expected, pieces = stream
    decoder = NDJSONDecoder()
    values = [value for piece in pieces for value in decoder.feed(piece)] + decoder.close()
    assert values == expected


# Found by the SSE property above: `multiline_data` cut at the first ',"' even inside a string
# (any string ending in a comma), so a valid payload reached the client as broken JSON.


def test_multiline_data_never_cuts_inside_a_string() -> None:
    data = '{",":"a,","b":"c,\\",","d":1}'
    raw = encode_event(SSEEvent(data), Faults(multiline_data=True))
    assert raw == b'data: {",":"a,",\ndata: "b":"c,\\",","d":1}\n\n'
    [event] = SSEDecoder().feed(raw)
    assert json.loads(event.data) == json.loads(data)


async def test_multiline_data_keeps_a_stream_whose_id_ends_in_a_comma() -> None:
    # Over the wire, as the client met it: the chunk id is the first string of every event.
    faults = Faults(multiline_data=True)
    server = OpenAIServer([ScriptedReply(text_chunks=["Hi", "!"])], faults, api_key=KEY)
    server.completion_id = "chatcmpl-x,"
    async with server, PROVIDERS["openai"].model(server.base_url) as model:
        message = await model.ainvoke("Hi")
    assert message.content == "Hi!"
