"""Incremental Content-Encoding decoders with a cap on the decoded size.

Captured bodies are stored decoded so that people can read them. Decoding happens
chunk by chunk as bytes flow, and each decoder emits bounded pieces, so neither a
huge body nor a decompression bomb can exhaust memory; the cap bounds disk use.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol

import brotli
import zstandard

Emit = Callable[[bytes], None]

#: Largest piece a decoder hands to ``emit`` at once.
PIECE = 1 << 20


class DecodeError(Exception):
    """The body could not be decoded (corrupt, truncated, unsupported or over the cap)."""


class Decoder(Protocol):
    def feed(self, data: bytes, emit: Emit) -> None:
        """Decode ``data``, passing decoded pieces to ``emit``. Raises DecodeError."""

    def finish(self, emit: Emit) -> None:
        """The encoded body ended; emit what is left. Raises DecodeError if truncated."""


class _ZlibDecoder:
    """gzip (also concatenated members) and deflate (zlib-wrapped, raw as a fallback)."""

    def __init__(self, wbits: int, multi_member: bool, raw_fallback: bool) -> None:
        self._wbits = wbits
        self._obj = zlib.decompressobj(wbits)
        self._multi_member = multi_member
        self._raw_fallback = raw_fallback
        self._started = False

    def feed(self, data: bytes, emit: Emit) -> None:
        if not data:
            return
        if not self._started:
            self._started = True
            if self._raw_fallback and not _looks_zlib_wrapped(data):
                self._wbits = -zlib.MAX_WBITS
                self._obj = zlib.decompressobj(self._wbits)
        try:
            self._decompress(data, emit)
        except zlib.error as e:
            raise DecodeError(str(e)) from None

    def _decompress(self, data: bytes, emit: Emit) -> None:
        obj = self._obj
        while data:
            if obj.eof:
                if not self._multi_member:
                    raise DecodeError("data after the end of the compressed stream")
                obj = self._obj = zlib.decompressobj(self._wbits)
            out = obj.decompress(data, PIECE)
            if out:
                emit(out)
            data = obj.unused_data if obj.eof else obj.unconsumed_tail

    def finish(self, emit: Emit) -> None:
        try:
            out = self._obj.flush()
        except zlib.error as e:
            raise DecodeError(str(e)) from None
        if out:
            emit(out)
        if self._started and not self._obj.eof:
            raise DecodeError("compressed stream ended early")


def _looks_zlib_wrapped(data: bytes) -> bool:
    """RFC 1950 header check: CM=8 and the 16-bit header is a multiple of 31."""
    if len(data) < 2:
        return True
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0


class _BrotliDecoder:
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()
        self._started = False

    def feed(self, data: bytes, emit: Emit) -> None:
        self._started = self._started or bool(data)
        try:
            out = self._obj.process(data, output_buffer_limit=PIECE)
            while True:
                if out:
                    emit(out)
                if self._obj.can_accept_more_data():
                    break
                out = self._obj.process(b"", output_buffer_limit=PIECE)
        except brotli.error as e:
            raise DecodeError(f"brotli: {e}") from None

    def finish(self, emit: Emit) -> None:
        if self._started and not self._obj.is_finished():
            raise DecodeError("compressed stream ended early")


class _ZstdDecoder:
    """zstd (also several frames). ``decompressobj`` returns all output of a call at once,
    so input goes in ``_SLICE``-byte slices: a zstd block expands to at most 128 KiB and
    needs at least 4 input bytes, which bounds one call's output to about 8 MiB."""

    _SLICE = 256

    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._started = False

    def feed(self, data: bytes, emit: Emit) -> None:
        self._started = self._started or bool(data)
        slice_ = self._SLICE
        try:
            for start in range(0, len(data), slice_):
                piece = data[start : start + slice_]
                while piece:
                    if self._obj.eof:
                        self._obj = zstandard.ZstdDecompressor().decompressobj()
                    out = self._obj.decompress(piece)
                    if out:
                        emit(out)
                    piece = self._obj.unused_data if self._obj.eof else b""
        except zstandard.ZstdError as e:
            raise DecodeError(f"zstd: {e}") from None

    def finish(self, emit: Emit) -> None:
        if self._started and not self._obj.eof:
            raise DecodeError("compressed stream ended early")


class _Chain:
    """Several codings, as in ``Content-Encoding: gzip, br`` (decoded in reverse order)."""

    def __init__(self, decoders: list[Decoder]) -> None:
        self._decoders = decoders  # outermost coding first

    def feed(self, data: bytes, emit: Emit) -> None:
        self._feed_from(0, data, emit)

    def _feed_from(self, index: int, data: bytes, emit: Emit) -> None:
        if index == len(self._decoders):
            emit(data)
            return
        self._decoders[index].feed(data, lambda out: self._feed_from(index + 1, out, emit))

    def finish(self, emit: Emit) -> None:
        for index, decoder in enumerate(self._decoders):
            decoder.finish(lambda out, i=index: self._feed_from(i + 1, out, emit))  # type: ignore[misc]


_FACTORIES: dict[str, Callable[[], Decoder]] = {
    "gzip": lambda: _ZlibDecoder(16 + zlib.MAX_WBITS, multi_member=True, raw_fallback=False),
    "x-gzip": lambda: _ZlibDecoder(16 + zlib.MAX_WBITS, multi_member=True, raw_fallback=False),
    "deflate": lambda: _ZlibDecoder(zlib.MAX_WBITS, multi_member=False, raw_fallback=True),
    "br": _BrotliDecoder,
    "zstd": _ZstdDecoder,
}


def parse_codings(content_encoding: str | None) -> list[str]:
    """Codings in the order they were applied, without ``identity``."""
    if not content_encoding:
        return []
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    return [c for c in codings if c and c != "identity"]


def make_decoder(content_encoding: str | None) -> Decoder | None:
    """A decoder for the header value, ``None`` for identity. Raises DecodeError if unsupported."""
    codings = parse_codings(content_encoding)
    if not codings:
        return None
    unknown = [c for c in codings if c not in _FACTORIES]
    if unknown:
        raise DecodeError(f"unsupported content-encoding {', '.join(unknown)}")
    decoders = [_FACTORIES[c]() for c in reversed(codings)]
    return decoders[0] if len(decoders) == 1 else _Chain(decoders)


class CappedDecoder:
    """Wraps a decoder and raises DecodeError once the decoded size passes ``limit``."""

    def __init__(self, decoder: Decoder, limit: int) -> None:
        self._decoder = decoder
        self._limit = limit
        self.decoded = 0

    def _counting(self, emit: Emit) -> Emit:
        def out(data: bytes) -> None:
            if self.decoded + len(data) > self._limit:
                raise DecodeError(f"decoded body exceeds the cap of {self._limit} bytes")
            self.decoded += len(data)
            emit(data)

        return out

    def feed(self, data: bytes, emit: Emit) -> None:
        self._decoder.feed(data, self._counting(emit))

    def finish(self, emit: Emit) -> None:
        self._decoder.finish(self._counting(emit))
