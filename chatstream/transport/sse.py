"""A sans-I/O Server-Sent Events decoder: bytes in, dispatched `Event` objects out.

Follows the WHATWG HTML "event stream interpretation" algorithm exactly.
"""

from __future__ import annotations

from codecs import utf_8_decode as _utf8_decode
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, final

from chatstream.errors import ClosedError, StreamProtocolError

__all__ = ["Event", "SSEDataDecoder", "SSEDecoder"]

_EXCERPT = 200
"""Characters of an offending line kept in a `StreamProtocolError`."""


@final
@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched server-sent event.

    Attributes:
        event: The event type; ``"message"`` when the block set none (or set it empty).
        data: The data lines of the block, joined with line feeds.
        id: The last-event-id buffer at dispatch time: ``None`` if the stream never sent an
            ``id`` field, ``""`` after an empty ``id:`` reset it.
        retry: The reconnection time in milliseconds set by this event's block, else ``None``.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


_new = object.__new__
_set_event, _set_data, _set_id, _set_retry = (
    Event.__dict__[name].__set__ for name in ("event", "data", "id", "retry")
)
"""The slot setters of `Event`, to build events in the hot loop without its ``__init__``."""


class _EventStream:
    """The event stream interpretation both decoders share; see `SSEDecoder`."""

    __slots__ = (
        "_carry",
        "_closed",
        "_data",
        "_dirty",
        "_event_type",
        "_id_buffer",
        "_last_event_id",
        "_max_line_length",
        "_parts",
        "_parts_len",
        "_pending",
        "_retry",
        "_retry_block",
        "_skip_lf",
        "_started",
    )

    def __init__(self, *, max_line_length: int | None = None) -> None:
        self._max_line_length = max_line_length
        self._carry = b""
        # The unterminated line is kept as a list of pieces so that a huge line fed in small
        # chunks is joined once, not re-copied on every feed.
        self._parts: list[str] = []
        self._parts_len = 0
        self._started = False
        self._skip_lf = False
        self._data: list[str] = []
        self._event_type = ""
        self._id_buffer: str | None = None
        self._last_event_id: str | None = None
        self._retry_block: int | None = None
        self._retry: int | None = None
        self._dirty = False
        self._closed = False
        self._pending = False

    @property
    def last_event_id(self) -> str | None:
        """The event stream's last event ID, committed at each blank line.

        This is what a reconnecting client sends as ``Last-Event-ID``: an ``id`` field in a
        block that never got its blank line does not count. ``None`` until an ``id`` field
        has been committed.
        """
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The latest reconnection time (milliseconds) the stream set, else ``None``.

        Kept here as well as on `Event` because a ``retry`` field usually arrives in a block
        without data, which dispatches no event.
        """
        return self._retry

    @property
    def pending(self) -> bool:
        """Whether an unterminated line or event is buffered (after `close`: was discarded).

        True after `close` means the stream ended mid-event, i.e. it was probably truncated.
        """
        if self._closed:
            return self._pending
        return bool(self._parts or self._data or self._dirty or self._carry)

    _data_only: ClassVar[bool] = False
    """Whether a dispatched event is its data alone (`SSEDataDecoder`), not an `Event`."""

    def _decode(self, data: bytes) -> list[Any]:
        if self._closed:
            raise ClosedError("SSEDecoder.feed() called after close()")
        if self._carry:
            data = self._carry + data
        # The C codec directly rather than codecs' incremental decoder, a Python-level wrapper
        # that costs more than the rest of a small event. It leaves an incomplete trailing
        # UTF-8 sequence unconsumed; that carry is prepended to the next feed.
        text, used = _utf8_decode(data, "replace", False)
        self._carry = data[used:] if used != len(data) else b""
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
                if not text:
                    return []
        if self._skip_lf:
            # The previous feed ended with CR: an LF starting this one completes that CRLF.
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return []
        if "\r" in text:
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        # Splitting only the new text keeps the cost linear: bytes are never scanned twice.
        lines = text.split("\n")
        tail = lines.pop()
        events: list[Any] = []
        if lines:
            if self._parts:
                self._parts.append(lines[0])
                lines[0] = "".join(self._parts)
                self._parts.clear()
                self._parts_len = 0
            limit = self._max_line_length
            if limit is not None:
                for line in lines:
                    if len(line) > limit:
                        self._too_long(line)
            # The interpretation loop is inlined here: it runs for every line of every stream.
            data_lines = self._data
            data_only = self._data_only
            for line in lines:
                if not line:
                    # Dispatch. The last event ID is committed even when nothing is dispatched.
                    self._last_event_id = self._id_buffer
                    if data_lines:
                        value = data_lines[0] if len(data_lines) == 1 else "\n".join(data_lines)
                        if data_only:
                            events.append(value)
                        else:
                            # Event(...) would cost twice as much: a frozen dataclass's
                            # __init__ goes through object.__setattr__ for each field.
                            event = _new(Event)
                            _set_event(event, self._event_type or "message")
                            _set_data(event, value)
                            _set_id(event, self._id_buffer)
                            _set_retry(event, self._retry_block)
                            events.append(event)
                        data_lines.clear()  # the event holds its own string
                    if self._dirty:  # only a field line (`_field`) sets these
                        self._event_type = ""
                        self._retry_block = None
                        self._dirty = False
                elif line.startswith("data:"):
                    data_lines.append(line[6:] if line.startswith(" ", 5) else line[5:])
                elif line[0] != ":":
                    self._field(line)
        if tail:
            self._parts.append(tail)
            self._parts_len += len(tail)
            if self._max_line_length is not None and self._parts_len > self._max_line_length:
                self._too_long("".join(self._parts))
        return events

    def _close(self) -> None:
        if self._closed:
            return
        self._pending = self.pending
        self._closed = True
        self._carry = b""
        self._parts.clear()
        self._parts_len = 0
        self._data = []

    def _too_long(self, line: str) -> NoReturn:
        raise StreamProtocolError(
            f"SSE line of {len(line)} characters exceeds max_line_length={self._max_line_length}",
            line=line[:_EXCERPT],
        )

    def _field(self, line: str) -> None:
        self._dirty = True
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            # Only reached by a "data" line without a colon; "data:" takes the fast path.
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry":
            # isdigit() alone would accept non-ASCII digits such as "٣" or "²".
            if value.isascii() and value.isdigit():
                try:
                    self._retry_block = self._retry = int(value)
                except ValueError:
                    # Past Python's int digit limit: no sane delay, so ignore it as junk.
                    pass


@final
class SSEDecoder(_EventStream):
    """Incremental decoder of a ``text/event-stream`` body.

    Feed it the body's bytes in pieces of any size, split anywhere (inside a UTF-8 sequence or
    between a CR and its LF); each call returns the events completed by those bytes. The
    decoder does no I/O and keeps a linear cost however long a line grows.

    Args:
        max_line_length: Most characters a line may hold (terminator excluded); ``None`` for
            no limit. A longer line raises `StreamProtocolError` as soon as it is seen.
    """

    __slots__ = ()

    def feed(self, data: bytes) -> list[Event]:
        """Decode the next bytes of the stream.

        Args:
            data: Any number of bytes, continuing the previous ones.

        Returns:
            The events dispatched by these bytes, in stream order (often none).

        Raises:
            StreamProtocolError: A line is longer than ``max_line_length``.
            ClosedError: The decoder was already closed.
        """
        return self._decode(data)

    def close(self) -> list[Event]:
        """End the stream.

        Per the specification an event whose blank line never came is discarded, so this
        returns no events; `pending` tells whether anything was discarded. Idempotent.

        Returns:
            Always an empty list (kept for symmetry with `feed`).
        """
        self._close()
        return []


@final
class SSEDataDecoder(_EventStream):
    """`SSEDecoder` for a protocol that reads only the data: each event is its data string.

    For OpenAI's stream, whose events carry no type, id or retry that a client acts on. The
    interpretation is the same; an event just skips being built as an `Event`, which is a
    good part of the cost of decoding a small one.

    Args:
        max_line_length: As for `SSEDecoder`.
    """

    __slots__ = ()
    _data_only = True

    def feed(self, data: bytes) -> list[str]:
        """Decode the next bytes of the stream; return the data of the events they dispatched.

        Raises:
            StreamProtocolError: A line is longer than ``max_line_length``.
            ClosedError: The decoder was already closed.
        """
        return self._decode(data)

    def close(self) -> list[str]:
        """End the stream (an event whose blank line never came is discarded). Idempotent."""
        self._close()
        return []
