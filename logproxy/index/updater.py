"""Keeps the index current as captures are written: a listener on the writer thread.

:class:`IndexUpdater` implements :class:`~logproxy.capture.writer.WriterListener`. The
writer thread calls it after every metadata document and ``.bin`` growth, for captures
this process proxies and uploads the logging Site receives alike; it gathers the
changes of one writer batch in memory and writes them in one transaction in
:meth:`IndexUpdater.batch_done`. It owns one connection, used by the writer thread only.

Costs on the writer thread, per capture: one small upsert per batch that changed it,
reading up to :data:`~logproxy.index.schema.BODY_TEXT_LIMIT` of each body once its
stream ends (the file was just written, so it is in the page cache) and tokenizing it
(FTS5). Progress (``.bin`` growth) updates are throttled per capture.

Events for the :class:`~logproxy.index.events.EventBus` are built only while someone
listens, after the batch's commit (a client that reacts to ``start`` finds the row),
and are handed to the reactor in one ``callFromThread`` per batch.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from logproxy.capture.model import CaptureName, Metadata, file_stem
from logproxy.index.events import PROGRESS_INTERVAL, EventBus
from logproxy.index.reconcile import Chunk, apply_chunk
from logproxy.index.rows import (
    REQUEST_TEXT,
    RESPONSE_TEXT,
    Entry,
    dumps,
    list_item,
    mtime_ns,
    output_text_of,
    request_text_and_model,
    response_text,
    started_us_of,
    stem_us,
)
from logproxy.index.schema import IndexInfo, IndexUnavailable, connect
from logproxy.index.store import load_entry, update_response_bytes, write_entry

log = Logger()

#: Captures kept in memory between their documents (more are reloaded from the index).
LIVE_LIMIT = 4096
#: Rows waiting for a failed commit to succeed before the updater gives up on them
#: (the next start-up's reconcile repairs the index).
PENDING_LIMIT = 20_000
#: A finished request's text waits this long for its response to end, so that both
#: bodies go into the text index in one insert (FTS5 re-tokenizes a whole row on any
#: update); a capture still running then becomes searchable by its request.
TEXT_HOLD = 1.0
#: Changes are committed at most this often (with a ``wake`` hook): a commit costs
#: more than most of the writes in it, and a capture changes three or four times.
COMMIT_INTERVAL = 0.05
#: ... unless this many captures are waiting.
COMMIT_BATCH = 500


class IndexUpdater:
    """The writer-thread side of the index (a ``WriterListener``).

    @ivar _live: captures whose response has not ended, most recently used last.
    @ivar _dirty: captures changed in this batch, written in :meth:`batch_done`.
    @ivar _progress: ``order_key -> size``: response sizes to record (throttled).
    @ivar _events: ``(kind, entry)`` to publish once the batch is committed.
    @ivar _growth: ``(id, size, final)`` for tail watchers.
    @ivar _held: request texts waiting for their response (see :data:`TEXT_HOLD`), with
        the time they are written anyway.
    """

    def __init__(
        self,
        opener: Callable[[], IndexInfo],
        log_dir: str,
        reactor: Any,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.monotonic,
        reconciling: bool = False,
        wake: Callable[[float], None] | None = None,
        commit_interval: float = COMMIT_INTERVAL,
    ) -> None:
        """``wake(delay)``: have the writer thread run a batch after ``delay`` seconds
        (any thread may call it); with it, commits are grouped (at most one every
        ``commit_interval`` seconds), without it every batch commits."""
        self._opener = opener
        self.text_search = ""
        self.log_dir = log_dir
        self._reactor = reactor
        self._bus = bus
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._live: OrderedDict[str, Entry] = OrderedDict()
        self._dirty: dict[str, Entry] = {}
        self._progress: dict[str, tuple[Entry, int]] = {}
        self._events: list[tuple[str, Entry]] = []
        self._growth: list[tuple[str, int, bool]] = []
        self._held: dict[str, tuple[Entry, str, float]] = {}
        self._wake = wake
        self._commit_interval = commit_interval
        self._wake_pending = False
        self._last_commit = 0.0
        self._failing = False
        # While a reconcile runs: every id the live path has seen (it knows better).
        self._reconciling = reconciling
        self._seen: set[str] = set()
        self.commits = 0
        self.closed = False

    # -- connection (writer thread)

    def _connection(self) -> sqlite3.Connection:
        """The writer's connection; the index file is created on first use (a service
        that never writes a capture leaves no index behind). Raises IndexUnavailable."""
        if self._conn is None:
            info = self._opener()
            self.text_search = info.text_search
            self._conn = connect(info.path)
        return self._conn

    def close(self) -> None:
        """Close the connection (after the writer thread has stopped). Request texts
        still held are written first."""
        pending = self._held or self._dirty or self._progress
        if pending and self._conn is not None and not self.closed:
            for capture_id in list(self._held):
                self._release(capture_id)
            self._commit()
        self.closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- WriterListener

    def document_written(self, log_dir: str, name: CaptureName, doc: Metadata) -> None:
        if log_dir != self.log_dir or self.closed:
            return
        try:
            self._connection()
        except IndexUnavailable as e:
            log.warn("capture index disabled: {reason}", reason=str(e))
            self.closed = True
            return
        capture_id, kind = name.capture_id, name.kind
        if self._reconciling:
            self._seen.add(capture_id)
        entry, new = self._entry(name, doc)
        entry.set_doc(kind, doc)
        base = os.path.join(log_dir, entry.day, f"{entry.stem}_{kind}")  # the file names
        mtime = mtime_ns(base + "_metadata.json")
        final = doc.get("completed_at") is not None
        bin_path = base + ".bin"
        if kind == "request":
            entry.request_mtime = mtime
            if final and not entry.text_indexed & REQUEST_TEXT:
                text, model = request_text_and_model(bin_path)
                entry.sniffed_model = model
                if entry.finished:
                    entry.request_text = text or ""
                else:
                    self._held[capture_id] = (entry, text or "", self._clock() + TEXT_HOLD)
        else:
            entry.response_mtime = mtime
            if final:
                entry.response_text = response_text(bin_path) or ""
                entry.output_text = output_text_of(doc) or ""
                self._release(capture_id)
            elif entry.last_progress == 0.0:
                entry.last_progress = self._clock()  # the next progress in 0.25 s
        self._dirty[capture_id] = entry
        self._progress.pop(capture_id, None)
        bus = self._bus
        if bus is not None:
            if new:
                self._events.append(("start", entry))
            if kind == "response":
                self._events.append(("end" if final else "progress", entry))
                if bus.watched(capture_id):
                    size = doc.get("bytes_written")
                    self._growth.append((capture_id, size if isinstance(size, int) else 0, final))

    def data_written(self, log_dir: str, name: CaptureName, bytes_written: int) -> None:
        if name.kind != "response" or log_dir != self.log_dir or self.closed:
            return
        entry = self._live.get(name.capture_id)
        if entry is None or entry.finished:
            return
        entry.live_response_bytes = bytes_written
        bus = self._bus
        if bus is not None and bus.watched(name.capture_id):
            self._growth.append((name.capture_id, bytes_written, False))
        now = self._clock()
        if now - entry.last_progress < PROGRESS_INTERVAL:
            return
        entry.last_progress = now
        if name.capture_id not in self._dirty:
            self._progress[name.capture_id] = (entry, bytes_written)
        if bus is not None:
            self._events.append(("progress", entry))

    def batch_done(self) -> None:
        if self.closed:
            return
        if self._held:
            now = self._clock()
            for capture_id in [i for i, (_, _, due) in self._held.items() if due <= now]:
                self._release(capture_id)
        if self._dirty or self._progress:
            since = self._clock() - self._last_commit
            if (
                self._wake is None
                or since >= self._commit_interval
                or len(self._dirty) >= COMMIT_BATCH
            ):
                self._commit()
            elif not self._wake_pending:
                self._wake_pending = True
                self._wake(self._commit_interval - since)
        if self._growth or (self._events and not (self._dirty or self._progress)):
            self._publish()

    def woken(self) -> None:
        """The batch that ``wake`` asked for (its ``batch_done`` commits)."""
        self._wake_pending = False

    # -- reconciling (writer thread, items submitted by CaptureIndex)

    def apply_chunk(self, chunk: Chunk) -> int:
        """Write a reconcile chunk, leaving alone the captures the live path has seen."""
        if self.closed:
            return 0
        return apply_chunk(self._connection(), chunk, self.text_search, skip=self._seen)

    def reconcile_done(self) -> None:
        self._reconciling = False
        self._seen = set()

    # -- internals

    def _release(self, capture_id: str) -> None:
        """A held request text goes into the next write of its capture."""
        held = self._held.pop(capture_id, None)
        if held is not None:
            entry, text, _ = held
            entry.request_text = text
            self._dirty[capture_id] = entry

    def _entry(self, name: CaptureName, doc: Metadata) -> tuple[Entry, bool]:
        """The capture's state, and whether the index has never seen it."""
        capture_id = name.capture_id
        entry = self._live.get(capture_id)
        if entry is not None:
            self._live.move_to_end(capture_id)
            return entry, False
        entry = self._dirty.get(capture_id)
        new = False
        if entry is None:
            entry = load_entry(self._connection(), capture_id)
        if entry is None:
            stem = file_stem(capture_id, name.started)
            meta = doc.get("metadata")
            started = (
                started_us_of(meta.get("request_started_at")) if isinstance(meta, dict) else None
            )
            entry = Entry(capture_id, stem, started if started is not None else stem_us(stem))
            new = True
        self._live[capture_id] = entry
        return entry, new

    def _commit(self) -> None:
        conn = self._connection()
        dirty, progress = self._dirty, self._progress
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for entry in dirty.values():
                    write_entry(conn, entry, self.text_search)
                for entry, size in progress.values():
                    if entry.order_key is not None:
                        update_response_bytes(conn, entry.order_key, size)
                        if entry.written is not None:
                            entry.written["response_bytes"] = size
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            # Keep the changes for the next batch (the file may be busy or the disk
            # full); past PENDING_LIMIT give up: the next start-up reconciles.
            if not self._failing:
                self._failing = True
                log.warn("capture index: cannot write ({error}); will retry", error=e)
            if len(dirty) > PENDING_LIMIT:
                log.warn("capture index: dropping {n} pending updates", n=len(dirty))
                self._dirty, self._progress = {}, {}
            return
        if self._failing:
            self._failing = False
            log.info("capture index: writing again")
        self.commits += 1
        self._last_commit = self._clock()
        self._dirty, self._progress = {}, {}
        for capture_id, entry in dirty.items():
            if entry.finished:
                self._live.pop(capture_id, None)
        while len(self._live) > LIVE_LIMIT:
            capture_id, _ = self._live.popitem(last=False)
            self._release(capture_id)  # written with the next batch

    def _publish(self) -> None:
        """Tail growth now; events once their captures are committed (a client that
        reacts to ``start`` finds the capture)."""
        growth = self._growth
        self._growth = []
        events: list[tuple[str, Entry]] = []
        if not (self._dirty or self._progress):
            events, self._events = self._events, []
        bus = self._bus
        if bus is None:
            return
        payload: list[tuple[str, bytes]] = []
        if bus.active():
            for kind, entry in events:
                if entry.order_key is None:
                    continue  # not in the index (its write failed): nothing to point at
                payload.append((kind, event_data(entry)))
        if payload or growth:
            self._reactor.callFromThread(bus.deliver, payload, growth)


def event_data(entry: Entry) -> bytes:
    """An event's ``data:``: the capture's list item, as ``GET /api/requests`` has it."""
    return dumps(list_item(entry.values(), entry.request_doc, entry.response_doc))


__all__ = ["RESPONSE_TEXT", "IndexUpdater", "event_data"]
