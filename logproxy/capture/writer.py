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
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from logproxy.capture.encoder import StreamEncoder
from logproxy.capture.llmtap import LLMTap
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
#: Seconds items wait on the reactor side before one hand-over to the writer thread. Each
#: hand-over wakes the thread and moves the GIL between the threads twice; gathering a few
#: milliseconds of work first cuts that cost under load (capture files lag by as much).
HAND_OVER_DELAY = 0.005
#: Items worked through before the gathered data is written out (and results go back to
#: the reactor) even if more are queued: what waits for a flush stays bounded.
FLUSH_EVERY = 256


class WriterListener(Protocol):
    """Told about capture files as the writer thread writes them (an index, live events).

    Called on the writer thread, in the order the files change; must be quick and must
    not block on the reactor. An exception is logged and does not stop the writer.
    """

    def document_written(self, log_dir: str, name: CaptureName, doc: Metadata) -> None:
        """A ``*_metadata.json`` was (re)written: at a stream's start, end, and updates."""

    def data_written(self, log_dir: str, name: CaptureName, bytes_written: int) -> None:
        """The ``.bin`` grew to ``bytes_written`` (after each batch that wrote to it)."""

    def batch_done(self) -> None:
        """The writer finished a batch (a good moment to commit)."""


class WriterThread:
    """Runs file work items in order on one thread.

    @ivar _enqueued: bytes of data submitted; written by the reactor thread only.
    @ivar _done: bytes of data processed; written by the writer thread only.
        ``_enqueued - _done`` is the backlog that ``buffer_size`` bounds.
    @ivar _drain_waiters: reactor-side callbacks waiting for the backlog to fall below
        ``buffer_size // 2`` (backpressure for uploads received by the logging server).
    """

    def __init__(self, reactor: Any, buffer_size: int) -> None:
        self._reactor = reactor
        self.buffer_size = buffer_size
        self._queue: queue.SimpleQueue[list[tuple[Any, Any, int, int]]] = queue.SimpleQueue()
        self._outbox: list[tuple[Any, Any, int, int]] = []  # reactor side, see submit()
        self._enqueued = 0
        self._done = 0
        self._files_in = 0  # capture streams opened or closed: submitted (reactor thread)
        self._files_done = 0  # ... and worked through (writer thread)
        self._drain_waiters: list[Callable[[], None]] = []
        self._waiting = False  # read by the writer thread: someone waits for a drain
        self._dirty: set[FileJob] = set()
        self.listeners: list[WriterListener] = []  # add before start()
        self._dirs: set[str] = set()  # writer thread: day folders known to exist
        self._for_reactor: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._thread = threading.Thread(target=self._run, name="logproxy-writer", daemon=True)
        self._stopped: Deferred[None] | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def processed(self) -> int:
        """Bytes (and item costs) the writer has worked through: progress, if it grows."""
        return self._done

    @property
    def files_pending(self) -> int:
        """Stream opens and closes submitted but not yet done: the writer's per-capture
        work (file creation, metadata), as opposed to bytes to write."""
        return self._files_in - self._files_done

    @property
    def backlog(self) -> int:
        return self._enqueued - self._done

    def has_room(self, size: int) -> bool:
        return self._enqueued - self._done + size <= self.buffer_size

    def submit(self, fn: Callable[[Any], None], arg: Any, size: int = 0, files: int = 0) -> None:
        """Run ``fn(arg)`` on the writer thread; ``size`` counts toward the backlog,
        ``files`` toward :attr:`files_pending`.

        Items are handed over in batches, at most every ``HAND_OVER_DELAY`` seconds: waking
        the thread for every chunk would cost a futex call and GIL hand-overs each time.
        """
        self._enqueued += size
        self._files_in += files
        self._outbox.append((fn, arg, size, files))
        if len(self._outbox) == 1:
            self._reactor.callLater(HAND_OVER_DELAY, self._post)

    def _post(self) -> None:
        batch, self._outbox = self._outbox, []
        if batch:
            self._queue.put(batch)

    def call_in_reactor(self, fn: Callable[..., None], *args: Any) -> None:
        """Writer thread: run ``fn(*args)`` on the reactor after this batch. One wake-up of
        the reactor per batch, not one per capture (each costs a pipe write, a wake-up
        and a GIL hand-over)."""
        self._for_reactor.append((fn, args))

    def _run_in_reactor(self, calls: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        for fn, args in calls:
            try:
                fn(*args)
            except Exception:
                log.failure("capture writer callback failed")

    def mark_dirty(self, job: FileJob) -> None:
        """Writer thread: flush ``job`` once the current batch is done."""
        self._dirty.add(job)

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
                self._post()
                self._queue.put([(_STOP, None, 0, 0)])
            else:
                self._stopped.callback(None)
        return self._stopped

    def _run(self) -> None:
        _yield_to_the_reactor()
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while True:
            batch = get()
            items = 0
            while True:
                for fn, arg, size, files in batch:
                    if fn is _STOP:
                        self._flush()
                        self._reactor.callFromThread(self._finished)
                        return
                    try:
                        fn(arg)
                    except Exception:  # a bug must not kill the writer
                        log.failure("capture writer item failed")
                    self._done += size
                    self._files_done += files
                items += len(batch)
                if items >= FLUSH_EVERY:  # under steady load the queue is never empty
                    break
                try:
                    batch = get_nowait()
                except queue.Empty:
                    break
            self._flush()
            if self._waiting and self.backlog <= self.buffer_size // 2:
                self._reactor.callFromThread(self._fire_drained)

    def _flush(self) -> None:
        """One ``writev`` per file for everything a batch gathered: far fewer system calls
        (and GIL hand-overs with the busy reactor thread) than a write per chunk."""
        dirty, self._dirty = self._dirty, set()
        for job in dirty:
            wrote = job.flush()
            if wrote:
                self._tell("data_written", job.log_dir, job.name, job.bytes_written)
        self._tell("batch_done")
        if self._for_reactor:
            calls, self._for_reactor = self._for_reactor, []
            self._reactor.callFromThread(self._run_in_reactor, calls)

    def ensure_dir(self, path: str) -> None:
        """Writer thread: ``os.makedirs`` once per folder, not once per file."""
        if path not in self._dirs:
            os.makedirs(path, exist_ok=True)
            self._dirs.add(path)

    def forget_dir(self, path: str) -> None:
        """A folder was removed behind the writer's back (retention): check it again."""
        self._dirs.discard(path)

    def _tell(self, event: str, *args: Any) -> None:
        """Writer thread: pass an event to every listener."""
        for listener in self.listeners:
            try:
                getattr(listener, event)(*args)
            except Exception:
                log.failure("capture writer listener failed on {event}", event=event)

    def _finished(self) -> None:
        assert self._stopped is not None
        self._stopped.callback(None)


def _yield_to_the_reactor() -> None:
    """Writer thread: ask Linux not to let this thread's wake-ups preempt the reactor.

    SCHED_BATCH keeps the thread's fair share of the CPU (so captures keep up under
    load) but a batch of file work no longer interrupts the reactor thread when both
    share a core: measured on one pinned core, added latency at c=1 and the SSE delay
    per event drop a little. Elsewhere (or if refused) nothing changes.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


_IOV_MAX = 1024
#: Backlog bytes counted for an open or a close item (a metadata document and a file),
#: so that ``buffer_size`` bounds the queue under a flood of short requests too.
ITEM_COST = 2048


def _writev_all(fd: int, buffers: list[bytes]) -> int:
    """``os.writev`` until every byte is written (a short write is rare on files, not
    impossible); returns the byte count."""
    total = sum(len(b) for b in buffers)
    written = os.writev(fd, buffers)
    while written < total:
        rest = b"".join(buffers)[written:]
        written += os.write(fd, rest)
    return total


def write_json_atomically(path: str, doc: Metadata) -> None:
    """Readers (and a crash at any moment) see the old or the new document, never half."""
    # One line, no indent: only then does the json module use its C encoder (several times
    # faster, and it holds the GIL the reactor thread needs). `logproxy show` pretty-prints.
    try:
        text = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from undecodable request bytes: escape them
        text = json.dumps(doc).encode("ascii")
    folder, name = os.path.split(path)
    tmp = f"{folder}/.{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _writev_all(fd, [text, b"\n"])
    finally:
        os.close(fd)
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
        tap: LLMTap | None = None,
    ) -> None:
        self._writer = writer
        self.tap = tap
        self.log_dir = log_dir
        self._folder: str | None = None  # log_dir/YYYY-MM-DD, worked out on the writer thread
        self.name = name
        self._report = report
        self._encoding = encoding
        self._encoder: StreamEncoder | None = None
        self._fd: int | None = None
        self._pending: list[bytes] = []  # gathered during a writer batch, see flush()
        self._started_at = 0.0
        self._exchange: Metadata = {}
        self.bytes_written = 0
        self.capture_error: str | None = None
        self.exists = False  # open() found the stream already on disk; nothing is written
        self._start_pending = False  # the "completed: false" document is due (see open)
        self._start_extra: Metadata | None = None
        self.done = False

    @property
    def _dir(self) -> str:
        if self._folder is None:
            self._folder = os.path.join(self.log_dir, self.name.folder)
        return self._folder

    @property
    def bin_path(self) -> str:
        return f"{self._dir}/{self.name.bin_name}"

    @property
    def metadata_path(self) -> str:
        return f"{self._dir}/{self.name.metadata_name}"

    def _fail(self, what: str, error: OSError) -> None:
        if self.capture_error is None:
            self.capture_error = f"{what}: {error.strerror or error}"
            self._report(self.name.capture_id, self.capture_error)
        self._pending = []
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def open(self, args: tuple[Metadata, float, StreamHead | None, Metadata | None]) -> None:
        """Create the ``.bin`` (never over an existing one) and the first metadata."""
        exchange, started_at, head, extra = args
        self._exchange, self._started_at = exchange, started_at
        try:
            self._writer.ensure_dir(self._dir)
            self._fd = os.open(self.bin_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            self.exists = True
            return
        except OSError as e:
            self._writer.forget_dir(self._dir)
            self._fail("cannot create capture file", e)
        # The "completed: false" document goes out at the end of this writer batch (see
        # flush): a short exchange that also ends within the batch gets its final
        # document only, which halves the metadata writes under load.
        self._start_extra = extra
        self._start_pending = True
        self._writer.mark_dirty(self)
        if self._encoding is not None and head is not None:
            redact, max_decoded = self._encoding
            body_tap = None
            if self.tap is not None:
                if self.name.kind == "request":
                    body_tap = self.tap.request_body
                else:
                    self.tap.response_begin()
                    body_tap = self.tap.response_body
            self._encoder = StreamEncoder(head, redact, max_decoded, self._write_bytes, body_tap)

    def _write_bytes(self, data: bytes) -> None:
        if self._fd is None:
            return
        if not self._pending:
            self._writer.mark_dirty(self)
        self._pending.append(data)

    def flush(self) -> bool:
        """Write what this batch gathered (called by the writer after each batch), then the
        start document if it is still due. True if the ``.bin`` grew."""
        pending, self._pending = self._pending, []
        fd = self._fd
        wrote = False
        if fd is not None and pending:
            try:
                for start in range(0, len(pending), _IOV_MAX):
                    self.bytes_written += _writev_all(fd, pending[start : start + _IOV_MAX])
                wrote = True
            except OSError as e:
                self._fail("cannot write capture file", e)
        if self._start_pending:
            self._start_pending = False
            self._write_metadata(
                completed_at=None, completed=False, error=None, extra=self._start_extra
            )
        return wrote

    def write_at(self, args: tuple[bytes, float]) -> None:
        """A chunk and the time it arrived (for the llm observer's timings)."""
        data, at = args
        assert self.tap is not None
        self.tap.chunk_at = at
        self.write(data)

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
        tap, llm = self.tap, None
        if tap is not None:
            if self.name.kind == "request":
                tap.request_end()
                tap = None  # the response stream reports the result
            else:
                llm = tap.response_end(complete=error is None)
                extra = {**extra, "llm": llm[0]}
        self._start_pending = False  # the final document below replaces it
        self.flush()
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError as e:
                self._fail("cannot write capture file", e)
            self._fd = None
        self._write_metadata(completed_at=now(), completed=error is None, error=error, extra=extra)
        self.done = True
        # The encoder and the tap point back at this job and the exchange: let reference
        # counting free them now rather than a garbage collection much later.
        self._encoder = None
        self.tap = None
        if tap is not None and llm is not None:
            self._writer.call_in_reactor(tap.on_result, *llm)

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
            extra={
                **(extra or {}),
                "capture_error": self.capture_error,
                "writer_pid": os.getpid(),  # lets a restart tell a crash from a live writer
            },
        )
        try:
            self._writer.ensure_dir(self._dir)
            write_json_atomically(self.metadata_path, doc)
        except OSError as e:
            self._writer.forget_dir(self._dir)
            self._fail("cannot write capture metadata", e)
            return
        self._writer._tell("document_written", self.log_dir, self.name, doc)


class LocalStream:
    """Reactor-thread side of one locally stored stream (implements ``CaptureStream``).

    @ivar _dropping: set once the writer's queue was full for this stream; every later
        chunk is dropped too, so the file stays a clean prefix of the body.
    @ivar _lost: bytes dropped, reported as ``bytes_lost``.
    """

    def __init__(self, store: LocalStore, job: FileJob, refused: bool = False) -> None:
        self._store = store
        self._job = job
        self._refused = refused  # the writer was too far behind: this capture is skipped
        self._begun = False
        self._dropping = False
        self._lost = 0

    def begin(self, head: StreamHead | None, exchange: Metadata) -> None:
        if self._refused:
            return
        self._begun = True
        self._store.writer.submit(
            self._job.open, (dict(exchange), now(), head, None), ITEM_COST, files=1
        )

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
        job = self._job
        if job.tap is not None and job.name.kind == "response":
            writer.submit(job.write_at, (data, time.time()), size)
        else:
            writer.submit(job.write, data, size)

    def end(self, exchange: Metadata, error: str | None, extra: Metadata | None = None) -> None:
        if not self._begun:
            return
        info: Metadata = {"truncated": self._dropping, "bytes_lost": self._lost}
        if extra:
            info.update(extra)
        if self._lost:
            self._store.lost(self._lost)
        self._store.writer.submit(
            self._job.close, (dict(exchange), error, info), ITEM_COST, files=1
        )


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
        on_skip: Callable[[], None] = lambda: None,
    ) -> None:
        self.writer = writer
        self.log_dir = log_dir
        self._encoding: EncodingSettings = (redact_names, max_decoded)
        self._on_error = on_error
        self.dropped = on_drop
        self.lost = on_lost
        self.skipped = on_skip
        self._refused_id: str | None = None

    def _report(self, capture_id: str, message: str) -> None:
        # Runs on the writer thread; hop to the reactor for logging and metrics.
        self.writer.call_in_reactor(self._on_error, capture_id, message)

    def open_stream(
        self,
        capture_id: str,
        started: float,
        kind: StreamKind,
        tap: LLMTap | None = None,
        encoded: bool = False,
    ) -> LocalStream:
        """``encoded``: the caller writes finished ``.bin`` bytes (the remote fallback),
        not raw wire bytes to decode. ``tap``: shared by both streams of an LLM call."""
        name = CaptureName(capture_id, started, kind)
        encoding = None if encoded else self._encoding
        job = FileJob(self.writer, self.log_dir, name, self._report, encoding, tap)
        # Decided once per capture (its request stream opens first): under sustained
        # overload the writer's backlog would grow without end, so new captures are
        # skipped, whole, until it drains. Counted and logged, never silent.
        if kind == "request":
            self._refused_id = None
            if not self.writer.has_room(4 * ITEM_COST):
                self._refused_id = capture_id
                self.skipped()
        return LocalStream(self, job, refused=capture_id == self._refused_id)

    def stop(self) -> Deferred[None]:
        return self.writer.stop()
