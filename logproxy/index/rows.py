"""What the index stores about one capture, worked out from its two stream documents.

Pure functions (plus reading the start of a ``.bin`` file): the live updater, the
reconciler and ``logproxy reindex`` all build rows here, which is what makes a rebuilt
index equal the live one.
"""

from __future__ import annotations

import calendar
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from logproxy.capture.model import Metadata, rfc3339
from logproxy.cli.parse import sniff_model, sniff_model_file
from logproxy.index.schema import BODY_TEXT_LIMIT

#: Header blocks longer than this leave less of the body for text search.
HEAD_ALLOWANCE = 64 * 1024

#: The ``captures`` columns, in table order (``order_key`` first).
COLUMNS = (
    "order_key",
    "id",
    "started_us",
    "day",
    "stem",
    "route",
    "pattern",
    "method",
    "source_url",
    "target_url",
    "status",
    "status_class",
    "api",
    "model",
    "response_model",
    "stream",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "ttft_ms",
    "duration_ms",
    "completed",
    "error",
    "failed",
    "inflight",
    "request_bytes",
    "response_bytes",
    "truncated",
    "text_indexed",
    "request_mtime",
    "response_mtime",
)
#: Bits of ``text_indexed``: which bodies the text table holds.
REQUEST_TEXT = 1
RESPONSE_TEXT = 2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def started_us_of(text: object) -> int | None:
    """Microseconds since the epoch of an RFC 3339 time, exactly (no float rounding)."""
    if not isinstance(text, str):
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return (moment - _EPOCH) // _MICROSECOND


def stem_us(stem: str) -> int:
    """Microseconds of a file stem's ``YYYY-MM-DD_HH-MM-SS.mmm`` (millisecond precision)."""
    secs = calendar.timegm(
        (
            int(stem[0:4]),
            int(stem[5:7]),
            int(stem[8:10]),
            int(stem[11:13]),
            int(stem[14:16]),
            int(stem[17:19]),
            0,
            0,
            0,
        )
    )
    return secs * 1_000_000 + int(stem[20:23]) * 1000


def order_key(started_us: int, capture_id: str) -> int:
    """The sort key of a capture: its start time in microseconds, then ten bits of its id.

    Captures that start in the same microsecond (rare) still get distinct keys unless
    their ids share the ten bits as well; the writer then tries the next integer.
    """
    try:
        low = int(capture_id[-3:], 16) & 0x3FF
    except ValueError:
        low = 0
    return (max(started_us, 0) << 10) | low


def started_us_of_key(key: int) -> int:
    return key >> 10


def _meta(doc: Metadata | None) -> dict[str, Any]:
    meta = doc.get("metadata") if doc else None
    return meta if isinstance(meta, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _flag(value: object) -> int | None:
    return int(value) if isinstance(value, bool) else None


@dataclass(slots=True, eq=False)
class Entry:
    """One capture as the index knows it: its documents and what was read from its files.

    ``request_text``/``response_text``/``output_text`` hold body text read for the text
    table and not yet written to it; the writer clears them.
    """

    capture_id: str
    stem: str
    started_us: int
    order_key: int | None = None
    request_doc: Metadata | None = None
    response_doc: Metadata | None = None
    sniffed_model: str | None = None
    live_response_bytes: int | None = None
    request_mtime: int | None = None
    response_mtime: int | None = None
    text_indexed: int = 0
    request_text: str | None = None
    response_text: str | None = None
    output_text: str | None = None
    last_progress: float = 0.0
    #: The row and documents as last written (None: not written by this process).
    written: dict[str, Any] | None = None
    written_docs: tuple[str | None, str | None] = (None, None)

    @property
    def day(self) -> str:
        return self.stem[:10]

    @property
    def llm(self) -> dict[str, Any] | None:
        llm = self.response_doc.get("llm") if self.response_doc else None
        return llm if isinstance(llm, dict) else None

    @property
    def finished(self) -> bool:
        """The response stream has ended (whole or not)."""
        doc = self.response_doc
        return doc is not None and doc.get("completed_at") is not None

    def doc(self, kind: str) -> Metadata | None:
        return self.request_doc if kind == "request" else self.response_doc

    def set_doc(self, kind: str, doc: Metadata) -> None:
        if kind == "request":
            self.request_doc = doc
        else:
            self.response_doc = doc

    def values(self) -> dict[str, Any]:
        """The ``captures`` row, but ``order_key`` (assigned when the row is written).

        Same rules as ``logproxy ls``: the response document wins over the request's;
        ``error`` is the newest document's; in flight means the response has not ended
        and nothing failed; the model is the llm block's, else the request body's.
        """
        req, resp = self.request_doc, self.response_doc
        meta = {**_meta(req), **_meta(resp)}
        newest = resp if resp is not None else req
        llm: dict[str, Any] = self.llm or {}
        raw_usage = llm.get("usage")
        usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
        status = _int(meta.get("response_status_code"))
        error = newest.get("error") if newest else None
        error = None if error is None else str(error)
        finished = self.finished
        duration = None
        if finished and resp is not None:
            end = started_us_of(resp.get("completed_at"))
            if end is not None:
                duration = round(max(0, end - self.started_us) / 1000, 3)
        response_bytes = _int(resp.get("bytes_written")) if resp else None
        if not finished and self.live_response_bytes is not None:
            response_bytes = max(response_bytes or 0, self.live_response_bytes)
        truncated = any(bool(d.get("truncated")) for d in (req, resp) if d)
        return {
            "id": self.capture_id,
            "started_us": self.started_us,
            "day": self.day,
            "stem": self.stem,
            "route": _str(meta.get("route")),
            "pattern": _str(meta.get("pattern")),
            "method": _str(meta.get("method")),
            "source_url": _str(meta.get("source_url")),
            "target_url": _str(meta.get("target_url")),
            "status": status,
            "status_class": None if status is None else status // 100,
            "api": _str(llm.get("api")),
            "model": _str(llm.get("model")) or self.sniffed_model,
            "response_model": _str(llm.get("response_model")),
            "stream": _flag(llm.get("stream")),
            "input_tokens": _int(usage.get("input_tokens")),
            "output_tokens": _int(usage.get("output_tokens")),
            "total_tokens": _int(usage.get("total_tokens")),
            "ttft_ms": _num(llm.get("ttft_ms")),
            "duration_ms": duration,
            "completed": _flag(resp.get("completed")) if resp else None,
            "error": error,
            "failed": 1 if error is not None else None,
            "inflight": 1 if not finished and error is None else 0,
            "request_bytes": _int(req.get("bytes_written")) if req else None,
            "response_bytes": response_bytes,
            "truncated": 1 if truncated else 0,
            "text_indexed": self.text_indexed,
            "request_mtime": self.request_mtime,
            "response_mtime": self.response_mtime,
        }


# ---------------------------------------------------------------- API shapes


def summary(values: dict[str, Any]) -> dict[str, Any]:
    """The ``summary`` object of a list item: the index's columns, typed for JSON."""

    def flag(name: str) -> bool | None:
        value = values.get(name)
        return None if value is None else bool(value)

    return {
        "id": values["id"],
        "started_at": rfc3339(values["started_us"] / 1_000_000),
        "route": values["route"],
        "pattern": values["pattern"],
        "method": values["method"],
        "source_url": values["source_url"],
        "target_url": values["target_url"],
        "status": values["status"],
        "api": values["api"],
        "model": values["model"],
        "response_model": values["response_model"],
        "stream": flag("stream"),
        "input_tokens": values["input_tokens"],
        "output_tokens": values["output_tokens"],
        "total_tokens": values["total_tokens"],
        "ttft_ms": values["ttft_ms"],
        "duration_ms": values["duration_ms"],
        "completed": flag("completed"),
        "error": values["error"],
        "in_flight": bool(values["inflight"]),
        "request_bytes": values["request_bytes"],
        "response_bytes": values["response_bytes"],
        "truncated": bool(values["truncated"]),
    }


def list_item(
    values: dict[str, Any], request_doc: Metadata | None, response_doc: Metadata | None
) -> dict[str, Any]:
    """One item of ``GET /api/requests``: the response metadata document as on disk (the
    request's while no response stream exists), plus ``id``, ``request`` (the request
    document without its ``metadata``, which the response's repeats) and ``summary``."""
    newest = response_doc if response_doc is not None else request_doc
    item: dict[str, Any] = dict(newest) if newest is not None else {"metadata": {}}
    item["id"] = values["id"]
    item["request"] = (
        {k: v for k, v in request_doc.items() if k != "metadata"} if request_doc else None
    )
    item["summary"] = summary(values)
    return item


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def loads_doc(text: str | None) -> Metadata | None:
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def dump_doc(doc: Metadata | None) -> str | None:
    if doc is None:
        return None
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------- body text


def clean_text(body: bytes) -> str | None:
    """Body bytes as searchable text; None for binary data.

    JSON string escapes (``\\n``, ``\\"``, ``\\t``) are turned into spaces so that
    words next to them are tokens of their own.
    """
    if not body or b"\x00" in body[:4096]:
        return None
    text = body.decode("utf-8", "replace")
    for escape in ("\\n", "\\r", "\\t", '\\"', "\\/"):
        if escape in text:
            text = text.replace(escape, " ")
    return text


def read_body(path: str, limit: int = BODY_TEXT_LIMIT) -> tuple[bytes | None, bool]:
    """The first ``limit`` body bytes of a ``.bin`` file (after its header block) and
    whether that is the whole body; ``(None, False)`` if unreadable or headless."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + HEAD_ALLOWANCE)
            whole = len(data) < limit + HEAD_ALLOWANCE or not f.read(1)
    except OSError:
        return None, False
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None, False
    body = data[end + 4 :]
    if len(body) > limit:
        return body[:limit], False
    return body, whole


def request_text_and_model(path: str) -> tuple[str | None, str | None]:
    """Searchable text of a stored request body and the ``model`` it asks for."""
    body, whole = read_body(path)
    if body is None:
        return None, None
    model = sniff_model(body) if whole else sniff_model_file(path)
    return clean_text(body), model


def response_text(path: str) -> str | None:
    body, _ = read_body(path)
    return None if body is None else clean_text(body)


def output_text_of(doc: Metadata | None) -> str | None:
    llm = doc.get("llm") if doc else None
    if isinstance(llm, dict):
        text = llm.get("output_text")
        if isinstance(text, str) and text:
            return text[:BODY_TEXT_LIMIT]
    return None


def mtime_ns(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
