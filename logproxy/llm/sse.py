"""Incremental Server-Sent Events parser.

Bytes arrive in arbitrary chunks; events come out as soon as their closing
blank line has been seen. Work per chunk is proportional to the chunk, and
memory is bounded: a line (or an event's data) longer than ``max_line`` is
dropped and counted in ``problems`` instead of being buffered forever.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The longest line (and the most data one event may carry) that is kept.
MAX_LINE = 1 << 20
#: Comments kept for inspection (OpenRouter sends ``: OPENROUTER PROCESSING``).
MAX_COMMENTS = 8
_COMMENT_KEEP = 200

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: its ``event:`` name and its ``data:`` lines joined with LF."""

    name: str
    data: bytes


class SseParser:
    """Turns a byte stream into :class:`Event` objects, per the WHATWG SSE rules.

    ``\\n``, ``\\r\\n`` and ``\\r`` all end lines, even when a ``\\r\\n`` pair is
    split across two chunks. Unknown fields are ignored (and counted).
    """

    __slots__ = (
        "_cr",
        "_damaged",
        "_data",
        "_first",
        "_line",
        "_max",
        "_name",
        "_size",
        "_skipping",
        "comments",
        "problems",
    )

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max = max_line
        self._line = bytearray()  # the unfinished line carried over from earlier chunks
        self._skipping = False  # inside an over-long line: drop bytes until it ends
        self._cr = False  # the last chunk ended in \r: a leading \n completes that CRLF
        self._first = True  # a BOM is allowed before the first line
        self._name = ""
        self._data: list[bytes] = []
        self._size = 0
        self._damaged = False  # the current event lost a line: it is dropped, not guessed at
        self.comments: list[bytes] = []
        self.problems: dict[str, int] = {}

    @property
    def pending(self) -> int:
        """Bytes of the unfinished line held over (never more than ``max_line``)."""
        return len(self._line)

    def feed(self, data: bytes) -> list[Event]:
        """Consume one chunk; return the events it completed."""
        events: list[Event] = []
        pos = 0
        end = len(data)
        if self._cr:
            self._cr = False
            if end and data[0] == 0x0A:
                pos = 1
        last = None
        for match in _EOL.finditer(data, pos):
            last = match
            stop = match.start()
            if self._line or self._skipping:
                self._append(data, pos, stop)
                self._end_line(events)
            elif stop - pos > self._max:
                self._problem("line_too_long")
                self._damaged = True
            else:
                self._handle(data[pos:stop], events)
            pos = match.end()
        if last is not None and last.end() == end and last.group() == b"\r":
            self._cr = True
        if pos < end:
            self._append(data, pos, end)
        return events

    def close(self, whole: bool) -> list[Event]:
        """End of stream: dispatch what is pending.

        The standard discards an event without its closing blank line; we keep
        it, since servers do end streams that way. An unterminated last line is
        only used when the stream ended ``whole`` (not cut mid-line).
        """
        events: list[Event] = []
        if self._line and whole and not self._skipping:
            self._end_line(events)
        self._line = bytearray()
        self._skipping = False
        self._dispatch(events)
        return events

    # ------------------------------------------------------------------ internals

    def _problem(self, code: str) -> None:
        self.problems[code] = self.problems.get(code, 0) + 1

    def _append(self, data: bytes, start: int, stop: int) -> None:
        if self._skipping or start >= stop:
            return
        if len(self._line) + (stop - start) > self._max:
            self._problem("line_too_long")
            self._skipping = True
            self._line = bytearray()
            return
        self._line += data[start:stop]

    def _end_line(self, events: list[Event]) -> None:
        if self._skipping:
            self._skipping = False
            self._damaged = True
            return
        line = bytes(self._line)
        self._line = bytearray()
        self._handle(line, events)

    def _handle(self, line: bytes, events: list[Event]) -> None:
        if self._first:
            self._first = False
            if line.startswith(_BOM):
                line = line[len(_BOM) :]
        if not line:
            self._dispatch(events)
            return
        if line[0] == 0x3A:  # ":" comment
            if len(self.comments) < MAX_COMMENTS:
                self.comments.append(line[1:_COMMENT_KEEP].strip())
            return
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._size += len(value) + 1
            if self._size > self._max:
                if not self._damaged:
                    self._problem("event_too_large")
                self._damaged = True
                self._data = []
            elif not self._damaged:
                self._data.append(value)
        elif field == b"event":
            self._name = value.decode("utf-8", "replace")
        elif field not in (b"id", b"retry"):
            self._problem("unknown_sse_field")

    def _dispatch(self, events: list[Event]) -> None:
        if not self._damaged and self._data:
            events.append(Event(self._name or "message", b"\n".join(self._data)))
        self._name = ""
        self._data = []
        self._size = 0
        self._damaged = False
