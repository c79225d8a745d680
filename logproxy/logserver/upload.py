"""Captures received over HTTP PUT (SPEC section 7), streamed into the same files as section 5.

``PUT /{uuid}/request|response``: the body is the ``.bin`` stream, usually chunked and
in flight for as long as the proxied request; the first metadata document rides in
the ``X-Logproxy-Metadata`` header. ``PUT /{uuid}/request|response/metadata``: a
later (final) document. The server owns ``filename``, ``bytes_written`` and whether the
upload arrived whole; everything else comes from the sender.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from logproxy.capture.model import (
    CAPTURE_ID,
    COMPUTED_FIELDS,
    STREAM_KINDS,
    CaptureName,
    Metadata,
    StreamKind,
    now,
    parse_rfc3339,
    read_document,
    stream_document,
)
from logproxy.capture.writer import FileJob, WriterThread, write_json_atomically

if TYPE_CHECKING:
    from logproxy.logserver.site import LogRequest
    from logproxy.metrics import Metrics

log = Logger()

#: Largest metadata document accepted, in the header or as a body.
MAX_METADATA = 1 << 20


class BadUpload(ValueError):
    """The request cannot be accepted; ``code`` is the HTTP status to answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class LogServerState:
    """Shared by every request of one logging Site."""

    reactor: Any
    writer: WriterThread
    log_dir: str
    token: str
    metrics: Metrics
    active: dict[tuple[str, str], Upload] = field(default_factory=dict)


def parse_target(path: bytes) -> tuple[str, StreamKind, bool] | None:
    """``/{uuid}/{kind}`` or ``/{uuid}/{kind}/metadata`` -> (id, kind, is_metadata)."""
    parts = path.split(b"/")
    if len(parts) not in (3, 4) or parts[0] != b"":
        return None
    if len(parts) == 4 and parts[3] != b"metadata":
        return None
    try:
        capture_id, kind = parts[1].decode("ascii"), parts[2].decode("ascii")
    except UnicodeDecodeError:
        return None
    if kind not in STREAM_KINDS:
        return None
    return capture_id, kind, len(parts) == 4  # type: ignore[return-value]


def check_id(capture_id: str) -> None:
    if not CAPTURE_ID.fullmatch(capture_id):
        raise BadUpload(400, f"not a capture id (a lower-case UUID): {capture_id[:64]!r}")


@dataclass(frozen=True)
class Document:
    """A validated stream document from a sender."""

    exchange: Metadata
    started: float  # the request's start: names the files
    started_at: float  # this stream's start
    extra: Metadata
    completed: bool
    error: str | None


def parse_document(raw: bytes, capture_id: str, kind: str) -> Document:
    if len(raw) > MAX_METADATA:
        raise BadUpload(413, f"metadata larger than {MAX_METADATA} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadUpload(400, f"metadata is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        raise BadUpload(400, "metadata must be a JSON object with a 'metadata' object")
    exchange = doc["metadata"]
    if exchange.get("id") != capture_id:
        raise BadUpload(400, "metadata.id does not match the id in the path")
    if doc.get("stream_type", kind) != kind:
        raise BadUpload(400, "stream_type does not match the path")
    started_text = exchange.get("request_started_at")
    try:
        started = parse_rfc3339(started_text)
        started_at = parse_rfc3339(doc.get("started_at") or started_text)
    except (TypeError, ValueError):
        raise BadUpload(400, "metadata.request_started_at must be an RFC 3339 time") from None
    error = doc.get("error")
    if error is not None and not isinstance(error, str):
        raise BadUpload(400, "error must be a string or null")
    completed = doc.get("completed", True)
    extra = {k: v for k, v in doc.items() if k not in COMPUTED_FIELDS}
    return Document(exchange, started, started_at, extra, completed is True, error)


class Upload:
    """One streamed PUT body going into a capture file (a ``BodyReceiver``).

    @ivar _paused: the client socket is paused, waiting for the file to open or for
        the writer's backlog to drain (uploads get backpressure, not drops).
    @ivar _final: a metadata document that arrived while the body was still streaming;
        applied when it ends.
    """

    def __init__(
        self,
        state: LogServerState,
        request: LogRequest,
        capture_id: str,
        kind: StreamKind,
        doc: Document,
    ) -> None:
        self._state = state
        self._request = request
        self._key = (capture_id, kind)
        self._doc = doc
        self._final: Document | None = None
        self._rejected = False
        self._ended = False
        self._paused = False
        self._job = FileJob(
            state.writer,
            state.log_dir,
            CaptureName(capture_id, doc.started, kind),
            self._report,
            None,
        )

    def _report(self, capture_id: str, message: str) -> None:
        self._state.reactor.callFromThread(self._state.metrics.capture_errors.labels("write").inc)
        self._state.reactor.callFromThread(
            log.warn, "capture {id}: {message}", id=capture_id, message=message
        )

    def start(self) -> None:
        state = self._state
        state.active[self._key] = self
        self._pause()
        writer = state.writer
        doc = self._doc
        writer.submit(self._job.open, (doc.exchange, doc.started_at, None, doc.extra))
        writer.submit(self._call_back, self._opened)

    def _call_back(self, fn: Any) -> None:
        """Writer thread: run ``fn`` on the reactor once the items before it are done."""
        self._state.reactor.callFromThread(fn)

    def _opened(self) -> None:
        if self._job.exists:
            self._conflict()
        else:
            self._resume()

    def _conflict(self) -> None:
        if not self._rejected:
            self._rejected = True
            self._state.active.pop(self._key, None)
            self._request.reject(409, "this capture stream already exists")

    def apply_final(self, doc: Document) -> None:
        self._final = doc

    def body_chunk(self, data: bytes) -> None:
        if self._rejected or self._ended:
            return
        writer = self._state.writer
        writer.submit(self._job.write, data, len(data))
        if not self._paused and writer.backlog > writer.buffer_size:
            self._pause()
            writer.when_drained(self._resume)

    def body_complete(self) -> None:
        if self._rejected:
            return
        self._end(None)
        self._state.writer.submit(self._call_back, self._closed)

    def connection_lost(self) -> None:
        if not self._rejected and not self._ended:
            self._end("upload interrupted")
            self._state.metrics.logserver_streams.labels("interrupted").inc()

    def _end(self, error: str | None) -> None:
        self._ended = True
        self._state.active.pop(self._key, None)
        doc = self._final or self._doc
        if error is None and doc is self._final:
            error = doc.error or (None if doc.completed else "incomplete")
        self._state.writer.submit(self._job.close, (doc.exchange, error, doc.extra))

    def _closed(self) -> None:
        if self._job.exists:
            self._conflict()  # the whole body arrived before the open was confirmed
            return
        request = self._request
        self._state.metrics.logserver_streams.labels("complete").inc()
        if request.is_disconnected:
            return
        job = self._job
        request.respond_json(
            201,
            {
                "id": self._key[0],
                "stream": self._key[1],
                "bytes_written": job.bytes_written,
                "capture_error": job.capture_error,
            },
        )

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._request.pause_reading()

    def _resume(self) -> None:
        if self._paused and not self._ended:
            self._paused = False
            self._request.resume_reading()


class MetadataUpdate:
    """Writer-thread job: rewrite a finished stream's metadata from a sender's document."""

    def __init__(self, state: LogServerState, capture_id: str, kind: StreamKind, doc: Document):
        self._state = state
        self._name = CaptureName(capture_id, doc.started, kind)
        self._doc = doc
        self.status = 0

    def run(self, _: object) -> None:
        folder = os.path.join(self._state.log_dir, self._name.folder)
        bin_path = os.path.join(folder, self._name.bin_name)
        meta_path = os.path.join(folder, self._name.metadata_name)
        try:
            size = os.path.getsize(bin_path)
        except OSError:
            size = None
        previous = read_document(meta_path)
        if size is None or previous is None:
            self.status = 404
            return
        doc = self._doc
        completed_at = previous.get("completed_at")
        try:
            finished = parse_rfc3339(completed_at) if completed_at else now()
        except ValueError:
            finished = now()
        was_whole = previous.get("completed") is True
        error = doc.error or previous.get("error")
        if error is None and not doc.completed:
            error = "incomplete"
        new = stream_document(
            self._name.kind,
            self._name,
            doc.exchange,
            started_at=doc.started_at,
            completed_at=finished,
            bytes_written=size,
            completed=was_whole and doc.completed and error is None,
            error=error,
            extra={**doc.extra, "capture_error": previous.get("capture_error")},
        )
        try:
            write_json_atomically(meta_path, new)
            self.status = 200
        except OSError:
            self.status = 500
            return
        self._state.writer._tell("document_written", self._state.log_dir, self._name, new)
