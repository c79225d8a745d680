"""``logging.retention``: delete the oldest captures past a maximum age or total size.

A long-running proxy must not fill its disk. A periodic job (off the reactor, in the
thread pool) scans ``log_dir``, groups files into captures by their shared name stem,
and deletes whole captures, oldest first, then their rows in the capture index (if
there is one). Captures younger than ``GRACE`` seconds are never touched: they may
still be in flight. The index file counts toward ``max_bytes`` (it holds up to 256 KiB
of each body's text for search), so ``max_bytes`` bounds all of ``log_dir``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

log = Logger()

#: Seconds between two retention passes.
INTERVAL = 60.0
#: Captures younger than this are left alone (they may still be written).
GRACE = 300.0

_STEM = re.compile(
    r"(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.\d{3})_([0-9a-f-]{36})_(request|response)"
)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class Capture:
    """All files of one capture (up to four), found on disk."""

    stem: str
    started: float
    size: int = 0
    paths: list[str] = field(default_factory=list)


def _started(stamp: str) -> float:
    moment = datetime.strptime(stamp, "%Y-%m-%d_%H-%M-%S.%f").replace(tzinfo=UTC)
    return moment.timestamp()


def scan(log_dir: str) -> list[Capture]:
    """Every capture under ``log_dir``, oldest first. Unknown files are ignored."""
    captures: dict[str, Capture] = {}
    try:
        days = sorted(e.path for e in os.scandir(log_dir) if e.is_dir() and _DAY.fullmatch(e.name))
    except OSError:
        return []
    for day in days:
        try:
            entries = list(os.scandir(day))
        except OSError:
            continue
        for entry in entries:
            match = _STEM.match(entry.name)
            if match is None:
                continue
            stem = f"{match.group(1)}_{match.group(2)}"
            capture = captures.get(stem)
            if capture is None:
                capture = captures[stem] = Capture(stem, _started(match.group(1)))
            try:
                capture.size += entry.stat().st_size
            except OSError:
                continue
            capture.paths.append(entry.path)
    return sorted(captures.values(), key=lambda c: (c.started, c.stem))


def choose(
    captures: Iterable[Capture],
    now: float,
    max_age: float | None,
    max_bytes: int | None,
    other_bytes: int = 0,
) -> list[Capture]:
    """The captures to delete (``captures`` oldest first): all older than ``max_age``, then
    the oldest until the total (with ``other_bytes``: the index) is within ``max_bytes``,
    never one younger than GRACE."""
    ordered = list(captures)
    total = sum(c.size for c in ordered) + other_bytes
    doomed: list[Capture] = []
    for capture in ordered:
        if now - capture.started < GRACE:
            break
        too_old = max_age is not None and now - capture.started > max_age
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            break
        doomed.append(capture)
        total -= capture.size
    return doomed


def _index_size(index_file: str | None) -> int:
    size = 0
    for suffix in ("", "-wal"):
        if index_file is not None:
            with contextlib.suppress(OSError):
                size += os.path.getsize(index_file + suffix)
    return size


def enforce(
    log_dir: str,
    max_age: float | None,
    max_bytes: int | None,
    index_file: str | None = None,
) -> tuple[int, int]:
    """One pass: delete what :func:`choose` picks, files then index rows. Returns
    (captures, bytes) deleted."""
    doomed = choose(scan(log_dir), time.time(), max_age, max_bytes, _index_size(index_file))
    freed = 0
    folders: set[str] = set()
    for capture in doomed:
        for path in capture.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            folders.add(os.path.dirname(path))
        freed += capture.size
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for folder in folders:
        if os.path.basename(folder) != today:  # today's folder is in use by the writer
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only succeeds once empty
    if doomed and index_file is not None:
        _forget(index_file, [c.stem[24:] for c in doomed])
    return len(doomed), freed


def _forget(index_file: str, ids: list[str]) -> None:
    """Delete the index rows of deleted captures (small transactions: the writer thread
    waits for the write lock at most one of them)."""
    if not os.path.exists(index_file):
        return
    from logproxy.index.schema import connect
    from logproxy.index.store import delete_ids, text_search_mode

    try:
        conn = connect(index_file)
    except sqlite3.Error as e:
        log.warn("retention: cannot open the capture index: {error}", error=e)
        return
    try:
        mode = text_search_mode(conn)
        for start in range(0, len(ids), 200):
            conn.execute("BEGIN IMMEDIATE")
            try:
                delete_ids(conn, ids[start : start + 200], mode)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    except sqlite3.Error as e:
        # The next start-up's reconcile deletes rows whose files are gone.
        log.warn("retention: cannot delete capture index rows: {error}", error=e)
    finally:
        conn.close()


class RetentionService(Service):
    """Runs :func:`enforce` at start and every ``INTERVAL`` seconds."""

    def __init__(
        self,
        log_dir: str,
        max_age: float | None,
        max_bytes: int | None,
        metrics: Any,
        reactor: Any,
        interval: float = INTERVAL,
        index: Any = None,
    ) -> None:
        """``index``: the service's CaptureIndex (its rows are deleted with the files)."""
        index_file = getattr(index, "path", None)
        self._args = (log_dir, max_age, max_bytes, index_file)
        self._metrics = metrics
        self._reactor = reactor
        self._interval = interval
        self._loop: LoopingCall | None = None
        self._running: Any = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._pass)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=True)

    def _pass(self) -> Any:
        d = deferToThread(enforce, *self._args)
        d.addCallbacks(self._done, lambda f: log.failure("retention pass failed", f))
        self._running = d
        return d

    def _done(self, result: tuple[int, int]) -> None:
        count, freed = result
        if count:
            self._metrics.retention_deleted.inc(count)
            self._metrics.retention_bytes.inc(freed)
            log.info(
                "retention: deleted {count} captures ({freed} bytes)", count=count, freed=freed
            )

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._running
