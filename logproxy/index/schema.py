"""The index file: ``<log_dir>/.logproxy-index.sqlite3``, an SQLite database in WAL mode.

The index is a cache of what the capture files say: it can always be rebuilt from them
(``logproxy reindex``), so a file written by another schema version, or one that cannot
be opened, is simply replaced.

Tables:

``captures``
    One narrow row per capture: what the list filters on and shows. Its integer primary
    key, ``order_key``, is the sort order of every listing: ``started_us << 10`` plus ten
    bits of the id (see :func:`logproxy.index.rows.order_key`). Newest first is then
    ``ORDER BY order_key DESC`` and a cursor is one integer; every secondary index on
    ``(column)`` is implicitly ``(column, order_key)``, so a filtered page is a range
    scan of one index; the table itself is clustered by time (a time window is a range
    of the table); and the full-text table shares the key, so a text search can walk its
    matches newest first and stop after one page.
``docs``
    The two stream documents as JSON text, keyed by ``order_key``: wide, read only for
    the rows of one page (kept out of ``captures`` so scans stay small).
``captures_fts``
    FTS5 over the first :data:`BODY_TEXT_LIMIT` bytes of the request and response bodies
    and the llm block's ``output_text``; ``rowid`` is ``order_key``. Without FTS5 the
    same columns live in ``captures_text``, a plain table searched with ``LIKE``.
``days``
    Each day folder's mtime as of the last reconcile: only folders that changed since
    are listed again at start-up.
``meta``
    ``schema_version`` and ``text_search`` (``fts5`` or ``like``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass

from twisted.logger import Logger

log = Logger()

INDEX_NAME = ".logproxy-index.sqlite3"
#: ``flock``-ed shared by a running service, exclusively by ``logproxy reindex``.
LOCK_NAME = ".logproxy-index.lock"
SCHEMA_VERSION = 1
#: Bytes of each body (after the header block) that text search covers.
BODY_TEXT_LIMIT = 256 * 1024
#: How long a connection waits for another one's write lock before SQLITE_BUSY.
BUSY_TIMEOUT_MS = 5000

FTS5 = "fts5"
LIKE = "like"

_CAPTURES = """
CREATE TABLE IF NOT EXISTS captures (
    order_key INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    started_us INTEGER NOT NULL,
    day TEXT NOT NULL,
    stem TEXT NOT NULL,
    route TEXT,
    pattern TEXT,
    method TEXT,
    source_url TEXT,
    target_url TEXT,
    status INTEGER,
    status_class INTEGER,
    api TEXT,
    model TEXT,
    response_model TEXT,
    stream INTEGER,
    input_tokens INTEGER,
    output_tokens INTEGER,
    total_tokens INTEGER,
    ttft_ms REAL,
    duration_ms REAL,
    completed INTEGER,
    error TEXT,
    failed INTEGER,
    inflight INTEGER NOT NULL,
    request_bytes INTEGER,
    response_bytes INTEGER,
    truncated INTEGER NOT NULL DEFAULT 0,
    text_indexed INTEGER NOT NULL DEFAULT 0,
    request_mtime INTEGER,
    response_mtime INTEGER
)
"""

#: Every index is implicitly followed by ``order_key``: equality on its columns gives
#: the rows newest first. ``failed`` and ``inflight`` are partial (only 1s are kept).
#: The pairs (and the triple) serve several filters at once: route and model are
#: correlated (a model lives behind one route), so checking one filter row by row
#: while walking the other's index could walk all of it to find no match, and each
#: row checked is a table lookup (a disk read when the table is not cached).
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS captures_route ON captures(route)",
    "CREATE INDEX IF NOT EXISTS captures_model ON captures(model)",
    "CREATE INDEX IF NOT EXISTS captures_status ON captures(status)",
    "CREATE INDEX IF NOT EXISTS captures_status_class ON captures(status_class)",
    "CREATE INDEX IF NOT EXISTS captures_method ON captures(method)",
    "CREATE INDEX IF NOT EXISTS captures_failed ON captures(failed) WHERE failed = 1",
    "CREATE INDEX IF NOT EXISTS captures_inflight ON captures(inflight) WHERE inflight = 1",
    "CREATE INDEX IF NOT EXISTS captures_route_model ON captures(route, model)",
    "CREATE INDEX IF NOT EXISTS captures_route_status ON captures(route, status_class)",
    "CREATE INDEX IF NOT EXISTS captures_model_status ON captures(model, status_class)",
    "CREATE INDEX IF NOT EXISTS captures_route_model_status "
    "ON captures(route, model, status_class)",
)

_OTHERS = (
    """CREATE TABLE IF NOT EXISTS docs (
        order_key INTEGER PRIMARY KEY, request_doc TEXT, response_doc TEXT)""",
    """CREATE TABLE IF NOT EXISTS days (
        day TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID""",
)

_FTS_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS captures_fts USING fts5("
    "request_body, response_body, output_text, tokenize = 'unicode61 remove_diacritics 2')"
)
_LIKE_TABLE = """CREATE TABLE IF NOT EXISTS captures_text (
    order_key INTEGER PRIMARY KEY, request_body TEXT, response_body TEXT, output_text TEXT)"""

#: The text table's name for each mode.
TEXT_TABLE = {FTS5: "captures_fts", LIKE: "captures_text"}

_fts5: bool | None = None


def fts5_available() -> bool:
    """Whether this Python's SQLite was built with FTS5."""
    global _fts5
    if _fts5 is None:
        try:
            with contextlib.closing(sqlite3.connect(":memory:")) as conn:
                conn.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
            _fts5 = True
        except sqlite3.Error:
            _fts5 = False
    return _fts5


def index_path(log_dir: str) -> str:
    return os.path.join(log_dir, INDEX_NAME)


def connect(path: str, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit ``BEGIN``/``COMMIT``).

    ``check_same_thread`` is off so that the owner can close it from another thread once
    its thread is done with it; each connection is still used by one thread at a time.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -32768")  # 32 MiB of page cache per connection
    if read_only:
        conn.execute("PRAGMA query_only = 1")
    return conn


@dataclass(frozen=True)
class IndexInfo:
    path: str
    text_search: str  # FTS5 or LIKE


class IndexUnavailable(Exception):
    """The index cannot be opened or created (str() says why, in one line)."""


def create(conn: sqlite3.Connection, text_search: str) -> None:
    """Create the schema in an empty database."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CAPTURES)
        for sql in (*_INDEXES, *_OTHERS):
            conn.execute(sql)
        conn.execute(_FTS_TABLE if text_search == FTS5 else _LIKE_TABLE)
        conn.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            [("schema_version", str(SCHEMA_VERSION)), ("text_search", text_search)],
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _existing_mode(conn: sqlite3.Connection) -> str | None:
    """The text-search mode of a usable index of this schema version, else None."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        return None
    rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    mode = rows.get("text_search")
    if mode == FTS5 and not fts5_available():
        return None
    if mode not in (FTS5, LIKE):
        return None
    conn.execute(f"SELECT count(*) FROM {TEXT_TABLE[mode]} WHERE 0").fetchone()
    return str(mode)


def remove(path: str) -> None:
    """Delete an index file and its WAL companions (nobody may have it open)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def open_index(path: str, text_search: str | None = None) -> IndexInfo:
    """Open (creating or replacing as needed) the index at ``path``.

    ``text_search`` forces a mode for a new index (tests use ``LIKE``); by default FTS5
    when this SQLite has it. An existing index of another schema version, or one this
    SQLite cannot read, is deleted and created anew: reconciling refills it.
    """
    wanted = text_search or (FTS5 if fts5_available() else LIKE)
    if wanted == FTS5 and not fts5_available():
        wanted = LIKE
    for attempt in (1, 2):
        try:
            with contextlib.closing(connect(path)) as conn:
                exists = (
                    conn.execute(
                        "SELECT count(*) FROM sqlite_master WHERE name = 'captures'"
                    ).fetchone()[0]
                    > 0
                )
                if exists:
                    mode = _existing_mode(conn)
                    if mode is not None and (text_search is None or mode == text_search):
                        _log_mode(mode)
                        return IndexInfo(path, mode)
                    raise sqlite3.DatabaseError("index of another version or mode")
                create(conn, wanted)
                _log_mode(wanted)
                return IndexInfo(path, wanted)
        except sqlite3.Error as e:
            if attempt == 2:
                raise IndexUnavailable(f"cannot create the capture index {path}: {e}") from None
            log.info("replacing the capture index {path} ({reason})", path=path, reason=e)
            try:
                remove(path)
            except OSError as err:
                raise IndexUnavailable(
                    f"cannot replace the capture index {path}: {err.strerror or err}"
                ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _log_mode(mode: str) -> None:
    if mode == LIKE:
        log.warn(
            "SQLite {version} has no FTS5: text search (q=) falls back to LIKE, "
            "which is slow on large indexes",
            version=sqlite3.sqlite_version,
        )
