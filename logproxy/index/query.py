"""Listing and looking up captures in the index (pure SQL over a connection; no Twisted).

Every listing is ``ORDER BY order_key DESC`` (newest first, see
:mod:`logproxy.index.schema`) and every filter is one the indexes serve in that order:
``route``, ``model``, ``status``, ``method`` by equality on an index whose entries end
in ``order_key``; ``since``/``until`` and the cursor as a range of ``order_key``; ``q``
by walking the FTS5 matches newest first. A page costs a few index seeks, whatever the
size of the index.
"""

from __future__ import annotations

import base64
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from logproxy.capture.model import CAPTURE_ID, parse_rfc3339
from logproxy.config import ConfigError, parse_duration
from logproxy.index.rows import COLUMNS, dumps, list_item, loads_doc
from logproxy.index.schema import FTS5, TEXT_TABLE

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: Longest ``q`` accepted, and most words in it.
MAX_Q = 1000
MAX_TERMS = 16

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_STATUS = re.compile(r"[1-5]\d\d|[1-5]xx|error|inflight")
_PREFIX = re.compile(r"[0-9a-f-]{4,36}\Z")
_TERM = re.compile(r"[^\s]+")
_SELECT = ", ".join(f"c.{c}" for c in COLUMNS)


class BadQuery(ValueError):
    """A query parameter is invalid; str() is the one-line message for the 400 answer."""


class NotFound(LookupError):
    pass


class Ambiguous(LookupError):
    pass


@dataclass(frozen=True)
class Query:
    """The parameters of ``GET /api/requests`` (see :func:`parse_query`)."""

    route: str | None = None
    model: str | None = None
    status: tuple[str, ...] = ()
    method: str | None = None
    q: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    cursor: int | None = None
    limit: int = DEFAULT_LIMIT
    terms: tuple[str, ...] = field(default=(), compare=False)


def _one(args: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadQuery(f"{name}: give it once")
    value = values[0].strip()
    return value or None


def parse_time(value: str, name: str, now: float) -> int:
    """RFC 3339, a UTC date, or an age (``90s``, ``30m``, ``1h``, ``2d``) -> microseconds."""
    text = value + "T00:00:00Z" if _DAY.match(value) else value
    try:
        return round(parse_rfc3339(text) * 1_000_000)
    except (ValueError, OverflowError):
        pass
    try:
        seconds = parse_duration(value, name)
    except ConfigError:
        raise BadQuery(
            f"{name}: expected an RFC 3339 time (2025-09-13T02:00:00Z), a date (2025-09-13) "
            f"or an age such as 90s, 30m, 1h, 2d; got {value[:64]!r}"
        ) from None
    return round((now - seconds) * 1_000_000)


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(key.to_bytes(8, "big")).decode().rstrip("=")


def decode_cursor(text: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise BadQuery("cursor: not a cursor from next_cursor") from None
    if len(raw) != 8:
        raise BadQuery("cursor: not a cursor from next_cursor")
    return int.from_bytes(raw, "big")


def parse_query(args: Mapping[str, Sequence[str]], now: float | None = None) -> Query:
    """Validate the query string of ``GET /api/requests``; raises :class:`BadQuery`."""
    now = time.time() if now is None else now
    known = {"route", "model", "status", "method", "q", "since", "until", "cursor", "limit"}
    for name in args:
        if name not in known and name != "token":
            raise BadQuery(f"unknown parameter {name!r} (known: {', '.join(sorted(known))})")
    status: list[str] = []
    raw_status = _one(args, "status")
    if raw_status is not None:
        for part in raw_status.lower().split(","):
            part = part.strip()
            if not _STATUS.fullmatch(part):
                raise BadQuery(
                    "status: expected a code (200), a class (4xx), error or inflight, "
                    f"comma-separated; got {part[:32]!r}"
                )
            status.append(part)
    limit_text = _one(args, "limit")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise BadQuery(f"limit: expected an integer from 1 to {MAX_LIMIT}")
        limit = int(limit_text)
    since_text, until_text = _one(args, "since"), _one(args, "until")
    since = parse_time(since_text, "since", now) if since_text else None
    until = parse_time(until_text, "until", now) if until_text else None
    cursor_text = _one(args, "cursor")
    method = _one(args, "method")
    if method is not None and not re.fullmatch(r"[A-Za-z]{1,32}", method):
        raise BadQuery("method: expected an HTTP method such as GET or POST")
    q = _one(args, "q")
    terms: tuple[str, ...] = ()
    if q is not None:
        if len(q) > MAX_Q:
            raise BadQuery(f"q: longer than {MAX_Q} characters")
        terms = tuple(_TERM.findall(q))
        if len(terms) > MAX_TERMS:
            raise BadQuery(f"q: more than {MAX_TERMS} words")
    return Query(
        route=_one(args, "route"),
        model=_one(args, "model"),
        status=tuple(status),
        method=method.upper() if method else None,
        q=q,
        since_us=since,
        until_us=until,
        cursor=decode_cursor(cursor_text) if cursor_text else None,
        limit=limit,
        terms=terms,
    )


def fts_expression(terms: Sequence[str]) -> str:
    """An FTS5 query: every word must occur (in any body); each is a quoted phrase, so
    punctuation in it (``gpt-4o``, ``a.b``) means adjacency, never query syntax. A word
    ending in ``*`` matches as a prefix."""
    parts = []
    for term in terms:
        prefix = term.endswith("*") and len(term) > 1
        word = term.rstrip("*") if prefix else term
        if not word:
            continue
        parts.append('"' + word.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " AND ".join(parts)


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _has_glob(value: str) -> bool:
    return any(ch in value for ch in "*?[")


#: Most index-served branches one listing is split into (see :func:`build_sql`).
MAX_BRANCHES = 64
#: Most distinct values a ``model`` glob is expanded into before it becomes a scan.
MAX_GLOB_VALUES = 2000


def distinct_values(
    conn: sqlite3.Connection, column: str, pattern: str | None = None, cap: int = MAX_GLOB_VALUES
) -> list[str] | None:
    """The distinct non-null values of an indexed column (matching a GLOB ``pattern``),
    found with one index seek per value; None past ``cap`` values."""
    assert column in ("route", "model", "method")
    prefix = ""
    if pattern is not None:
        for ch in pattern:
            if ch in "*?[":
                break
            prefix += ch
    found: list[str] = []
    value = conn.execute(
        f"SELECT min({column}) FROM captures WHERE {column} >= ?", (prefix,)
    ).fetchone()[0]
    steps = 0
    while value is not None and value.startswith(prefix):
        steps += 1
        if steps > cap:
            return None
        if pattern is None or conn.execute("SELECT ? GLOB ?", (value, pattern)).fetchone()[0]:
            found.append(value)
        value = conn.execute(
            f"SELECT min({column}) FROM captures WHERE {column} > ?", (value,)
        ).fetchone()[0]
    return found


def _status_terms(parts: Sequence[str]) -> list[tuple[str, list[Any]]]:
    terms: list[tuple[str, list[Any]]] = []
    for part in parts:
        if part == "error":
            terms.append(("c.failed = 1", []))
        elif part == "inflight":
            terms.append(("c.inflight = 1", []))
        elif part.endswith("xx"):
            terms.append(("c.status_class = ?", [int(part[0])]))
        else:
            terms.append(("c.status = ?", [int(part)]))
    return terms


def build_sql(
    query: Query, text_search: str, models: Sequence[str] | None = None
) -> tuple[str, list[Any]] | None:
    """The SQL of one page (``limit + 1`` rows, to know whether there is a next page).

    ``models``: the values a ``model`` glob expands to (:func:`distinct_values`); None
    to match the glob row by row. Returns None when nothing can match.

    Each filter with several values (``status=4xx,error``, a model glob) is split into
    branches, one per combination, each an ordered range of one index with its own
    ``LIMIT``; the page is the newest of their union. A text search walks the FTS5
    matches newest first (``ORDER BY f.rowid DESC`` lets FTS5 stream them) and checks
    the other filters on each.
    """
    common: list[str] = []
    params: list[Any] = []
    if query.route is not None:
        if query.route == "-":
            common.append("c.route IS NULL")
        else:
            common.append("c.route = ?")
            params.append(query.route)
    if query.method is not None:
        common.append("c.method = ?")
        params.append(query.method)
    model_terms: list[tuple[str, list[Any]]] = []
    if query.model is not None:
        if not _has_glob(query.model):
            model_terms = [("c.model = ?", [query.model])]
        elif models is None:
            model_terms = [("c.model GLOB ?", [query.model])]
        elif not models:
            return None
        else:
            model_terms = [("c.model = ?", [m]) for m in models]
    status_terms = _status_terms(query.status)
    fts = bool(query.terms) and text_search == FTS5
    key = "f.rowid" if fts else "c.order_key"
    ranges: list[str] = []
    range_params: list[Any] = []
    if query.since_us is not None:
        ranges.append(f"{key} >= ?")
        range_params.append(query.since_us << 10)
    upper = []
    if query.until_us is not None:
        upper.append(query.until_us << 10)
    if query.cursor is not None:
        upper.append(query.cursor)
    if upper:
        ranges.append(f"{key} < ?")
        range_params.append(min(upper))
    table = TEXT_TABLE[text_search]
    n = query.limit + 1
    select = f"SELECT {_SELECT}, d.request_doc, d.response_doc"
    docs = "LEFT JOIN docs d ON d.order_key = c.order_key"

    def any_of(terms: list[tuple[str, list[Any]]]) -> tuple[list[str], list[Any]]:
        if not terms:
            return [], []
        if len(terms) == 1:
            return [terms[0][0]], list(terms[0][1])
        return ["(" + " OR ".join(t for t, _ in terms) + ")"], [p for _, ps in terms for p in ps]

    if query.terms and fts:
        expression = fts_expression(query.terms)
        if not expression:
            return None
        where = [f"{table} MATCH ?", *ranges, *common]
        values: list[Any] = [expression, *range_params, *params]
        for terms in (model_terms, status_terms):
            sql_terms, term_params = any_of(terms)
            where += sql_terms
            values += term_params
        sql = (
            f"{select} FROM {table} f JOIN captures c ON c.order_key = f.rowid {docs} "
            f"WHERE {' AND '.join(where)} ORDER BY f.rowid DESC LIMIT ?"
        )
        return sql, [*values, n]
    like: list[str] = []
    like_params: list[Any] = []
    source = "captures c"
    if query.terms:  # LIKE fallback: check every row, newest first
        source = f"captures c JOIN {table} t ON t.order_key = c.order_key"
        for term in query.terms:
            word = term.rstrip("*") or term  # a substring match covers prefixes
            like.append(
                "(t.request_body LIKE ? ESCAPE '\\' OR t.response_body LIKE ? ESCAPE '\\'"
                " OR t.output_text LIKE ? ESCAPE '\\')"
            )
            like_params += [_like(word)] * 3
    branches: list[tuple[list[str], list[Any]]] = []
    no_term: list[tuple[str, list[Any]] | None] = [None]
    for model_term in [*model_terms] or no_term:
        for status_term in [*status_terms] or no_term:
            where, values = [*ranges, *common, *like], [*range_params, *params, *like_params]
            for cond in (model_term, status_term):
                if cond is not None:
                    where.append(cond[0])
                    values += cond[1]
            branches.append((where, values))
    if len(branches) > MAX_BRANCHES:
        where, values = [*ranges, *common, *like], [*range_params, *params, *like_params]
        for terms in (model_terms, status_terms):
            sql_terms, term_params = any_of(terms)
            where += sql_terms
            values += term_params
        branches = [(where, values)]
    if len(branches) == 1:
        where, values = branches[0]
        sql = f"{select} FROM {source} {docs}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return sql + " ORDER BY c.order_key DESC LIMIT ?", [*values, n]
    parts = []
    all_values: list[Any] = []
    for where, values in branches:
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        parts.append(
            f"SELECT order_key FROM (SELECT c.order_key FROM {source}{clause} "
            "ORDER BY c.order_key DESC LIMIT ?)"
        )
        all_values += [*values, n]
    sql = (
        f"{select} FROM captures c {docs} WHERE c.order_key IN ({' UNION ALL '.join(parts)}) "
        "ORDER BY c.order_key DESC LIMIT ?"
    )
    return sql, [*all_values, n]


def list_page(conn: sqlite3.Connection, query: Query, text_search: str) -> dict[str, Any]:
    """``{"items": [...], "next_cursor": ...}`` for one page."""
    models = None
    if query.model is not None and _has_glob(query.model):
        models = distinct_values(conn, "model", query.model)
    built = build_sql(query, text_search, models)
    if built is None:
        return {"items": [], "next_cursor": None}
    sql, params = built
    try:
        rows = conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as e:
        if "fts5" in str(e).lower() or "syntax" in str(e).lower():
            raise BadQuery(f"q: {e}") from None
        raise
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    items = [_item(row) for row in rows]
    next_cursor = encode_cursor(rows[-1][0]) if more and rows else None
    return {"items": items, "next_cursor": next_cursor}


def list_json(conn: sqlite3.Connection, query: Query, text_search: str) -> bytes:
    return dumps(list_page(conn, query, text_search))


def _item(row: Sequence[Any]) -> dict[str, Any]:
    values = dict(zip(COLUMNS, row, strict=False))
    n = len(COLUMNS)
    return list_item(values, loads_doc(row[n]), loads_doc(row[n + 1]))


@dataclass(frozen=True)
class Found:
    """One capture located through the index."""

    values: dict[str, Any]
    request_doc: dict[str, Any] | None
    response_doc: dict[str, Any] | None

    @property
    def capture_id(self) -> str:
        return str(self.values["id"])

    @property
    def stem(self) -> str:
        return str(self.values["stem"])

    @property
    def day(self) -> str:
        return str(self.values["day"])


def check_id(text: str) -> str:
    """A full capture id or a prefix of at least 4 characters; raises BadQuery."""
    wanted = text.strip().lower()
    if CAPTURE_ID.fullmatch(wanted) or _PREFIX.match(wanted):
        return wanted
    raise BadQuery(f"not a capture id (a UUID or a prefix of at least 4 characters): {text[:40]!r}")


def find(conn: sqlite3.Connection, wanted: str) -> Found:
    """The capture with this id, or the only one whose id starts with it.

    Raises :class:`NotFound` or :class:`Ambiguous`.
    """
    sql = (
        f"SELECT {_SELECT}, d.request_doc, d.response_doc FROM captures c "
        "LEFT JOIN docs d ON d.order_key = c.order_key "
    )
    if len(wanted) == 36:
        rows = conn.execute(sql + "WHERE c.id = ?", (wanted,)).fetchall()
    else:
        # ids are lower-case hex and '-': every id with the prefix sorts below prefix+'g'
        rows = conn.execute(
            sql + "WHERE c.id >= ? AND c.id < ? LIMIT 2", (wanted, wanted + "g")
        ).fetchall()
    if not rows:
        raise NotFound(wanted)
    if len(rows) > 1:
        raise Ambiguous(wanted)
    row = rows[0]
    n = len(COLUMNS)
    return Found(dict(zip(COLUMNS, row, strict=False)), loads_doc(row[n]), loads_doc(row[n + 1]))
