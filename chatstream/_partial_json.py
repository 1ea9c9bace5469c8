"""Best-effort parsing of a JSON prefix, for showing tool arguments and structured output live.

``{"city": "Par`` reads as ``{"city": "Par"}``. What is shown only ever grows: a number or
literal is left out until it is complete (``12`` could still become ``123``), a key until its
value has started, an escape until it is whole; so each result refines the one before.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = ["INCOMPLETE", "parse_partial_json"]


class _Incomplete:
    __slots__ = ()

    def __repr__(self) -> str:
        return "INCOMPLETE"


INCOMPLETE: Final = _Incomplete()
"""What `parse_partial_json` returns when the prefix holds no value yet (``""``, ``"{"`` is not
this: it is ``{}``)."""

_WS = " \t\r\n"
_NUMBER_PREFIX = re.compile(r"-?\d*\.?\d*(?:[eE][+-]?\d*)?")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


class _End(Exception):
    """The text ended inside a value; ``value`` is what of it can be shown."""

    def __init__(self, value: Any) -> None:
        self.value = value


def parse_partial_json(text: str) -> Any:
    """The value a JSON prefix stands for so far, or `INCOMPLETE` when none has started.

    Complete JSON parses as ``json.loads`` would. A prefix closes its open strings, arrays and
    objects; an unfinished number, literal or key is left out. Text that cannot be the start
    of a JSON value raises ``json.JSONDecodeError``, as ``json.loads`` does.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    parser = _Parser(text)
    try:
        value = parser.value()
    except _End as end:
        return end.value
    return value


class _Parser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def _fail(self, what: str) -> json.JSONDecodeError:
        return json.JSONDecodeError(what, self.text, self.pos)

    def value(self) -> Any:
        self._skip()
        if self.pos >= len(self.text):
            raise _End(INCOMPLETE)
        char = self.text[self.pos]
        if char == "{":
            return self._object()
        if char == "[":
            return self._array()
        if char == '"':
            return self._string()
        return self._scalar()

    def _scalar(self) -> Any:
        rest = self.text[self.pos :]
        # What runs to the end of the text may still grow ("tr", "-", "12", "1.5e"): unfinished.
        if any(
            word.startswith(rest) for word in ("true", "false", "null")
        ) or _NUMBER_PREFIX.fullmatch(rest):
            raise _End(INCOMPLETE)
        match = _SCALAR.match(self.text, self.pos)
        if match is None:
            raise self._fail("Expecting value")
        self.pos = match.end()
        return json.loads(match.group())

    def _string(self) -> str:
        start = self.pos + 1
        end = start
        while True:
            end = self.text.find('"', end)
            if end < 0:
                raise _End(json.loads(f'"{_whole_escapes(self.text[start:])}"'))
            backslashes = len(self.text[start:end]) - len(self.text[start:end].rstrip("\\"))
            if backslashes % 2 == 0:
                break
            end += 1
        self.pos = end + 1
        decoded: str = json.loads(self.text[start - 1 : end + 1])
        return decoded

    def _object(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        self.pos += 1
        while True:
            self._skip()
            if self.pos >= len(self.text):
                raise _End(result)
            if self.text[self.pos] == "}":
                self.pos += 1
                return result
            if self.text[self.pos] == ",":
                self.pos += 1
                self._skip()
            if self.pos >= len(self.text):
                raise _End(result)
            if self.text[self.pos] != '"':
                raise self._fail("Expecting property name enclosed in double quotes")
            try:
                key = self._string()
            except _End:
                raise _End(result) from None
            self._skip()
            if self.pos >= len(self.text):
                raise _End(result)
            if self.text[self.pos] != ":":
                raise self._fail("Expecting ':' delimiter")
            self.pos += 1
            try:
                result[key] = self.value()
            except _End as end:
                if end.value is not INCOMPLETE:
                    result[key] = end.value
                raise _End(result) from None

    def _array(self) -> list[Any]:
        result: list[Any] = []
        self.pos += 1
        while True:
            self._skip()
            if self.pos >= len(self.text):
                raise _End(result)
            if self.text[self.pos] == "]":
                self.pos += 1
                return result
            if self.text[self.pos] == ",":
                self.pos += 1
            try:
                result.append(self.value())
            except _End as end:
                if end.value is not INCOMPLETE:
                    result.append(end.value)
                raise _End(result) from None


def _whole_escapes(body: str) -> str:
    """The longest prefix of a string's body that ends after a whole escape sequence."""
    i, safe, size = 0, 0, len(body)
    while i < size:
        if body[i] == "\\":
            if i + 1 >= size:
                break
            if body[i + 1] == "u":
                # Half a surrogate pair would later be replaced by the whole character.
                pair = body[i + 2 : i + 4].lower()
                step = 12 if len(pair) == 2 and pair[0] == "d" and pair[1] in "89ab" else 6
                if i + step > size:
                    break
                i += step
            else:
                i += 2
        else:
            i += 1
        safe = i
    return body[:safe]
