"""Turns one stream's head and raw body chunks into the bytes of its ``.bin`` file.

The body is stored decoded. Whether decoding works is only known once the decoder has
seen some data, so the header block (which must say whether ``Content-Encoding`` was
removed) is held back until the decoder produced its first output, failed, or
``PROBE_LIMIT`` raw bytes went by. A failure before that point stores the body as
received with an ``X-Decompression-Error`` line (SPEC section 5). A failure after it
(corruption deep in a large body, or the decoded-size cap) cannot rewrite bytes already
written or uploaded: the raw remainder is appended as received and ``decode_error``
says at which decoded offset that happened, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable

from logproxy.capture.decode import CappedDecoder, DecodeError, make_decoder
from logproxy.capture.model import StreamHead

PROBE_LIMIT = 256 * 1024


class StreamEncoder:
    """Pure and synchronous: runs wherever the bytes go (writer thread or reactor).

    @ivar decode_error: why decoding failed, or ``None``.
    @ivar bytes_out: bytes handed to ``out`` so far (the ``.bin`` size).
    """

    def __init__(
        self,
        head: StreamHead,
        redact_names: frozenset[bytes],
        max_decoded: int,
        out: Callable[[bytes], None],
        body_tap: Callable[[bytes], None] | None = None,
    ) -> None:
        self._head = head
        self._redact = redact_names
        self._out = out
        self._tap = body_tap  # sees the stored body (no header block), e.g. the llm observer
        self.decode_error: str | None = None
        self.bytes_out = 0
        self._decoder: CappedDecoder | None = None
        # Before the head is written: raw input and decoded output held back.
        self._probing = False
        self._held_raw: list[bytes] = []
        self._held_raw_size = 0
        self._held_out: list[bytes] = []
        try:
            decoder = make_decoder(head.content_encoding)
        except DecodeError as e:
            self._write_head(decoded=False, error=str(e))
            return
        if decoder is None:
            self._write_head(decoded=False, error=None)
        else:
            self._decoder = CappedDecoder(decoder, max_decoded)
            self._probing = True

    def _emit(self, data: bytes) -> None:
        """Body bytes, as stored."""
        if data:
            self.bytes_out += len(data)
            self._out(data)
            if self._tap is not None:
                self._tap(data)

    def _write_head(self, decoded: bool, error: str | None) -> None:
        block = self._head.block(self._redact, decoded=decoded, decode_error=error)
        self.bytes_out += len(block)
        self._out(block)

    def feed(self, raw: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            self._emit(raw)
        elif self._probing:
            self._held_raw.append(raw)
            self._held_raw_size += len(raw)
            try:
                decoder.feed(raw, self._held_out.append)
            except DecodeError as e:
                self._fall_back_before_head(str(e))
                return
            if self._held_out or self._held_raw_size >= PROBE_LIMIT:
                self._commit_decoded()
        else:
            try:
                decoder.feed(raw, self._emit)
            except DecodeError as e:
                self._fall_back_after_head(str(e), raw)

    def finish(self) -> None:
        """The body ended whole: flush the decoder."""
        decoder = self._decoder
        if decoder is None:
            return
        try:
            decoder.finish(self._held_out.append if self._probing else self._emit)
        except DecodeError as e:
            if self._probing:
                self._fall_back_before_head(str(e))
            else:
                self.decode_error = f"{e} (after {decoder.decoded} decoded bytes)"
            return
        if self._probing:
            self._commit_decoded()

    def abandon(self) -> None:
        """The body was cut short: write what is held back without judging the decoder."""
        if self._probing:
            self._commit_decoded()
        self._decoder = None

    def _commit_decoded(self) -> None:
        self._probing = False
        self._write_head(decoded=True, error=None)
        for piece in self._held_out:
            self._emit(piece)
        self._held_raw, self._held_out = [], []

    def _fall_back_before_head(self, error: str) -> None:
        self.decode_error = error
        self._probing = False
        self._decoder = None
        self._write_head(decoded=False, error=error)
        for piece in self._held_raw:
            self._emit(piece)
        self._held_raw, self._held_out = [], []

    def _fall_back_after_head(self, error: str, raw: bytes) -> None:
        assert self._decoder is not None
        self.decode_error = (
            f"{error}; the decoded body ends after {self._decoder.decoded} bytes "
            "and the rest follows as received"
        )
        self._decoder = None
        self._emit(raw)
