"""Finding captures in ``log_dir`` without an index (SPEC §5).

Everything a listing filters on first comes from the file names: the day folder, the
start time (``YYYY-MM-DD_HH-MM-SS.mmm``, which sorts as text) and the id. Folders are
walked newest first and the walk stops once a ``--limit`` is met or the folders fall
before ``--since``; only then are metadata documents opened, one per capture.
"""

from __future__ import annotations

import calendar
import fnmatch
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from logproxy.capture.model import parse_rfc3339, read_document
from logproxy.cli.parse import (
    QUICK_LIMIT,
    Message,
    Reply,
    read_message,
    reply_from_llm,
    reply_of,
    sniff_model,
    sniff_model_file,
)
from logproxy.config import ConfigError, parse_duration

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_FILE = re.compile(
    r"(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.\d{3})_"
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_"
    r"(request|response)(_metadata\.json|\.bin)\Z"
)

REQUEST_BIN = 1
REQUEST_META = 2
RESPONSE_BIN = 4
RESPONSE_META = 8
_FLAGS = {
    ("request", ".bin"): REQUEST_BIN,
    ("request", "_metadata.json"): REQUEST_META,
    ("response", ".bin"): RESPONSE_BIN,
    ("response", "_metadata.json"): RESPONSE_META,
}


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


# --------------------------------------------------------------------------
# Times
# --------------------------------------------------------------------------


def parse_time(text: str, option: str, now: float | None = None) -> float:
    """An RFC 3339 timestamp, a UTC date (``2025-09-13``) or a duration ago (``90s``, ``2d``)."""
    value = text.strip()
    if _DAY.match(value):
        value += "T00:00:00Z"
    try:
        return parse_rfc3339(value)
    except ValueError:
        pass
    try:
        seconds = parse_duration(value, option)
    except ConfigError:
        raise CliError(
            f"{option}: expected an RFC 3339 time (2025-09-13T02:00:00Z) or a duration "
            f"such as 90s, 30m, 1h, 2d; got {text!r}"
        ) from None
    return (time.time() if now is None else now) - seconds


def stamp_of(ts: float) -> str:
    """The file-name form of a time: ``2025-09-13_02-11-09.123`` (UTC)."""
    moment = datetime.fromtimestamp(ts, UTC)
    return f"{moment:%Y-%m-%d_%H-%M-%S}.{moment.microsecond // 1000:03d}"


def time_of_stamp(stamp: str) -> float:
    """Inverse of :func:`stamp_of`, without strptime (it is called per file)."""
    secs = calendar.timegm(
        (
            int(stamp[0:4]),
            int(stamp[5:7]),
            int(stamp[8:10]),
            int(stamp[11:13]),
            int(stamp[14:16]),
            int(stamp[17:19]),
            0,
            0,
            0,
        )
    )
    return secs + int(stamp[20:23]) / 1000


def iso(ts: float, millis: bool = True) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    if millis:
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"


def ts_or_none(value: object) -> float | None:
    try:
        return parse_rfc3339(value)
    except (ValueError, OverflowError):
        return None


# --------------------------------------------------------------------------
# Captures
# --------------------------------------------------------------------------


@dataclass(slots=True)
class Capture:
    """The files of one capture: ``folder/{stamp}_{capture_id}_{kind}{suffix}``."""

    capture_id: str
    stamp: str
    folder: str
    files: int = 0

    @property
    def started(self) -> float:
        return time_of_stamp(self.stamp)

    @property
    def prefix(self) -> str:
        """The path the four files start with."""
        return os.path.join(self.folder, f"{self.stamp}_{self.capture_id}_")

    def path(self, kind: str, metadata: bool) -> str:
        suffix = "_metadata.json" if metadata else ".bin"
        return os.path.join(self.folder, f"{self.stamp}_{self.capture_id}_{kind}{suffix}")

    def metadata(self, kind: str) -> dict[str, Any] | None:
        """The stream document (None if missing or unreadable: it is replaced atomically, so
        a failure means it does not exist yet or was deleted meanwhile)."""
        return read_document(self.path(kind, True))

    def message(self, kind: str, limit: int | None = None) -> Message | None:
        return read_message(self.path(kind, False), limit)


@dataclass(slots=True)
class Bounds:
    """A start-time window, compared as file-name stamps (millisecond precision)."""

    since: str | None = None
    until: str | None = None

    @classmethod
    def of(cls, since: float | None, until: float | None) -> Bounds:
        return cls(
            None if since is None else stamp_of(since), None if until is None else stamp_of(until)
        )

    def day_in(self, day: str) -> bool:
        if self.since is not None and day < self.since[:10]:
            return False
        return not (self.until is not None and day > self.until[:10])

    def stamp_in(self, stamp: str) -> bool:
        if self.since is not None and stamp < self.since:
            return False
        return not (self.until is not None and stamp >= self.until)


class Store:
    """Captures under one ``log_dir``."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir

    def days(self) -> list[str]:
        """Day folder names, oldest first. Raises CliError if log_dir cannot be read."""
        try:
            names = os.listdir(self.log_dir)
        except OSError as e:
            reason = e.strerror or str(e)
            raise CliError(f"cannot read log directory {self.log_dir}: {reason}") from None
        return sorted(n for n in names if _DAY.match(n))

    def day(self, day: str, names: list[str] | None = None) -> dict[str, Capture]:
        """The captures of one day folder by ``stamp_id`` key (a missing folder is empty)."""
        folder = os.path.join(self.log_dir, day)
        if names is None:
            try:
                names = os.listdir(folder)
            except OSError:
                return {}
        found: dict[str, Capture] = {}
        match = _FILE.match
        for name in names:
            m = match(name)
            if m is None:
                continue
            stamp, capture_id, kind, suffix = m.groups()
            key = name[:60]  # stamp (23) + "_" + uuid (36)
            capture = found.get(key)
            if capture is None:
                capture = found[key] = Capture(capture_id, stamp, folder)
            capture.files |= _FLAGS[kind, suffix]
        return found

    def captures(
        self, bounds: Bounds | None = None, newest_first: bool = True
    ) -> Iterator[Capture]:
        """Captures in start order, reading one folder at a time (stops as soon as the
        caller stops iterating)."""
        bounds = bounds or Bounds()
        days = [d for d in self.days() if bounds.day_in(d)]
        if newest_first:
            days.reverse()
        for day in days:
            found = self.day(day)
            keys = sorted(found, reverse=newest_first)
            for key in keys:
                capture = found[key]
                if bounds.stamp_in(capture.stamp):
                    yield capture

    def resolve(self, prefix: str) -> Capture:
        """The one capture whose id starts with ``prefix``. Raises CliError otherwise."""
        wanted = prefix.strip().lower()
        if not wanted or not re.fullmatch(r"[0-9a-f-]{1,36}", wanted):
            raise CliError(f"invalid capture id {prefix!r}: expected (a prefix of) a uuid")
        matches: dict[str, Capture] = {}
        for day in reversed(self.days()):
            for capture in self.day(day).values():
                if capture.capture_id.startswith(wanted):
                    matches.setdefault(capture.capture_id, capture)
            if len(matches) > 1 or (matches and len(wanted) == 36):
                break
        if not matches:
            raise CliError(f"no capture with id {prefix} in {self.log_dir}")
        if len(matches) > 1:
            ids = sorted(matches)
            shown = ", ".join(i[: max(len(wanted) + 4, 12)] for i in ids[:3])
            raise CliError(
                f"capture id {prefix} is ambiguous ({shown}{', ...' if len(ids) > 3 else ''});"
                " give more characters"
            )
        return next(iter(matches.values()))


# --------------------------------------------------------------------------
# What a listing shows about a capture
# --------------------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    """One capture as a listing sees it, from its response document (or the request one
    while no response has started)."""

    capture: Capture
    doc: dict[str, Any]
    request_doc: dict[str, Any] | None = None
    _reply: Reply | None = None
    _reply_read: bool = False
    _model: str | None = None
    _model_read: bool = False

    @classmethod
    def load(cls, capture: Capture) -> Summary:
        doc = capture.metadata("response") if capture.files & RESPONSE_META else None
        request_doc = None
        if doc is None:
            request_doc = capture.metadata("request") if capture.files & REQUEST_META else None
            doc = request_doc
        if doc is None:
            doc = {"metadata": {"id": capture.capture_id}, "completed": False, "error": None}
        return cls(capture, doc, request_doc)

    def attach(self, request: Message | None, response: Message | None) -> None:
        """Use bodies the caller already read instead of reading the files again."""
        if request is not None and not self._model_read:
            self._model_read = True
            self._model = sniff_model(request.body) if request.body else None
        if response is not None and not self._reply_read:
            self._reply_read = True
            if self.llm is None and response.body:
                self._reply = reply_of(response)

    @property
    def meta(self) -> dict[str, Any]:
        m = self.doc.get("metadata")
        return m if isinstance(m, dict) else {}

    @property
    def is_response(self) -> bool:
        return self.doc.get("stream_type") == "response"

    @property
    def llm(self) -> dict[str, Any] | None:
        llm = self.doc.get("llm")
        return llm if isinstance(llm, dict) else None

    @property
    def started(self) -> float:
        return ts_or_none(self.meta.get("request_started_at")) or self.capture.started

    @property
    def route(self) -> str | None:
        route = self.meta.get("route")
        return route if isinstance(route, str) else None

    @property
    def method(self) -> str:
        return str(self.meta.get("method") or "")

    @property
    def source_url(self) -> str:
        return str(self.meta.get("source_url") or "")

    @property
    def target_url(self) -> str | None:
        target = self.meta.get("target_url")
        return target if isinstance(target, str) else None

    @property
    def status(self) -> int | None:
        code = self.meta.get("response_status_code")
        return code if isinstance(code, int) else None

    @property
    def status_text(self) -> str:
        text = self.meta.get("response_status")
        if isinstance(text, str):
            return text
        return str(self.status) if self.status is not None else ""

    @property
    def finished(self) -> bool:
        """The response stream ended (whole or not)."""
        return self.is_response and self.doc.get("completed_at") is not None

    @property
    def in_flight(self) -> bool:
        return not self.finished and self.error is None

    @property
    def error(self) -> str | None:
        error = self.doc.get("error")
        return None if error is None else str(error)

    @property
    def duration_ms(self) -> float | None:
        """From the request's start to the end of the response."""
        end = ts_or_none(self.doc.get("completed_at")) if self.finished else None
        if end is None:
            return None
        return round(max(0.0, end - self.started) * 1000, 3)

    @property
    def model(self) -> str | None:
        """The requested model: the llm block's, else sniffed from the request body."""
        llm = self.llm
        if llm is not None and isinstance(llm.get("model"), str):
            return str(llm["model"])
        if not self._model_read:
            self._model_read = True
            if self.capture.files & REQUEST_BIN:
                self._model = sniff_model_file(self.capture.path("request", False))
        return self._model

    @property
    def response_model(self) -> str | None:
        llm = self.llm
        if llm is not None:
            value = llm.get("response_model")
            return value if isinstance(value, str) else None
        reply = self.reply
        return reply.model if reply is not None else None

    @property
    def reply(self) -> Reply | None:
        """The quick parse of the response body (only when there is no llm block)."""
        if not self._reply_read:
            self._reply_read = True
            if self.llm is None and self.capture.files & RESPONSE_BIN:
                msg = self.capture.message("response", QUICK_LIMIT)
                if msg is not None and msg.body:
                    self._reply = reply_of(msg)
        return self._reply

    @property
    def answer(self) -> Reply | None:
        """The assistant's reply: from the llm block, else the quick parse."""
        llm = self.llm
        return reply_from_llm(llm) if llm is not None else self.reply

    @property
    def usage(self) -> dict[str, Any] | None:
        llm = self.llm
        if llm is not None:
            usage = llm.get("usage")
            return usage if isinstance(usage, dict) else None
        reply = self.reply
        return reply.usage if reply is not None else None


# --------------------------------------------------------------------------
# Filters (--route, --model, --status)
# --------------------------------------------------------------------------


@dataclass(slots=True)
class Filter:
    route: str | None = None
    model: str | None = None
    status: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None:
            for part in self.status.split(","):
                if not _STATUS.fullmatch(part.strip().lower()):
                    raise CliError(
                        f"--status: expected a code (200), a class (4xx), error or inflight;"
                        f" got {part.strip()!r}"
                    )

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.route, self.model, self.status))

    def matches(self, summary: Summary) -> bool:
        if self.route is not None:
            route = summary.route
            if self.route in ("-", ""):
                if route is not None:
                    return False
            elif route is None or not fnmatch.fnmatchcase(route, self.route):
                return False
        if self.status is not None and not any(
            _status_matches(part.strip().lower(), summary) for part in self.status.split(",")
        ):
            return False
        if self.model is not None:
            wanted = self.model.lower()
            models = {summary.model, summary.response_model} - {None}
            if not any(fnmatch.fnmatchcase(str(m).lower(), wanted) for m in models):
                return False
        return True


_STATUS = re.compile(r"\d{3}|[1-5]xx|error|errors|inflight|in-flight|pending|ok")


def _status_matches(spec: str, summary: Summary) -> bool:
    if spec in ("error", "errors"):
        return summary.error is not None
    if spec in ("inflight", "in-flight", "pending"):
        return summary.in_flight
    if spec == "ok":
        return summary.error is None and summary.status is not None and summary.status < 400
    code = summary.status
    if code is None:
        return False
    if spec.endswith("xx"):
        return code // 100 == int(spec[0])
    return code == int(spec)
