"""Capture files, written on one dedicated thread so file-system calls never block the reactor.

Creating a file costs 0.1-0.8 ms on ext4 and a full disk can make writes slow or fail;
none of that may touch the proxied traffic. The reactor thread only appends work items
to a queue (a C-level ``SimpleQueue.put``); :class:`WriterThread` runs them in order,
so the order of calls for one stream is kept. The queue is bounded by bytes: when it
is full the reactor side drops data instead of waiting, and the capture records how
much it lost (``truncated``/``bytes_lost``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from collections.abc import Callable
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from logproxy.capture.encoder import StreamEncoder
from logproxy.capture.model import (
    CaptureName,
    Metadata,
    StreamHead,
    StreamKind,
    now,
    stream_document,
)

log = Logger()

_STOP = object()


class WriterThread:
    """Runs file work items in order on one thread.

    @ivar _enqueued: bytes of data submitted; written by the reactor thread only.
    @ivar _done: bytes of data processed; written by the writer thread only.
        ``_enqueued - _done`` is the backlog that ``buffer_size`` bounds.
    @ivar _drain_waiters: reactor-side callbacks waiting for the backlog to fall below
        ``buffer_size // 2`` (backpressure for uploads received by the logging server).
    """

    def __init__(self, reactor: IReactorFromThreads, buffer_size: int) -> None:
        self._reactor = reactor
        self.buffer_size = buffer_size
        self._queue: queue.SimpleQueue[tuple[Any, Any, int]] = queue.SimpleQueue()
        self._enqueued = 0
        self._done = 0
        self._drain_waiters: list[Callable[[], None]] = []
        self._waiting = False  # read by the writer thread: someone waits for a drain
        self._dirty: set[IO[bytes]] = set()
        self._thread = threading.Thread(target=self._run, name="logproxy-writer", daemon=True)
        self._stopped: Deferred[None] | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def backlog(self) -> int:
        return self._enqueued - self._done

    def has_room(self, size: int) -> bool:
        return self._enqueued - self._done + size <= self.buffer_size

    def submit(self, fn: Callable[[Any], None], arg: Any, size: int = 0) -> None:
        """Run ``fn(arg)`` on the writer thread; ``size`` counts toward the backlog."""
        self._enqueued += size
        self._queue.put((fn, arg, size))

    def mark_dirty(self, f: IO[bytes]) -> None:
        """Writer thread: flush ``f`` once the current batch is done."""
        self._dirty.add(f)

    def forget(self, f: IO[bytes]) -> None:
        self._dirty.discard(f)

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the reactor once the backlog is below half the bound."""
        self._drain_waiters.append(callback)
        self._waiting = True

    def _fire_drained(self) -> None:
        if self.backlog > self.buffer_size // 2:
            return  # more arrived meanwhile; the writer will call again
        waiters, self._drain_waiters = self._drain_waiters, []
        self._waiting = False
        for callback in waiters:
            callback()

    def stop(self) -> Deferred[None]:
        """Finish every queued item, then stop the thread."""
        if self._stopped is None:
            self._stopped = Deferred()
            if self._thread.is_alive():
                self._queue.put((_STOP, None, 0))
            else:
                self._stopped.callback(None)
        return self._stopped

    def _run(self) -> None:
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while True:
            item = get()
            while True:
                fn, arg, size = item
                if fn is _STOP:
                    self._flush()
                    self._reactor.callFromThread(self._finished)
                    return
                try:
                    fn(arg)
                except Exception:  # a bug must not kill the writer
                    log.failure("capture writer item failed")
                self._done += size
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            self._flush()
            if self._waiting and self.backlog <= self.buffer_size // 2:
                self._reactor.callFromThread(self._fire_drained)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for f in dirty:
            with contextlib.suppress(OSError, ValueError):  # the owning job reports it
                f.flush()

    def _finished(self) -> None:
        assert self._stopped is not None
        self._stopped.callback(None)


def write_json_atomically(path: str, doc: Metadata) -> None:
    """Readers (and a crash at any moment) see the old or the new document, never half."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


ErrorReporter = Callable[[str, str], None]
#: Header names to redact and the decoded-size cap, for jobs that encode raw wire bytes.
EncodingSettings = tuple[frozenset[bytes], int]


class FileJob:
    """Writer-thread side of one stream stored as ``.bin`` + ``_metadata.json``.

    Created on the reactor thread; afterwards only its methods, run by the writer
    thread, touch it. With an ``encoder`` factory the raw wire bytes are turned into the
    ``.bin`` layout here (decoding off the reactor); without one the data already is
    that layout (what a logging server receives).
    """

    def __init__(
        self,
        writer: WriterThread,
        log_dir: str,
        name: CaptureName,
        report: ErrorReporter,
        encoding: EncodingSettings | None,
    ) -> None:
        self._writer = writer
        self._dir = os.path.join(log_dir, name.folder)
        self.name = name
        self._report = report
        self._encoding = encoding
        self._encoder: StreamEncoder | None = None
        self._file: IO[bytes] | None = None
        self._started_at = 0.0
        self._exchange: Metadata = {}
        self.bytes_written = 0
        self.capture_error: str | None = None
        self.exists = False  # open() found the stream already on disk; nothing is written
        self.done = False

    @property
    def bin_path(self) -> str:
        return os.path.join(self._dir, self.name.bin_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self._dir, self.name.metadata_name)

    def _fail(self, what: str, error: OSError) -> None:
        if self.capture_error is None:
            self.capture_error = f"{what}: {error.strerror or error}"
            self._report(self.name.capture_id, self.capture_error)
        if self._file is not None:
            self._writer.forget(self._file)
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def open(self, args: tuple[Metadata, float, StreamHead | None, Metadata | None]) -> None:
        """Create the ``.bin`` (never over an existing one) and the first metadata."""
        exchange, started_at, head, extra = args
        self._exchange, self._started_at = exchange, started_at
        try:
            os.makedirs(self._dir, exist_ok=True)
            self._file = open(self.bin_path, "xb")  # noqa: SIM115 (closed in close())
        except FileExistsError:
            self.exists = True
            return
        except OSError as e:
            self._fail("cannot create capture file", e)
        self._write_metadata(completed_at=None, completed=False, error=None, extra=extra)
        if self._encoding is not None and head is not None:
            redact, max_decoded = self._encoding
            self._encoder = StreamEncoder(head, redact, max_decoded, self._write_bytes)

    def _write_bytes(self, data: bytes) -> None:
        f = self._file
        if f is None:
            return
        try:
            f.write(data)
        except OSError as e:
            self._fail("cannot write capture file", e)
            return
        self.bytes_written += len(data)
        self._writer.mark_dirty(f)

    def write(self, data: bytes) -> None:
        if self.exists:
            return
        if self._encoder is not None:
            self._encoder.feed(data)
        else:
            self._write_bytes(data)

    def close(self, args: tuple[Metadata, str | None, Metadata]) -> None:
        if self.exists:
            return
        exchange, error, extra = args
        self._exchange = exchange
        encoder = self._encoder
        if encoder is not None:
            if error is None:
                encoder.finish()
            else:
                encoder.abandon()
            extra = {**extra, "decode_error": encoder.decode_error}
        if self._file is not None:
            self._writer.forget(self._file)
            try:
                self._file.close()
            except OSError as e:
                self._fail("cannot write capture file", e)
            self._file = None
        self._write_metadata(completed_at=now(), completed=error is None, error=error, extra=extra)
        self.done = True

    def _write_metadata(
        self,
        completed_at: float | None,
        completed: bool,
        error: str | None,
        extra: Metadata | None,
    ) -> None:
        doc = stream_document(
            self.name.kind,
            self.name,
            self._exchange,
            started_at=self._started_at,
            completed_at=completed_at,
            bytes_written=self.bytes_written,
            completed=completed,
            error=error,
            extra={**(extra or {}), "capture_error": self.capture_error},
        )
        try:
            os.makedirs(self._dir, exist_ok=True)
            write_json_atomically(self.metadata_path, doc)
        except OSError as e:
            self._fail("cannot write capture metadata", e)


class LocalStream:
    """Reactor-thread side of one locally stored stream (implements ``CaptureStream``).

    @ivar _dropping: set once the writer's queue was full for this stream; every later
        chunk is dropped too, so the file stays a clean prefix of the body.
    @ivar _lost: bytes dropped, reported as ``bytes_lost``.
    """

    def __init__(self, store: LocalStore, job: FileJob) -> None:
        self._store = store
        self._job = job
        self._begun = False
        self._dropping = False
        self._lost = 0

    def begin(self, head: StreamHead | None, exchange: Metadata) -> None:
        self._begun = True
        self._store.writer.submit(self._job.open, (dict(exchange), now(), head, None))

    def write(self, data: bytes) -> None:
        if not self._begun:
            return
        size = len(data)
        writer = self._store.writer
        if self._dropping or not writer.has_room(size):
            if not self._dropping:
                self._dropping = True
                self._store.dropped(self._job.name.capture_id)
            self._lost += size
            return
        writer.submit(self._job.write, data, size)

    def end(self, exchange: Metadata, error: str | None, extra: Metadata | None = None) -> None:
        if not self._begun:
            return
        info: Metadata = {"truncated": self._dropping, "bytes_lost": self._lost}
        if extra:
            info.update(extra)
        if self._lost:
            self._store.lost(self._lost)
        self._store.writer.submit(self._job.close, (dict(exchange), error, info))


class LocalStore:
    """Captures as files under ``log_dir`` (implements ``CaptureStore``)."""

    def __init__(
        self,
        writer: WriterThread,
        log_dir: str,
        redact_names: frozenset[bytes],
        max_decoded: int,
        on_error: ErrorReporter,
        on_drop: Callable[[str], None],
        on_lost: Callable[[int], None],
    ) -> None:
        self.writer = writer
        self.log_dir = log_dir
        self._encoding: EncodingSettings = (redact_names, max_decoded)
        self._on_error = on_error
        self.dropped = on_drop
        self.lost = on_lost

    def _report(self, capture_id: str, message: str) -> None:
        # Runs on the writer thread; hop to the reactor for logging and metrics.
        self.writer._reactor.callFromThread(self._on_error, capture_id, message)

    def open_stream(self, capture_id: str, started: float, kind: StreamKind) -> LocalStream:
        name = CaptureName(capture_id, started, kind)
        job = FileJob(self.writer, self.log_dir, name, self._report, self._encoding)
        return LocalStream(self, job)

    def stop(self) -> Deferred[None]:
        return self.writer.stop()
