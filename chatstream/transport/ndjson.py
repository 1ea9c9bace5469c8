"""A sans-I/O newline-delimited JSON decoder: bytes in, parsed JSON values out."""

from __future__ import annotations

from codecs import utf_8_decode as _utf8_decode
from typing import Any, NoReturn, final

from chatstream._json import loads
from chatstream.errors import ClosedError, StreamProtocolError

__all__ = ["NDJSONDecoder"]

_EXCERPT = 200
"""Characters of an offending line kept in a `StreamProtocolError`."""

_JSON_WHITESPACE = " \t\r"
"""JSON's insignificant whitespace other than LF, which already split the lines."""


@final
class NDJSONDecoder:
    """Incremental decoder of an NDJSON (JSON Lines) body.

    Lines end with LF (a CRLF's CR is JSON whitespace, so it is tolerated); blank lines are
    skipped. The bytes may be split anywhere, including inside a UTF-8 sequence; invalid
    UTF-8 becomes U+FFFD and a leading BOM is dropped. The cost stays linear however long a
    line grows.

    Args:
        max_line_length: Most characters a line may hold (terminator excluded); ``None`` for
            no limit. A longer line raises `StreamProtocolError` as soon as it is seen.
    """

    __slots__ = ("_carry", "_closed", "_max_line_length", "_parts", "_parts_len", "_started")

    def __init__(self, *, max_line_length: int | None = None) -> None:
        self._max_line_length = max_line_length
        self._carry = b""
        # The unterminated line is kept as a list of pieces so that a huge line fed in small
        # chunks is joined once, not re-copied on every feed.
        self._parts: list[str] = []
        self._parts_len = 0
        self._started = False
        self._closed = False

    def feed(self, data: bytes) -> list[Any]:
        """Decode the next bytes of the stream.

        Args:
            data: Any number of bytes, continuing the previous ones.

        Returns:
            The JSON values of the lines these bytes completed, in stream order.

        Raises:
            StreamProtocolError: A line is not valid JSON or is longer than
                ``max_line_length``.
            ClosedError: The decoder was already closed.
        """
        if self._closed:
            raise ClosedError("NDJSONDecoder.feed() called after close()")
        text = self._decode(data, final=False)
        if not text:
            return []
        lines = text.split("\n")
        tail = lines.pop()
        values: list[Any] = []
        if lines:
            if self._parts:
                self._parts.append(lines[0])
                lines[0] = "".join(self._parts)
                self._parts.clear()
                self._parts_len = 0
            values = [self._parse(line) for line in lines if line.strip(_JSON_WHITESPACE)]
        if tail:
            self._parts.append(tail)
            self._parts_len += len(tail)
            # +1: the line may yet turn out to end in a CRLF whose CR is already here.
            if self._max_line_length is not None and self._parts_len > self._max_line_length + 1:
                self._too_long("".join(self._parts))
        return values

    def close(self) -> list[Any]:
        """End the stream, parsing a last line that had no trailing newline. Idempotent.

        Returns:
            The last line's JSON value in a list, or an empty list.

        Raises:
            StreamProtocolError: The last line is not valid JSON or is too long.
        """
        if self._closed:
            return []
        self._closed = True
        self._parts.append(self._decode(b"", final=True))
        line = "".join(self._parts)
        self._parts.clear()
        self._parts_len = 0
        if not line.strip(_JSON_WHITESPACE):
            return []
        return [self._parse(line)]

    def _decode(self, data: bytes, *, final: bool) -> str:
        if self._carry:
            data = self._carry + data
        # The C codec leaves an incomplete trailing UTF-8 sequence unconsumed unless final;
        # that carry is prepended to the next feed.
        text, used = _utf8_decode(data, "replace", final)
        self._carry = data[used:] if used != len(data) else b""
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                # json.loads refuses a BOM, and some Windows producers write one.
                text = text[1:]
        return text

    def _parse(self, line: str) -> Any:
        limit = self._max_line_length
        if limit is not None and len(line) - line.endswith("\r") > limit:
            self._too_long(line)
        try:
            return loads(line)
        except (ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError and Python's integer digit limit.
            raise StreamProtocolError(
                f"invalid JSON in NDJSON line: {exc}", line=line[:_EXCERPT]
            ) from exc

    def _too_long(self, line: str) -> NoReturn:
        raise StreamProtocolError(
            f"NDJSON line of {len(line)} characters exceeds max_line_length="
            f"{self._max_line_length}",
            line=line[:_EXCERPT],
        )
