"""Bounded buffers: a JSON body kept up to a cap, and capped text accumulators."""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Any

#: Request and non-streamed response bodies are parsed only up to this size.
BODY_CAP = 16 << 20
#: Past the cap, this much of the head and of the tail is kept for :func:`salvage`.
KEEP = 64 << 10
#: Reassembled assistant text, and all tool-call arguments together, in characters.
TEXT_CAP = 1 << 20

_FAILED = object()
_DECODER = json.JSONDecoder()


def loads(data: bytes) -> Any:
    """``json.loads`` that reports failure as ``None`` instead of raising."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


class CappedBody:
    """Collects a body whole up to ``cap`` bytes; past it, only its head and tail.

    The whole body is needed to parse it as JSON; the head and tail let
    :func:`salvage` still find ``model`` or ``usage`` in a huge one (an
    embeddings answer with thousands of vectors ends with its usage).
    """

    __slots__ = ("_cap", "_chunks", "_head", "_parsed", "_tail", "_tail_size", "over", "size")

    def __init__(self, cap: int = BODY_CAP) -> None:
        self._cap = cap
        self._chunks: list[bytes] = []
        self._head = b""
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self._parsed: tuple[int, Any] | None = None
        self.size = 0
        self.over = False

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if not self.over:
            if self.size <= self._cap:
                self._chunks.append(data)
                return
            self.over = True
            whole = b"".join(self._chunks) + data
            self._chunks = []
            self._head = whole[:KEEP]
            data = whole[-KEEP:]
        tail = self._tail
        tail.append(data)
        self._tail_size += len(data)
        while len(tail) > 1 and self._tail_size - len(tail[0]) >= KEEP:
            self._tail_size -= len(tail.popleft())

    def data(self) -> bytes:
        """The whole body (empty once over the cap)."""
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    def json(self) -> Any:
        """The body parsed as JSON (memoised by size); ``None`` if over the cap or invalid."""
        if self.over:
            return None
        if self._parsed is None or self._parsed[0] != self.size:
            value = loads(self.data()) if self.size else None
            self._parsed = (self.size, value)
        return self._parsed[1]

    def head(self) -> bytes:
        return self._head

    def tail(self) -> bytes:
        return b"".join(self._tail)


def salvage(blob: bytes, key: str, kind: type, last: bool) -> Any:
    """The value of ``"key":`` in a fragment of a body too big to parse, if it is a ``kind``.

    Best effort, used only past the body cap: the first (or ``last``)
    occurrence whose value decodes to that type, so that a nested
    ``"model": {...}`` (a tool parameter, say) is passed over.
    """
    text = blob.decode("utf-8", "replace")
    matches = list(re.finditer(r'"' + re.escape(key) + r'"\s*:\s*', text))
    if last:
        matches.reverse()
    for match in matches:
        try:
            value = _DECODER.raw_decode(text, match.end())[0]
        except (ValueError, RecursionError):
            continue
        if isinstance(value, kind):
            return value
    return None


class Budget:
    """Characters left to share among several buffers (all of a response's tool calls)."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


class TextBuffer:
    """Appends text pieces up to ``cap`` characters (and a shared ``budget``); records
    that it truncated."""

    __slots__ = ("_budget", "_cap", "_parts", "size", "truncated")

    def __init__(self, cap: int = TEXT_CAP, budget: Budget | None = None) -> None:
        self._cap = cap
        self._budget = budget
        self._parts: list[str] = []
        self.size = 0
        self.truncated = False

    def add(self, piece: str) -> None:
        if self.truncated or not piece:
            return
        room = self._cap - self.size
        if self._budget is not None:
            room = min(room, self._budget.left)
        if len(piece) > room:
            piece = piece[:room]
            self.truncated = True
        if piece:
            self._parts.append(piece)
            self.size += len(piece)
            if self._budget is not None:
                self._budget.left -= len(piece)

    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""
