"""The capture file layout (SPEC section 5): names, header blocks and metadata documents.

Pure functions: the proxy, the file writer, the uploader and the logging server all
build the same bytes from here, which is what keeps local and remote captures
byte-identical.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

#: Names the layout of the capture files and metadata documents. Bump on any change.
FORMAT_VERSION = 1

StreamKind = Literal["request", "response"]
STREAM_KINDS: tuple[StreamKind, ...] = ("request", "response")

Metadata = dict[str, Any]


def read_document(path: str) -> Metadata | None:
    """A ``*_metadata.json`` as a dict, or None if it is missing, unreadable or not a JSON
    object. Documents are replaced atomically, so None means "not there (yet, or any
    more)", never half a document."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


#: Capture ids are canonical lower-case UUIDs; nothing else may name a file.
CAPTURE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: Top-level fields of a stream document that the writer computes itself.
COMPUTED_FIELDS = frozenset(
    {
        "format_version",
        "stream_type",
        "metadata",
        "started_at",
        "completed_at",
        "duration_ms",
        "bytes_written",
        "completed",
        "error",
        "filename",
        "capture_error",
        "writer_pid",
    }
)


_second_cache: tuple[int, str] = (-1, "")


def rfc3339(ts: float) -> str:
    """``2025-09-13T02:11:09.123456Z`` for a POSIX timestamp.

    Called several times per request: the date-time part is formatted once per second.
    """
    global _second_cache
    whole = int(ts)
    if whole != _second_cache[0]:
        _second_cache = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    micros = min(int((ts - whole) * 1_000_000 + 0.5), 999_999)
    return f"{_second_cache[1]}.{micros:06d}Z"


def parse_rfc3339(text: object) -> float:
    """The POSIX timestamp of an RFC 3339 string (``Z`` or an offset). Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError("not a timestamp string")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return parsed.timestamp()


@functools.lru_cache(maxsize=4096)  # names are asked for often, by two streams and the index
def file_stem(capture_id: str, started: float) -> str:
    """``2025-09-13_02-11-09.123_<uuid>``: the shared prefix of the four files."""
    moment = datetime.fromtimestamp(started, UTC)
    millis = moment.microsecond // 1000
    return f"{moment:%Y-%m-%d_%H-%M-%S}.{millis:03d}_{capture_id}"


def day_folder(started: float) -> str:
    return datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class CaptureName:
    """Where one stream of one capture lives, relative to ``log_dir``."""

    capture_id: str
    started: float
    kind: StreamKind

    @property
    def stem(self) -> str:
        return file_stem(self.capture_id, self.started)

    @property
    def folder(self) -> str:
        return file_stem(self.capture_id, self.started)[:10]  # YYYY-MM-DD

    @property
    def bin_name(self) -> str:
        return f"{self.stem}_{self.kind}.bin"

    @property
    def metadata_name(self) -> str:
        return f"{self.stem}_{self.kind}_metadata.json"


def redact(value: bytes) -> bytes:
    """``<redacted>``, keeping the last four characters of long secrets to tell keys apart."""
    if len(value) >= 24:
        return b"<redacted>..." + value[-4:]
    return b"<redacted>"


def header_block(
    start_line: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    redact_names: frozenset[bytes],
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """``start_line\\r\\n`` + ``Name: value\\r\\n`` lines + ``\\r\\n``.

    Headers named in ``redact_names`` (lower-case) are stored redacted.
    """
    parts = [start_line, b"\r\n"]
    for name, value in headers:
        if name.lower() in redact_names:
            value = redact(value)
        parts += (name, b": ", value, b"\r\n")
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def without(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[tuple[bytes, bytes]]:
    lower = name.lower()
    return [(k, v) for k, v in headers if k.lower() != lower]


@dataclass(slots=True)
class StreamHead:
    """The first line and headers of one captured stream, before the body."""

    start_line: bytes
    headers: list[tuple[bytes, bytes]]
    content_encoding: str | None
    extra: list[tuple[bytes, bytes]]

    def block(
        self, redact_names: frozenset[bytes], decoded: bool, decode_error: str | None
    ) -> bytes:
        """The header block as stored: without ``Content-Encoding`` when the body was
        decoded; with an ``X-Decompression-Error`` line when decoding failed."""
        headers = without(self.headers, b"content-encoding") if decoded else self.headers
        extra = list(self.extra)
        if decode_error is not None:
            extra.append((b"X-Decompression-Error", decode_error.encode("utf-8", "replace")))
        return header_block(self.start_line, headers, redact_names, extra)


def stream_document(
    kind: StreamKind,
    name: CaptureName,
    exchange: Metadata,
    *,
    started_at: float,
    completed_at: float | None,
    bytes_written: int,
    completed: bool,
    error: str | None,
    extra: Metadata | None = None,
) -> Metadata:
    """The ``*_metadata.json`` document of one stream."""
    doc: Metadata = {
        "format_version": FORMAT_VERSION,
        "stream_type": kind,
        "metadata": exchange,
        "started_at": rfc3339(started_at),
        "completed_at": rfc3339(completed_at) if completed_at is not None else None,
        "duration_ms": (
            round((completed_at - started_at) * 1000, 3) if completed_at is not None else None
        ),
        "bytes_written": bytes_written,
        "completed": completed,
        "error": error,
        "filename": name.bin_name,
    }
    if extra:
        doc.update(extra)
    return doc


def now() -> float:
    return time.time()
