"""The capture index inside a running service: who writes, who reads, on which thread.

* Writes: the :class:`~logproxy.index.updater.IndexUpdater`, a listener on the capture
  writer thread, with its own connection (live captures and uploads), plus the
  start-up reconcile, whose chunks are read in the thread pool and applied on the
  writer thread too. The writer thread is the only writer while the service runs
  (retention deletes from the thread pool; SQLite's busy timeout orders the two).
* Reads: :class:`IndexReader` runs queries in the reactor's thread pool, one read
  connection per pool thread (WAL: readers never wait for the writer, nor block it).
  Nothing touches SQLite on the reactor thread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from logproxy.capture.writer import WriterThread
from logproxy.index.events import EventBus
from logproxy.index.reconcile import Chunk, reconcile_chunks, shared_lock
from logproxy.index.schema import IndexInfo, IndexUnavailable, connect, index_path, open_index
from logproxy.index.store import text_search_mode
from logproxy.index.updater import IndexUpdater

log = Logger()

T = TypeVar("T")

#: Seconds between two progress lines of a long start-up reconcile.
PROGRESS_EVERY = 10.0


class IndexClosed(Exception):
    """The service is stopping; the index is no longer read."""


class IndexMissing(Exception):
    """No capture was ever indexed here: the index file does not exist (yet)."""


class IndexReader:
    """Runs read functions ``fn(connection, *args)`` in the reactor's thread pool.

    @ivar _idle: read connections not in use, by thread (one per pool thread at most).
    @ivar _busy: connections a pool thread is using right now.
    """

    def __init__(self, reactor: Any, path: str) -> None:
        self._reactor = reactor
        self.path = path
        self._lock = threading.Lock()
        self._idle: dict[int, sqlite3.Connection] = {}
        self._busy: dict[int, sqlite3.Connection] = {}
        self.text_search: str | None = None  # known once a connection has read it
        self.closed = False

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """``fn(connection, text_search, *args)`` in the thread pool. Fails with
        :class:`IndexMissing` while there is no index, :class:`IndexClosed` at shutdown."""
        pool = self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, self._call, fn, *args)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        thread = threading.get_ident()
        with self._lock:
            if self.closed:
                raise IndexClosed("the capture index is closed")
            conn = self._idle.pop(thread, None)
        if conn is None:
            if not os.path.exists(self.path):
                raise IndexMissing(self.path)
            conn = connect(self.path, read_only=True)
        with self._lock:
            self._busy[thread] = conn
        try:
            mode = self.text_search
            if mode is None:
                try:
                    mode = self.text_search = text_search_mode(conn)
                except sqlite3.OperationalError:  # being created right now
                    raise IndexMissing(self.path) from None
            return fn(conn, mode, *args)
        finally:
            with self._lock:
                self._busy.pop(thread, None)
                if self.closed:
                    conn.close()
                else:
                    self._idle[thread] = conn

    def close(self) -> None:
        """Close idle connections now, busy ones as their query returns."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, {}
        for conn in idle.values():
            conn.close()


class CaptureIndex:
    """The index of one ``log_dir`` in a running service.

    Life cycle: built (schema opened or created, listener registered on the writer)
    before the writer starts; :meth:`reconcile` once crash recovery has run;
    :meth:`stop` when the service stops (ends event streams, stops reconciling);
    :meth:`close` once the writer thread has stopped.
    """

    def __init__(
        self,
        reactor: Any,
        writer: WriterThread,
        log_dir: str,
        text_search: str | None = None,
        keepalive_interval: float = 15.0,
        bus: Any = None,
        reconciling: bool = True,
    ) -> None:
        self._reactor = reactor
        self._writer = writer
        self.log_dir = log_dir
        self.path = index_path(log_dir)
        self._text_search = text_search
        self._open_lock = threading.Lock()
        self._lock_fd: int | None = None
        self.info: IndexInfo | None = None
        # A worker process passes a bus that forwards events to the main process.
        self.bus = bus if bus is not None else EventBus(reactor, keepalive_interval)
        self._poke_call: Any = None
        self._closed = False
        self.updater = IndexUpdater(
            self.open, log_dir, reactor, self.bus, reconciling=reconciling, wake=self._wake
        )
        writer.listeners.append(self.updater)
        self.reader = IndexReader(reactor, self.path)
        self._chunks: Generator[Chunk, None, None] | None = None
        self._reconciled: Deferred[int] | None = None
        self._stopping = False
        self._step_running = False
        self._step_done: Deferred[None] | None = None
        self.reconcile_counts = [0, 0]  # captures looked at, captures (re)indexed
        self._last_report = 0.0
        self.ready = False  # the start-up reconcile has finished
        if os.path.isdir(log_dir):  # captures to index already: open now, fail early
            self.open()

    def open(self) -> IndexInfo:
        """Open or create the index (once; any thread). Raises IndexUnavailable."""
        with self._open_lock:
            if self.info is not None:
                return self.info
            try:
                os.makedirs(self.log_dir, exist_ok=True)
                lock = shared_lock(self.log_dir)
            except OSError as e:
                raise IndexUnavailable(
                    f"cannot use the capture index in {self.log_dir}: {e.strerror or e}"
                ) from None
            if lock is None:
                raise IndexUnavailable(
                    "logproxy reindex is rebuilding the capture index; restart when it is done"
                )
            try:
                self.info = open_index(self.path, self._text_search)
            except IndexUnavailable:
                os.close(lock)
                raise
            self._lock_fd = lock
            return self.info

    # -- grouped commits

    def _wake(self, delay: float) -> None:
        """Writer thread: run a writer batch in ``delay`` seconds (to commit)."""
        self._reactor.callFromThread(self._schedule_poke, delay)

    def _schedule_poke(self, delay: float) -> None:
        if self._closed:
            return
        if self._poke_call is None or not self._poke_call.active():
            self._poke_call = self._reactor.callLater(max(0.0, delay), self._poke)

    def _poke(self) -> None:
        self._poke_call = None
        self._writer.submit(lambda _: self.updater.woken(), None)

    # -- start-up reconcile

    def reconcile(self) -> Deferred[int]:
        """Bring the index in line with the files; fires with the captures (re)indexed."""
        d: Deferred[int] = Deferred()
        self._last_report = time.monotonic()
        if self.info is None:  # nothing on disk at start-up: nothing to reconcile
            self._writer.submit(lambda _: self.updater.reconcile_done(), None)
            self.ready = True
            d.callback(0)
            return d
        self._reconciled = d
        self._chunks = reconcile_chunks(self.info.path, self.log_dir)
        self._step()
        return d

    def _step(self) -> None:
        if self._stopping or self._chunks is None:
            self._finish(None)
            return
        self._step_running = True
        chunks = self._chunks
        d = self.reader.run(lambda _conn, _mode: next(chunks, None))
        d.addCallbacks(self._got, self._failed)

    def _got(self, chunk: Chunk | None) -> None:
        if chunk is None:
            self._writer.submit(lambda _: self.updater.reconcile_done(), None)
            self._finish(None)
            return
        self._writer.submit(self._apply, chunk)

    def _apply(self, chunk: Chunk) -> None:
        """Writer thread."""
        try:
            written = self.updater.apply_chunk(chunk)
        except Exception:
            self._reactor.callFromThread(self._failed, Failure())
            return
        self._reactor.callFromThread(self._applied, chunk.scanned, written)

    def _applied(self, scanned: int, written: int) -> None:
        self.reconcile_counts[0] += scanned
        self.reconcile_counts[1] += written
        self._step_running = False
        if self._step_done is not None:
            self._step_done.callback(None)
            self._step_done = None
        now = time.monotonic()
        if now - self._last_report > PROGRESS_EVERY:
            self._last_report = now
            log.info(
                "capture index: brought {n} captures up to date so far",
                n=self.reconcile_counts[1],
            )
        self._step()

    def _failed(self, failure: Failure) -> None:
        if failure.check(IndexClosed, IndexMissing):
            self._finish(None)
            return
        log.failure("capture index: reconciling with the capture files failed", failure)
        self._writer.submit(lambda _: self.updater.reconcile_done(), None)
        self._finish(failure)

    def _finish(self, failure: Failure | None) -> None:
        self._step_running = False
        if self._step_done is not None:
            self._step_done.callback(None)
            self._step_done = None
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            chunks.close()  # closes its read connection
        d, self._reconciled = self._reconciled, None
        if d is None:
            return
        if failure is None:
            self.ready = not self._stopping
            if self.reconcile_counts[1]:
                log.info(
                    "capture index: {n} captures (re)indexed from the files",
                    n=self.reconcile_counts[1],
                )
            d.callback(self.reconcile_counts[1])
        else:
            d.callback(0)

    # -- stopping

    def stop(self) -> Deferred[None]:
        """End event streams and tails; stop reconciling after the current chunk."""
        self._stopping = True
        self.bus.close()
        if self._step_running:
            self._step_done = Deferred()
            return self._step_done
        return succeed(None)

    def close(self) -> None:
        """Once the writer thread has stopped: commit what waits, close connections,
        release the lock."""
        self._closed = True
        if self._poke_call is not None and self._poke_call.active():
            self._poke_call.cancel()
        self._poke_call = None
        self.updater.close()
        self.reader.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
