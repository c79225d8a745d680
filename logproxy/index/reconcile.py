"""Bringing the index in line with the capture files: at start-up, and ``logproxy reindex``.

The files are the truth; the index may lag them after a crash (a batch written but not
committed), after captures written while no index was kept, or after files were deleted
by hand. :func:`reconcile_chunks` compares the two cheaply:

* Each day folder's mtime is recorded (table ``days``) once it has been compared. A
  folder whose mtime has not changed since has had no file added, replaced or removed
  (metadata documents are replaced by rename, which updates it), so it is skipped
  without listing it.
* In a folder that changed, the file names say which captures exist; a capture missing
  from the index, or whose metadata files' mtimes differ from those the index recorded,
  is read again (its two documents and the start of its bodies); rows whose files are
  all gone are deleted.
* Rows of day folders that no longer exist are deleted.

The work comes in :class:`Chunk`\\ s, produced by a generator that only reads (the thread
pool runs it) and applied by :func:`apply_chunk` where the index is written: on the
writer thread in a running service (so that a capture this process is writing is
never overwritten with an older state: the updater skips ids it has seen itself), or
directly by ``logproxy reindex``, which builds a new index file from nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Container, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from logproxy.capture.model import read_document
from logproxy.index.rows import (
    Entry,
    output_text_of,
    request_text_and_model,
    response_text,
    started_us_of,
    stem_us,
)
from logproxy.index.schema import (
    LOCK_NAME,
    TEXT_TABLE,
    IndexInfo,
    connect,
    open_index,
    remove,
)
from logproxy.index.store import delete_ids, delete_keys, write_entry

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_FILE = re.compile(
    r"(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.\d{3}_"
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}))_"
    r"(request|response)(_metadata\.json|\.bin)\Z"
)
#: Captures read per chunk.
CHUNK_SIZE = 200
#: A folder changed this recently may still be written: compare it again next time.
HOT_SECONDS = 2.0
_DAY_US = 86_400_000_000


@dataclass
class Chunk:
    """Index changes that bring part of the log directory in line."""

    entries: list[Entry] = field(default_factory=list)
    delete_ids: list[str] = field(default_factory=list)
    #: Day folders now compared, with the mtime they had before listing.
    day_marks: list[tuple[str, int]] = field(default_factory=list)
    #: Day folders that are gone: delete their rows and marks.
    forget_days: list[str] = field(default_factory=list)
    #: Captures looked at (changed or not), for progress reports.
    scanned: int = 0


@dataclass
class _OnDisk:
    capture_id: str
    stem: str
    names: set[str] = field(default_factory=set)


def day_start_us(day: str) -> int:
    moment = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000


def list_day(folder: str) -> dict[str, _OnDisk]:
    """The captures of one day folder by id, from file names only."""
    found: dict[str, _OnDisk] = {}
    try:
        names = os.listdir(folder)
    except OSError:
        return found
    for name in names:
        match = _FILE.match(name)
        if match is None:
            continue
        stem, capture_id, kind, suffix = match.groups()
        capture = found.get(capture_id)
        if capture is None:
            capture = found[capture_id] = _OnDisk(capture_id, stem)
        capture.names.add(kind + suffix)
    return found


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def entry_from_files(folder: str, capture_id: str, stem: str) -> Entry:
    """A capture as the live updater would have indexed it, from its files."""
    paths = {
        (kind, meta): os.path.join(folder, f"{stem}_{kind}{'_metadata.json' if meta else '.bin'}")
        for kind in ("request", "response")
        for meta in (True, False)
    }
    # mtimes first: a document replaced after this is seen as changed next time
    req_mtime = _mtime(paths["request", True])
    resp_mtime = _mtime(paths["response", True])
    req = read_document(paths["request", True]) if req_mtime is not None else None
    resp = read_document(paths["response", True]) if resp_mtime is not None else None
    started = None
    for doc in (req, resp):
        meta = doc.get("metadata") if doc else None
        if started is None and isinstance(meta, dict):
            started = started_us_of(meta.get("request_started_at"))
    entry = Entry(capture_id, stem, started if started is not None else stem_us(stem))
    entry.request_doc, entry.response_doc = req, resp
    entry.request_mtime, entry.response_mtime = req_mtime, resp_mtime
    if req is not None and req.get("completed_at") is not None:
        text, model = request_text_and_model(paths["request", False])
        entry.request_text, entry.sniffed_model = text or "", model
    if resp is not None:
        if resp.get("completed_at") is not None:
            entry.response_text = response_text(paths["response", False]) or ""
            entry.output_text = output_text_of(resp) or ""
        else:
            with contextlib.suppress(OSError):
                entry.live_response_bytes = os.path.getsize(paths["response", False])
    return entry


def _index_days(conn: sqlite3.Connection) -> list[str]:
    """The days the index has rows for, with one seek per day."""
    days: list[str] = []
    row = conn.execute("SELECT min(order_key) FROM captures").fetchone()
    key = row[0] if row else None
    while key is not None:
        day = conn.execute("SELECT day FROM captures WHERE order_key = ?", (key,)).fetchone()[0]
        if day not in days:
            days.append(day)
        next_key = (day_start_us(day) + _DAY_US) << 10
        if next_key <= key:
            next_key = key + 1
        key = conn.execute(
            "SELECT min(order_key) FROM captures WHERE order_key >= ?", (next_key,)
        ).fetchone()[0]
    return days


def _rows_of_day(conn: sqlite3.Connection, day: str) -> dict[str, tuple[int | None, int | None]]:
    """``id -> (request_mtime, response_mtime)`` of the index rows of one day folder."""
    start = day_start_us(day)
    rows = conn.execute(
        "SELECT id, request_mtime, response_mtime FROM captures "
        "WHERE order_key >= ? AND order_key < ? AND day = ?",
        ((start - _DAY_US) << 10, (start + 2 * _DAY_US) << 10, day),
    ).fetchall()
    return {capture_id: (req, resp) for capture_id, req, resp in rows}


def reconcile_chunks(
    index_file: str, log_dir: str, chunk_size: int = CHUNK_SIZE, full: bool = False
) -> Generator[Chunk, None, None]:
    """The changes that bring the index at ``index_file`` in line with ``log_dir``.

    Only reads (the index through its own read-only connection, and the files); the
    caller applies each chunk with :func:`apply_chunk`. ``full``: compare every day
    folder, changed or not.
    """
    conn = connect(index_file, read_only=True)
    try:
        marks = dict(conn.execute("SELECT day, mtime_ns FROM days").fetchall())
        try:
            on_disk = sorted(
                e.name for e in os.scandir(log_dir) if _DAY.match(e.name) and e.is_dir()
            )
        except OSError:
            on_disk = []
        chunk = Chunk()
        disk_set = set(on_disk)
        gone = sorted((set(marks) | set(_index_days(conn))) - disk_set)
        if gone:
            chunk.forget_days += gone
        for day in on_disk:
            folder = os.path.join(log_dir, day)
            try:
                folder_mtime = os.stat(folder).st_mtime_ns
            except OSError:
                continue
            if not full and marks.get(day) == folder_mtime:
                continue
            captures = list_day(folder)
            known = _rows_of_day(conn, day)
            for capture_id, capture in sorted(captures.items(), key=lambda kv: kv[1].stem):
                chunk.scanned += 1
                row = known.get(capture_id)
                if row is not None:
                    current = (
                        _mtime(os.path.join(folder, f"{capture.stem}_request_metadata.json")),
                        _mtime(os.path.join(folder, f"{capture.stem}_response_metadata.json")),
                    )
                    if current == row:
                        continue
                chunk.entries.append(entry_from_files(folder, capture_id, capture.stem))
                if len(chunk.entries) >= chunk_size:
                    yield chunk
                    chunk = Chunk()
            chunk.delete_ids += [i for i in known if i not in captures]
            if time.time() - folder_mtime / 1e9 > HOT_SECONDS:
                chunk.day_marks.append((day, folder_mtime))
        if chunk.entries or chunk.delete_ids or chunk.day_marks or chunk.forget_days:
            yield chunk
    finally:
        conn.close()


def apply_chunk(
    conn: sqlite3.Connection, chunk: Chunk, text_search: str, skip: Container[str] = ()
) -> int:
    """Write one chunk in one transaction; ids in ``skip`` are left alone (the live
    updater has newer information). Returns the captures written."""
    written = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for day in chunk.forget_days:
            start = day_start_us(day)
            keys = [
                row[0]
                for row in conn.execute(
                    "SELECT order_key FROM captures "
                    "WHERE order_key >= ? AND order_key < ? AND day = ?",
                    ((start - _DAY_US) << 10, (start + 2 * _DAY_US) << 10, day),
                )
            ]
            delete_keys(conn, keys, text_search)
            conn.execute("DELETE FROM days WHERE day = ?", (day,))
        for entry in chunk.entries:
            if entry.capture_id in skip:
                continue
            write_entry(conn, entry, text_search)
            written += 1
        delete_ids(conn, [i for i in chunk.delete_ids if i not in skip], text_search)
        conn.executemany(
            "INSERT OR REPLACE INTO days(day, mtime_ns) VALUES (?, ?)", chunk.day_marks
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return written


def count_captures(log_dir: str) -> int:
    """How many captures ``log_dir`` holds (file names only)."""
    total = 0
    try:
        days = [e.path for e in os.scandir(log_dir) if _DAY.match(e.name) and e.is_dir()]
    except OSError:
        return 0
    for folder in days:
        total += len(list_day(folder))
    return total


class IndexLocked(Exception):
    """A running logproxy holds the index."""


@contextlib.contextmanager
def exclusive_lock(log_dir: str) -> Iterator[None]:
    """Hold the index lock exclusively (``logproxy reindex``); IndexLocked if a running
    service holds it."""
    import fcntl

    fd = os.open(os.path.join(log_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexLocked(
                "a running logproxy uses this log directory's index; stop it first "
                "(it brings the index up to date by itself when it starts)"
            ) from None
        yield
    finally:
        os.close(fd)


def shared_lock(log_dir: str) -> int | None:
    """Hold the index lock shared (a running service); the descriptor, or None if
    ``logproxy reindex`` is rebuilding the index right now."""
    import fcntl

    fd = os.open(os.path.join(log_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def rebuild(
    log_dir: str,
    index_file: str,
    text_search: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, IndexInfo]:
    """Build a new index of ``log_dir`` in a temporary file, then rename it over
    ``index_file``. Returns (captures indexed, info). The caller holds the lock."""
    total = count_captures(log_dir)
    tmp = f"{index_file}.tmp-{os.getpid()}"
    remove(tmp)
    try:
        info = open_index(tmp, text_search)
        conn = connect(tmp)
        done = 0
        try:
            if progress is not None:
                progress(0, total)
            for chunk in reconcile_chunks(tmp, log_dir, full=True):
                apply_chunk(conn, chunk, info.text_search)
                done += chunk.scanned
                if progress is not None and chunk.scanned:
                    progress(done, total)
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        count = connect(tmp, read_only=True)
        try:
            indexed = count.execute("SELECT count(*) FROM captures").fetchone()[0]
        finally:
            count.close()
        # Nobody has the old index open (the caller holds the lock): its WAL files go.
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(index_file + suffix)
        os.replace(tmp, index_file)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp + suffix)
    except BaseException:
        remove(tmp)
        raise
    return indexed, IndexInfo(index_file, info.text_search)


__all__ = [
    "TEXT_TABLE",
    "Chunk",
    "IndexLocked",
    "apply_chunk",
    "count_captures",
    "entry_from_files",
    "exclusive_lock",
    "rebuild",
    "reconcile_chunks",
    "shared_lock",
]
