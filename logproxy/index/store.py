"""Writing and deleting index rows (on whichever thread owns the connection).

The callers run these inside their own transaction: the writer thread once per writer
batch, the reconciler and retention in small chunks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from logproxy.index.rows import (
    COLUMNS,
    REQUEST_TEXT,
    RESPONSE_TEXT,
    Entry,
    dump_doc,
    loads_doc,
    order_key,
)
from logproxy.index.schema import TEXT_TABLE

_DATA_COLUMNS = COLUMNS[1:]  # all but order_key
_INSERT = (
    f"INSERT INTO captures(order_key, {', '.join(_DATA_COLUMNS)}) "
    f"VALUES (?, {', '.join('?' for _ in _DATA_COLUMNS)})"
)
_UPDATED = tuple(c for c in _DATA_COLUMNS if c not in ("id", "started_us", "day", "stem"))
_UPDATE = f"UPDATE captures SET {', '.join(f'{c} = ?' for c in _UPDATED)} WHERE order_key = ?"
_DOCS = (
    "INSERT INTO docs(order_key, request_doc, response_doc) VALUES (?, ?, ?) "
    "ON CONFLICT(order_key) DO UPDATE SET "
    "request_doc = excluded.request_doc, response_doc = excluded.response_doc"
)
#: Loading a capture the writer has no state for (a late metadata update).
SELECT_ENTRY = (
    "SELECT c.order_key, c.stem, c.started_us, c.model, c.response_bytes, c.text_indexed, "
    "c.request_mtime, c.response_mtime, d.request_doc, d.response_doc "
    "FROM captures c LEFT JOIN docs d ON d.order_key = c.order_key WHERE c.id = ?"
)


def load_entry(conn: sqlite3.Connection, capture_id: str) -> Entry | None:
    row = conn.execute(SELECT_ENTRY, (capture_id,)).fetchone()
    if row is None:
        return None
    key, stem, started, model, resp_bytes, text_indexed, req_mtime, resp_mtime, req, resp = row
    entry = Entry(capture_id, stem, started, order_key=key)
    entry.request_doc, entry.response_doc = loads_doc(req), loads_doc(resp)
    llm = entry.llm
    if not (llm and isinstance(llm.get("model"), str)):
        entry.sniffed_model = model
    entry.live_response_bytes = resp_bytes
    entry.text_indexed = text_indexed
    entry.request_mtime, entry.response_mtime = req_mtime, resp_mtime
    return entry


def write_entry(conn: sqlite3.Connection, entry: Entry, text_search: str) -> None:
    """Insert or update the capture's rows (``captures``, ``docs``, the text table).

    An update sets only the columns that changed since this entry was last written:
    SQLite then leaves alone every index on the other columns (a capture is written up
    to four times as its documents come; most writes touch two or three indexes).
    """
    prior = entry.text_indexed
    entry.text_indexed |= _pending_bits(entry)
    values = entry.values()
    docs = (dump_doc(entry.request_doc), dump_doc(entry.response_doc))
    key = entry.order_key
    if key is None:
        found = conn.execute(
            "SELECT order_key FROM captures WHERE id = ?", (entry.capture_id,)
        ).fetchone()
        key = found[0] if found is not None else None
    if key is None:
        key = _insert(conn, entry, values)
        conn.execute(_DOCS, (key, *docs))
    else:
        written = entry.written
        if written is None:
            conn.execute(_UPDATE, [*(values[c] for c in _UPDATED), key])
            conn.execute(_DOCS, (key, *docs))
        else:
            changed = [c for c in _UPDATED if values[c] != written.get(c)]
            if changed:
                sets = ", ".join(f"{c} = ?" for c in changed)
                conn.execute(
                    f"UPDATE captures SET {sets} WHERE order_key = ?",
                    [*(values[c] for c in changed), key],
                )
            old_docs = entry.written_docs
            for column, new, old in zip(
                ("request_doc", "response_doc"), docs, old_docs, strict=True
            ):
                if new != old:
                    conn.execute(f"UPDATE docs SET {column} = ? WHERE order_key = ?", (new, key))
    entry.order_key = key
    entry.written = values
    entry.written_docs = docs
    _write_text(conn, entry, key, text_search, prior)


def _pending_bits(entry: Entry) -> int:
    bits = REQUEST_TEXT if entry.request_text is not None else 0
    if entry.response_text is not None or entry.output_text is not None:
        bits |= RESPONSE_TEXT
    return bits


def _insert(conn: sqlite3.Connection, entry: Entry, values: dict[str, Any]) -> int:
    key = order_key(entry.started_us, entry.capture_id)
    row = [values[c] for c in _DATA_COLUMNS]
    for _ in range(4096):
        try:
            conn.execute(_INSERT, [key, *row])
            return key
        except sqlite3.IntegrityError:
            # Another capture has this key (same microsecond, same ten id bits).
            taken = conn.execute("SELECT id FROM captures WHERE order_key = ?", (key,)).fetchone()
            if taken is None or taken[0] == entry.capture_id:
                raise
            key += 1
    raise sqlite3.IntegrityError("no free order key")  # pragma: no cover


def _write_text(
    conn: sqlite3.Connection, entry: Entry, key: int, text_search: str, prior: int
) -> None:
    """Bodies read since the last write go into the text table (FTS5 or plain)."""
    new: dict[str, str] = {}
    if entry.request_text is not None:
        new["request_body"] = entry.request_text
    if entry.response_text is not None or entry.output_text is not None:
        new["response_body"] = entry.response_text or ""
        new["output_text"] = entry.output_text or ""
    if not new:
        return
    table = TEXT_TABLE[text_search]
    if prior == 0:
        row = [new.get(c, "") for c in ("request_body", "response_body", "output_text")]
        conn.execute(
            f"INSERT OR REPLACE INTO {table}(rowid, request_body, response_body, output_text) "
            "VALUES (?, ?, ?, ?)",
            [key, *row],
        )
    else:
        sets = ", ".join(f"{c} = ?" for c in new)
        conn.execute(f"UPDATE {table} SET {sets} WHERE rowid = ?", [*new.values(), key])
    entry.request_text = entry.response_text = entry.output_text = None


def update_response_bytes(conn: sqlite3.Connection, key: int, size: int) -> None:
    conn.execute("UPDATE captures SET response_bytes = ? WHERE order_key = ?", (size, key))


def delete_keys(conn: sqlite3.Connection, keys: Sequence[int], text_search: str) -> None:
    table = TEXT_TABLE[text_search]
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        marks = ", ".join("?" for _ in chunk)
        conn.execute(f"DELETE FROM captures WHERE order_key IN ({marks})", chunk)
        conn.execute(f"DELETE FROM docs WHERE order_key IN ({marks})", chunk)
        conn.execute(f"DELETE FROM {table} WHERE rowid IN ({marks})", chunk)


def delete_ids(conn: sqlite3.Connection, ids: Iterable[str], text_search: str) -> int:
    """Delete the rows of these capture ids; returns how many existed."""
    wanted = list(ids)
    keys: list[int] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        keys += [
            row[0]
            for row in conn.execute(
                f"SELECT order_key FROM captures WHERE id IN ({marks})", chunk
            ).fetchall()
        ]
    delete_keys(conn, keys, text_search)
    return len(keys)


def text_search_mode(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = 'text_search'").fetchone()
    return str(row[0]) if row else "fts5"
