"""``logproxy tail``: follow captures live, a line when each starts and when it ends.

It polls ``log_dir`` every 0.25 s. A day folder is listed again only when its mtime
changed (creating a file or atomically replacing a metadata document renames into it)
or changed recently (mtime granularity), and only names not seen before are parsed.
Captures still open are watched by the ``stat`` of their response document. New day
folders are picked up as they appear, so midnight (UTC) is no special case.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from logproxy.cli.store import (
    REQUEST_BIN,
    REQUEST_META,
    RESPONSE_BIN,
    RESPONSE_META,
    Bounds,
    Capture,
    Store,
    Summary,
    parse_time,
    stamp_of,
    ts_or_none,
)
from logproxy.cli.view import fmt_bytes, fmt_ms, fmt_time, one_line, path_of

INTERVAL = 0.25
#: A folder whose mtime is this recent is listed again even if unchanged (coarse clocks).
_RECENT_NS = 2_000_000_000


def start_line(summary: Summary) -> str:
    target = f" -> {summary.target_url}" if summary.target_url else ""
    route = summary.route if summary.route is not None else "-"
    return one_line(
        f"{fmt_time(summary.started)} [{summary.capture.capture_id[:8]}] "
        f"{summary.method} {path_of(summary.source_url)}{target} [{route}]"
    )


def end_line(summary: Summary) -> str:
    parts = [f"{fmt_time(summary.started)} [{summary.capture.capture_id[:8]}]"]
    parts.append(summary.status_text or "-")
    parts.append(fmt_bytes(summary.doc.get("bytes_written")))
    parts.append(fmt_ms(summary.duration_ms))
    if summary.model:
        parts.append(summary.model)
    usage = summary.usage
    if usage and (usage.get("input_tokens") is not None or usage.get("output_tokens") is not None):
        counts = [usage.get(k) for k in ("input_tokens", "output_tokens")]
        parts.append("tokens=" + "/".join("-" if n is None else str(n) for n in counts))
    if summary.error is not None:
        parts.append(f"error: {summary.error}")
    return one_line(" ".join(parts))


_FILES = (
    (REQUEST_BIN, "request", False),
    (REQUEST_META, "request", True),
    (RESPONSE_BIN, "response", False),
    (RESPONSE_META, "response", True),
)
#: Seconds after which a failed request without a response document counts as ended.
_ORPHAN_GRACE = 5.0
_ORPHAN_EVERY = 8  # polls
_ADOPT = 6 * 3600.0


@dataclass(slots=True)
class _Watched:
    capture: Capture
    started: bool = False
    stat: tuple[int, int, int] | None = None


class Follower:
    def __init__(self, store: Store, out: IO[str], since: float | None) -> None:
        self.store = store
        self.out = out
        now = time.time()
        self.bounds = Bounds.of(since, None) if since is not None else None
        # Without --since, captures already in flight are news too (their end is to come);
        # those started more than _ADOPT seconds ago are left out, to keep start-up cheap.
        self.adopt_from = stamp_of(now - _ADOPT)
        self.first_day = stamp_of(since)[:10] if since is not None else self.adopt_from[:10]
        self.names: dict[str, set[str]] = {}  # day -> names seen
        self.mtimes: dict[str, int] = {}
        self.open: dict[str, _Watched] = {}  # key -> capture not finished yet
        self.initial = since is None  # the first scan only adopts what is in flight
        self.polls = 0

    def _emit(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def poll(self) -> None:
        for day in self.store.days():
            if day >= self.first_day:
                self._scan(day)
        self.initial = False
        self.polls += 1
        for key, watched in list(self.open.items()):
            self._check(key, watched)
        self._forget_old_days()

    def _forget_old_days(self) -> None:
        """A tail left running for days keeps the names of the last two day folders only."""
        days = sorted(self.names)
        busy = {key[:10] for key in self.open}
        for day in days[:-2]:
            if day in busy:
                break
            del self.names[day]
            self.mtimes.pop(day, None)
            self.first_day = max(self.first_day, days[days.index(day) + 1])

    def _scan(self, day: str) -> None:
        folder = os.path.join(self.store.log_dir, day)
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return
        if (
            self.mtimes.get(day) == mtime
            and time.time_ns() - mtime > _RECENT_NS
            and day in self.names
        ):
            return
        self.mtimes[day] = mtime
        try:
            names = os.listdir(folder)
        except OSError:
            return
        seen = self.names.setdefault(day, set())
        fresh = [n for n in names if n not in seen]
        seen.update(fresh)
        if not fresh:
            return
        found = self.store.day(day, fresh)
        for key in sorted(found):
            capture = found[key]
            watched = self.open.get(key)
            if watched is not None:
                watched.capture.files |= capture.files
                continue
            if self.bounds is not None and not self.bounds.stamp_in(capture.stamp):
                continue
            if self.initial:
                if capture.stamp < self.adopt_from:
                    continue
                summary = Summary.load(capture)
                if not summary.in_flight:
                    continue  # finished before we started: history, not news
            self.open[key] = _Watched(capture)

    def _check(self, key: str, watched: _Watched) -> None:
        capture = watched.capture
        try:
            st = os.stat(capture.path("response", True))
            stat: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            stat = None
        if watched.started and stat == watched.stat:
            if stat is None and self.polls % _ORPHAN_EVERY == 0:
                self._check_orphan(key, watched)
            return
        capture.files = sum(
            flag for flag, kind, metadata in _FILES if os.path.exists(capture.path(kind, metadata))
        )
        if not capture.files & (REQUEST_META | RESPONSE_META):
            return  # nothing but the .bin so far: the metadata comes next
        watched.stat = stat
        summary = Summary.load(capture)
        if not watched.started:
            watched.started = True
            self._emit(start_line(summary))
        if summary.finished:
            self._emit(end_line(summary))
            del self.open[key]

    def _check_orphan(self, key: str, watched: _Watched) -> None:
        """A request that failed and never got a response document ends after a grace time."""
        doc = watched.capture.metadata("request")
        if doc is None or doc.get("error") is None:
            return
        ended = ts_or_none(doc.get("completed_at"))
        if ended is not None and time.time() - ended > _ORPHAN_GRACE:
            self._emit(end_line(Summary(watched.capture, doc, doc)))
            del self.open[key]


def follow(
    store: Store,
    out: IO[str],
    since: float | None = None,
    stop: threading.Event | None = None,
    interval: float = INTERVAL,
) -> None:
    """Print start and end lines until ``stop`` is set (or forever)."""
    follower = Follower(store, out, since)
    store.days()  # an unreadable log_dir is an error up front
    while stop is None or not stop.is_set():
        follower.poll()
        if stop is None:
            time.sleep(interval)
        else:
            stop.wait(interval)


def cmd_tail(args: Any, store: Store, out: IO[str], err: IO[str]) -> int:
    since = parse_time(args.since, "--since") if args.since else None
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)  # kill ends it cleanly too
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how tail ends: status 0
            follow(store, out, since)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
