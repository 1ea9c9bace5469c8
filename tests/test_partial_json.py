"""Best-effort parsing of JSON prefixes: every prefix parses, and each result refines the last."""

from __future__ import annotations

import itertools
import json

import pytest

from chatstream._partial_json import INCOMPLETE, parse_partial_json
from chatstream.testing._conformance_tools import refines

DOCUMENTS = [
    '{"city": "Par\\u00e9is\\\\", "n": -12.5e3, "ok": true, "none": null}',
    '{"l": [1, "a", {"x": [true, false]}], "e": "\\ud83d\\ude00!", "q": "say \\"hi\\""}',
    '[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "t", "arguments": {}}]',
    '{ "spaced" :\n [ 1 , 2 ] , "nested" : { "deep" : { "deeper" : "yes" } } }',
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_prefix_refines_the_one_before(document: str) -> None:
    values = [parse_partial_json(document[:end]) for end in range(len(document) + 1)]
    shown = [value for value in values if value is not INCOMPLETE]
    for earlier, later in itertools.pairwise(shown):
        assert refines(earlier, later), (earlier, later)
    assert shown[-1] == json.loads(document)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ('{"city": "Par', {"city": "Par"}),
        ('{"city": "Paris", "cou', {"city": "Paris"}),
        ('{"n": 12', {}),  # 12 may still become 123
        ('{"n": 12,', {"n": 12}),
        ('{"ok": tr', {}),
        ('{"a": "x\\', {"a": "x"}),  # half an escape is left out
        ('{"a": "\\u00', {"a": ""}),
        ('{"a": "\\ud83d', {"a": ""}),  # half a surrogate pair too
        ('["a", "b', ["a", "b"]),
        ("", INCOMPLETE),
        ("  ", INCOMPLETE),
        ("{", {}),
    ],
)
def test_prefixes(prefix: str, expected: object) -> None:
    assert parse_partial_json(prefix) == expected


@pytest.mark.parametrize("text", ["{]", '{"a" 1}', "nope", "{'a': 1}"])
def test_text_that_cannot_start_json_raises(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_partial_json(text)
