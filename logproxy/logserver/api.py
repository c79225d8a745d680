"""The query API on the logging Site (SPEC section 10), under ``/api/``.

``GET /api/requests``                  list, newest first, filters, cursor pages
``GET /api/requests/{id}``             both metadata documents (+ ``summary``)
``GET /api/requests/{id}/request``     the raw ``.bin`` (``Range`` supported)
``GET /api/requests/{id}/response``    the same for the response
``GET /api/requests/{id}/tail``        the response body, streamed as it is captured
``GET /api/events``                    Server-Sent Events: start, progress, end
``GET /api/facets``                    the routes, models and methods in the index
``GET /api/openapi.json``              the OpenAPI 3.1 description of all of it

Every query runs in the thread pool (:class:`~logproxy.index.runtime.IndexReader`);
the reactor only routes, validates and writes bytes. ``{id}`` is a full capture id or
a unique prefix of at least four characters. Errors are ``{"error": "..."}`` with the
status code: 400 (bad parameter, ambiguous prefix), 404, 405, 416, 503 (no index).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from logproxy.capture.model import read_document
from logproxy.index import query as queries
from logproxy.index.query import Ambiguous, BadQuery, Found, NotFound
from logproxy.index.rows import dumps, summary
from logproxy.index.runtime import CaptureIndex, IndexClosed, IndexMissing
from logproxy.logserver.openapi import openapi_document
from logproxy.logserver.streams import (
    SSE_MAX_BACKLOG,
    FileSender,
    SSEClient,
    Tail,
    header_end,
    is_gone,
)

log = Logger()

_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")


@dataclass
class Api:
    """What the API needs from the running service."""

    reactor: Any
    log_dir: str
    index: CaptureIndex | None
    #: Bytes an event-stream client may leave unread before it is dropped.
    sse_max_backlog: int = SSE_MAX_BACKLOG


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _json(request: server.Request, code: int, body: bytes) -> None:
    if is_gone(request):
        return
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.write(body)
    request.finish()


def _error(request: server.Request, code: int, message: str) -> None:
    _json(request, code, json.dumps({"error": message}).encode())


def _args(request: server.Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, values in (request.args or {}).items():
        name = key.decode("utf-8", "replace")
        out[name] = [v.decode("utf-8", "replace") for v in values]
    return out


class ApiResource(Resource):
    """``/api/...``: routes on the path segments after ``/api/``."""

    isLeaf = True

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api
        self._openapi = dumps(openapi_document())

    def render(self, request: server.Request) -> bytes | int:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            _error(request, 405, "the query API is read-only: use GET")
            return server.NOT_DONE_YET
        parts = [p.decode("utf-8", "replace") for p in request.postpath or []]
        if parts and parts[-1] == "" and len(parts) > 1:
            parts = parts[:-1]
        try:
            return self._route(request, parts)
        except ApiError as e:
            _error(request, e.code, str(e))
        except BadQuery as e:
            _error(request, 400, str(e))
        return server.NOT_DONE_YET

    def _route(self, request: server.Request, parts: list[str]) -> bytes | int:
        if parts in ([], [""]):
            _json(request, 200, dumps(_endpoints()))
        elif parts == ["openapi.json"]:
            _json(request, 200, self._openapi)
        elif parts == ["requests"]:
            self._list(request)
        elif parts == ["events"]:
            self._events(request)
        elif parts == ["facets"]:
            self._query(request, _facets)
        elif len(parts) == 2 and parts[0] == "requests":
            self._detail(request, parts[1])
        elif len(parts) == 3 and parts[0] == "requests" and parts[2] in ("request", "response"):
            self._raw(request, parts[1], parts[2])
        elif len(parts) == 3 and parts[0] == "requests" and parts[2] == "tail":
            self._tail(request, parts[1])
        else:
            raise ApiError(404, "no such API resource (see /api/openapi.json)")
        return server.NOT_DONE_YET

    # -- helpers

    def _index(self) -> CaptureIndex:
        if self.api.index is None:
            raise ApiError(503, "the capture index is not available (see the service log)")
        return self.api.index

    def _run(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return self._index().reader.run(fn, *args)

    def _query(
        self,
        request: server.Request,
        fn: Callable[..., bytes],
        *args: Any,
        missing: bytes | None = None,
    ) -> None:
        """Run ``fn(conn, mode, *args) -> JSON bytes`` in the pool and answer with it."""
        d = self._run(fn, *args)
        d.addCallbacks(
            lambda body: _json(request, 200, body),
            lambda f: self._failed(request, f, missing),
        )

    def _failed(self, request: server.Request, failure: Failure, missing: bytes | None) -> None:
        if failure.check(IndexMissing) and missing is not None:
            _json(request, 200, missing)
            return
        code, message = _failure_answer(failure)
        if code == 500:
            log.failure("query API error", failure)
        _error(request, code, message)

    # -- endpoints

    def _list(self, request: server.Request) -> None:
        query = queries.parse_query(_args(request))
        empty = b'{"items":[],"next_cursor":null}'
        self._query(request, _list_json, query, missing=empty)

    def _detail(self, request: server.Request, text: str) -> None:
        wanted = queries.check_id(text)
        self._query(request, _detail_json, wanted, self.api.log_dir)

    def _locate(self, text: str) -> Deferred[Found]:
        wanted = queries.check_id(text)
        return self._run(_find, wanted)

    def _raw(self, request: server.Request, text: str, kind: str) -> None:
        body_only = _flag(request, b"body")
        d = self._locate(text)
        d.addCallback(lambda found: self._run(_stat_bin, self.api.log_dir, found, kind, body_only))
        d.addCallbacks(
            lambda result: self._send_file(request, kind, *result),
            lambda f: self._failed(request, f, None),
        )

    def _send_file(
        self, request: server.Request, kind: str, path: str, start: int, size: int
    ) -> None:
        if is_gone(request):
            return
        length = size - start
        first, last = 0, length - 1
        status = 200
        range_header = request.getHeader(b"range")
        if range_header is not None and length >= 0:
            parsed = parse_range(range_header.decode("latin-1"), length)
            if isinstance(parsed, str):  # unsatisfiable
                request.setHeader(b"Content-Range", b"bytes */%d" % length)
                _error(request, 416, f"range not satisfiable: the {kind} is {length} bytes")
                return
            if parsed is not None:
                first, last = parsed
                status = 206
                request.setHeader(b"Content-Range", b"bytes %d-%d/%d" % (first, last, length))
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(
            b"Content-Disposition",
            b'inline; filename="%s"' % os.path.basename(path).encode("ascii", "replace"),
        )
        request.setHeader(b"Content-Length", b"%d" % (last - first + 1))
        if request.method == b"HEAD" or last < first:
            request.write(b"")
            request.finish()
            return
        FileSender(self.api.reactor, request, path, start + first, start + last + 1).start()

    def _tail(self, request: server.Request, text: str) -> None:
        index = self._index()
        if index.bus.closed:
            raise ApiError(503, "the service is stopping")
        d = self._locate(text)

        def located(found: Found) -> None:
            if is_gone(request):
                return
            if request.method == b"HEAD":
                request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
                request.write(b"")
                request.finish()
                return
            folder = os.path.join(self.api.log_dir, found.day)
            Tail(
                self.api.reactor,
                index.bus,
                request,
                found.capture_id,
                os.path.join(folder, f"{found.stem}_response.bin"),
                os.path.join(folder, f"{found.stem}_response_metadata.json"),
            ).start()

        d.addCallbacks(located, lambda f: self._failed(request, f, None))

    def _events(self, request: server.Request) -> None:
        accept = event_filter(_args(request))
        index = self._index()
        if index.bus.closed:
            raise ApiError(503, "the service is stopping")
        if request.method == b"HEAD":
            request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
            request.write(b"")
            request.finish()
            return
        last = request.getHeader(b"last-event-id")
        if last is None:
            last_args = (request.args or {}).get(b"last_event_id")
            last = last_args[0] if last_args else None
        client = SSEClient(index.bus, request, accept, self.api.sse_max_backlog)
        client.start(last.decode("ascii", "replace") if last else None)


# ---------------------------------------------------------------- thread-pool functions


def _list_json(conn: sqlite3.Connection, mode: str, query: queries.Query) -> bytes:
    return queries.list_json(conn, query, mode)


def _find(conn: sqlite3.Connection, mode: str, wanted: str) -> Found:
    return queries.find(conn, wanted)


def _detail_json(conn: sqlite3.Connection, mode: str, wanted: str, log_dir: str) -> bytes:
    """Both documents as on disk now (the index's copy if a file cannot be read)."""
    found = queries.find(conn, wanted)
    folder = os.path.join(log_dir, found.day)
    docs = {}
    for kind, stored in (("request", found.request_doc), ("response", found.response_doc)):
        on_disk = read_document(os.path.join(folder, f"{found.stem}_{kind}_metadata.json"))
        docs[kind] = on_disk if on_disk is not None else stored
    capture_id = found.capture_id
    base = f"/api/requests/{capture_id}"
    return dumps(
        {
            "id": capture_id,
            "request": docs["request"],
            "response": docs["response"],
            "summary": summary(found.values),
            "links": {
                "request": f"{base}/request",
                "response": f"{base}/response",
                "tail": f"{base}/tail",
            },
        }
    )


def _stat_bin(
    conn: sqlite3.Connection, mode: str, log_dir: str, found: Found, kind: str, body_only: bool
) -> tuple[str, int, int]:
    """(path, offset to serve from, file size) of a capture's ``.bin``."""
    path = os.path.join(log_dir, found.day, f"{found.stem}_{kind}.bin")
    try:
        if body_only:
            start, size, _ = header_end(path)
            if start is None:
                start = size
        else:
            start, size = 0, os.path.getsize(path)
    except OSError:
        raise ApiError(404, f"the {kind} file of this capture is gone") from None
    return path, start, size


def _facets(conn: sqlite3.Connection, mode: str) -> bytes:
    return dumps(
        {
            "routes": queries.distinct_values(conn, "route") or [],
            "models": queries.distinct_values(conn, "model") or [],
            "methods": queries.distinct_values(conn, "method") or [],
            "unmatched": conn.execute(
                "SELECT 1 FROM captures WHERE route IS NULL LIMIT 1"
            ).fetchone()
            is not None,
            "text_search": mode,
        }
    )


# ---------------------------------------------------------------- small parts


def _flag(request: server.Request, name: bytes) -> bool:
    values = (request.args or {}).get(name) or []
    return bool(values) and values[0] not in (b"0", b"false", b"")


def parse_range(header: str, length: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range as (first, last) inclusive; None to ignore the header
    (invalid, or several ranges: the whole body is sent); "unsatisfiable"."""
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    start_text, end_text = match.groups()
    if not start_text and not end_text:
        return None
    if not start_text:  # the last N bytes
        count = int(end_text)
        if count == 0:
            return "unsatisfiable"
        return max(0, length - count), length - 1
    first = int(start_text)
    last = int(end_text) if end_text else length - 1
    if end_text and last < first:
        return None
    if first >= length:
        return "unsatisfiable"
    return first, min(last, length - 1)


def _failure_answer(failure: Failure) -> tuple[int, str]:
    if failure.check(ApiError):
        error = failure.value
        assert isinstance(error, ApiError)
        return error.code, str(error)
    if failure.check(BadQuery):
        return 400, str(failure.value)
    if failure.check(NotFound, IndexMissing):
        return 404, "no such capture"
    if failure.check(Ambiguous):
        return 400, f"capture id prefix {failure.value} is ambiguous; give more characters"
    if failure.check(IndexClosed):
        return 503, "the service is stopping"
    if failure.check(sqlite3.OperationalError):
        return 503, f"the capture index is busy or unreadable: {failure.getErrorMessage()}"
    return 500, "internal error"


def event_filter(args: dict[str, list[str]]) -> Callable[[str, bytes], bool] | None:
    """``/api/events?route=&model=&status=&method=``: the same meaning as for the list,
    checked against each event's ``summary``. Raises BadQuery."""
    allowed = {"route", "model", "status", "method", "token", "last_event_id"}
    for name in args:
        if name not in allowed:
            raise BadQuery(f"unknown parameter {name!r} for /api/events")
    query = queries.parse_query({k: v for k, v in args.items() if k in allowed - {"last_event_id"}})
    if not (query.route or query.model or query.status or query.method):
        return None

    def accept(kind: str, data: bytes) -> bool:
        try:
            item = json.loads(data)
        except ValueError:
            return True
        return matches(query, item.get("summary") or {})

    return accept


def matches(query: queries.Query, s: dict[str, Any]) -> bool:
    """Whether a list item's ``summary`` passes the query's filters (not ``q``)."""
    if query.route is not None:
        if query.route == "-":
            if s.get("route") is not None:
                return False
        elif s.get("route") != query.route:
            return False
    if query.method is not None and s.get("method") != query.method:
        return False
    if query.model is not None:
        model = s.get("model")
        if not isinstance(model, str) or not fnmatch.fnmatchcase(model, query.model):
            return False
    if query.status:
        status = s.get("status")
        ok = False
        for part in query.status:
            if part == "error":
                ok = ok or s.get("error") is not None
            elif part == "inflight":
                ok = ok or bool(s.get("in_flight"))
            elif isinstance(status, int):
                ok = ok or (
                    status // 100 == int(part[0]) if part.endswith("xx") else status == int(part)
                )
        if not ok:
            return False
    return True


def _endpoints() -> dict[str, Any]:
    return {
        "requests": "/api/requests",
        "request": "/api/requests/{id}",
        "raw": ["/api/requests/{id}/request", "/api/requests/{id}/response"],
        "tail": "/api/requests/{id}/tail",
        "events": "/api/events",
        "facets": "/api/facets",
        "openapi": "/api/openapi.json",
    }
