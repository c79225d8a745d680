"""The capture index (logproxy/index/): schema, rows from documents, the live updater,
reconcile after a crash, reindex, retention, text search (FTS5 and the LIKE fallback),
filters and cursor pages."""

from __future__ import annotations

import fnmatch
import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from logproxy.capture.model import (
    CaptureName,
    Metadata,
    StreamHead,
    file_stem,
    rfc3339,
    stream_document,
)
from logproxy.capture.retention import GRACE, enforce
from logproxy.capture.writer import write_json_atomically
from logproxy.index import query as q
from logproxy.index.events import EventBus
from logproxy.index.reconcile import (
    IndexLocked,
    apply_chunk,
    exclusive_lock,
    rebuild,
    reconcile_chunks,
    shared_lock,
)
from logproxy.index.rows import COLUMNS, Entry, order_key
from logproxy.index.schema import FTS5, LIKE, connect, index_path, open_index
from logproxy.index.store import write_entry
from logproxy.index.updater import IndexUpdater

MODES = [FTS5, LIKE]


# ---------------------------------------------------------------- writing captures


class Reactor:
    """Enough reactor for the updater: ``callFromThread`` runs at once."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def callFromThread(self, fn: Any, *args: Any) -> None:
        self.calls.append((fn, args))
        fn(*args)


class Capture:
    """Writes one capture's files the way the writer does, step by step, and tells an
    updater (if any) after each metadata document, as the writer thread does."""

    def __init__(
        self,
        log_dir: Path,
        started: float | None = None,
        *,
        capture_id: str | None = None,
        route: str | None = "openai",
        method: str = "POST",
        updater: IndexUpdater | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.id = capture_id or str(uuid.uuid4())
        self.started = time.time() if started is None else started
        self.updater = updater
        self.exchange: dict[str, Any] = {
            "id": self.id,
            "route": route,
            "pattern": f"/{route}/" if route else None,
            "method": method,
            "source_url": f"http://localhost:5601/{route or 'x'}/chat/completions",
            "target_url": "https://api.example/v1/chat/completions" if route else None,
            "request_started_at": rfc3339(self.started),
            "request_content_encoding": None,
        }
        self.sizes = {"request": 0, "response": 0}

    def name(self, kind: str) -> CaptureName:
        return CaptureName(self.id, self.started, kind)  # type: ignore[arg-type]

    def path(self, kind: str, meta: bool = False) -> Path:
        name = self.name(kind)
        return self.log_dir / name.folder / (name.metadata_name if meta else name.bin_name)

    def _doc(self, kind: str, final: bool, error: str | None = None, **extra: Any) -> Metadata:
        end = time.time() if final else None
        return stream_document(
            kind,  # type: ignore[arg-type]
            self.name(kind),
            dict(self.exchange),
            started_at=self.started,
            completed_at=end,
            bytes_written=self.sizes[kind],
            completed=final and error is None,
            error=error,
            extra={"truncated": False, "bytes_lost": 0, "capture_error": None, **extra},
        )

    def _write_doc(self, kind: str, doc: Metadata) -> None:
        path = self.path(kind, meta=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(str(path), doc)
        if self.updater is not None:
            self.updater.document_written(str(self.log_dir), self.name(kind), doc)

    def open(self, kind: str, head: bytes) -> None:
        path = self.path(kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(head)
        self.sizes[kind] = len(head)
        self._write_doc(kind, self._doc(kind, False))

    def write(self, kind: str, data: bytes) -> None:
        with open(self.path(kind), "ab") as f:
            f.write(data)
        self.sizes[kind] += len(data)
        if self.updater is not None:
            self.updater.data_written(str(self.log_dir), self.name(kind), self.sizes[kind])

    def close(self, kind: str, error: str | None = None, **extra: Any) -> None:
        self._write_doc(kind, self._doc(kind, True, error, **extra))

    def batch(self) -> None:
        if self.updater is not None:
            self.updater.batch_done()

    # whole requests and responses

    def request(self, body: Any, final: bool = True) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        head = StreamHead(
            b"POST https://api.example/v1/chat/completions HTTP/1.1",
            [(b"Content-Type", b"application/json")],
            None,
            [],
        ).block(frozenset(), False, None)
        self.open("request", head)
        self.write("request", data)
        if final:
            self.close("request")

    def response(
        self,
        status: int = 200,
        body: bytes = b"",
        llm: dict[str, Any] | None = None,
        final: bool = True,
        error: str | None = None,
        content_type: bytes = b"application/json",
    ) -> None:
        self.exchange.update(response_status=f"{status} X", response_status_code=status)
        head = StreamHead(
            b"HTTP/1.1 %d X" % status, [(b"Content-Type", content_type)], None, []
        ).block(frozenset(), False, None)
        self.open("response", head)
        if body:
            self.write("response", body)
        if final:
            extra = {"llm": llm} if llm is not None else {}
            self.close("response", error, **extra)

    def whole(self, model: str = "gpt-4o-mini", text: str = "hello", **response: Any) -> str:
        self.request({"model": model, "messages": [{"role": "user", "content": text}]})
        self.response(**response)
        self.batch()
        return self.id


def llm_block(model: str, output: str, **usage: int) -> dict[str, Any]:
    return {
        "api": "openai.chat",
        "model": model,
        "response_model": model + "-2025",
        "stream": True,
        "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12, **usage},
        "ttft_ms": 12.5,
        "output_text": output,
        "tool_calls": [],
        "partial": False,
    }


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Live:
    """An index with a live updater, as in a running service (without the threads)."""

    def __init__(self, log_dir: Path, mode: str, bus: EventBus | None = None) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.info = open_index(index_path(str(log_dir)), mode)
        self.reactor = Reactor()
        self.now = 1000.0
        self.updater = IndexUpdater(
            lambda: self.info, str(log_dir), self.reactor, bus, clock=lambda: self.now
        )
        self.conn = connect(self.info.path, read_only=True)

    def capture(self, started: float | None = None, **kwargs: Any) -> Capture:
        return Capture(self.log_dir, started, updater=self.updater, **kwargs)

    def row(self, capture_id: str) -> dict[str, Any]:
        cols = ", ".join(COLUMNS)
        row = self.conn.execute(f"SELECT {cols} FROM captures WHERE id = ?", (capture_id,))
        found = row.fetchone()
        assert found is not None, f"no row for {capture_id}"
        return dict(zip(COLUMNS, found, strict=True))

    def ids(self, **params: str) -> list[str]:
        page = q.list_page(
            self.conn, q.parse_query({k: [v] for k, v in params.items()}), self.info.text_search
        )
        return [item["id"] for item in page["items"]]

    def close(self) -> None:
        self.updater.close()
        self.conn.close()


@pytest.fixture
def live(tmp_path: Path, mode: str) -> Iterator[Live]:
    index = Live(tmp_path / "logs", mode)
    yield index
    index.close()


def table_dump(path: str) -> dict[str, Any]:
    """Everything the index says, comparable between two index files."""
    conn = connect(path, read_only=True)
    try:
        mode = conn.execute("SELECT value FROM meta WHERE key = 'text_search'").fetchone()[0]
        table = "captures_fts" if mode == FTS5 else "captures_text"
        rows = {}
        for row in conn.execute(
            f"SELECT {', '.join('c.' + c for c in COLUMNS)}, d.request_doc, d.response_doc, "
            "t.request_body, "
            f"t.response_body, t.output_text FROM captures c LEFT JOIN docs d "
            f"ON d.order_key = c.order_key LEFT JOIN {table} t ON t.rowid = c.order_key"
        ):
            values = dict(zip([*COLUMNS, "req", "resp", "t1", "t2", "t3"], row, strict=True))
            values["req"] = json.loads(values["req"]) if values["req"] else None
            values["resp"] = json.loads(values["resp"]) if values["resp"] else None
            rows[values["id"]] = values
        return rows
    finally:
        conn.close()


# ---------------------------------------------------------------- schema


def test_schema_wal_fts5_and_replacement_of_other_versions(tmp_path: Path) -> None:
    path = str(tmp_path / "index.sqlite3")
    info = open_index(path)
    assert info.text_search == FTS5  # this SQLite has FTS5
    conn = connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"captures", "docs", "days", "meta", "captures_fts"} <= tables
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"captures_route", "captures_model", "captures_route_model"} <= indexes
    conn.execute("INSERT INTO days VALUES ('2020-01-01', 1)")
    assert open_index(path).text_search == FTS5  # reopening keeps the data
    assert conn.execute("SELECT count(*) FROM days").fetchone()[0] == 1
    conn.execute("PRAGMA user_version = 999")  # another schema version: replaced
    conn.close()
    assert open_index(path).text_search == FTS5
    conn = connect(path)
    assert conn.execute("SELECT count(*) FROM days").fetchone()[0] == 0
    conn.close()
    (tmp_path / "junk.sqlite3").write_bytes(b"not a database" * 100)
    assert open_index(str(tmp_path / "junk.sqlite3")).text_search == FTS5


def test_like_fallback_is_said_in_the_log(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        info = open_index(str(tmp_path / "i.sqlite3"), LIKE)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert info.text_search == LIKE
    text = " ".join(e.get("log_format", "") for e in events)
    assert "no FTS5" in text and "LIKE" in text


def test_order_keys_sort_by_start_and_never_collide() -> None:
    a = order_key(1_700_000_000_000_000, "00000000-0000-4000-8000-000000000abc")
    b = order_key(1_700_000_000_000_001, "00000000-0000-4000-8000-000000000000")
    assert a < b and a >> 10 == 1_700_000_000_000_000


def test_same_microsecond_same_id_bits_get_distinct_keys(tmp_path: Path) -> None:
    info = open_index(str(tmp_path / "i.sqlite3"))
    conn = connect(info.path)
    started = 1_700_000_000_000_000
    ids = [f"{n:08x}-0000-4000-8000-000000000abc" for n in range(3)]
    for capture_id in ids:
        entry = Entry(capture_id, file_stem(capture_id, started / 1e6), started)
        write_entry(conn, entry, info.text_search)
    keys = [r[0] for r in conn.execute("SELECT order_key FROM captures ORDER BY order_key")]
    assert len(set(keys)) == 3 and keys[0] == order_key(started, ids[0])
    conn.close()


# ---------------------------------------------------------------- the live updater


def test_request_first_then_response(live: Live) -> None:
    c = live.capture()
    c.request({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ping"}]})
    c.batch()
    row = live.row(c.id)
    assert row["inflight"] == 1 and row["status"] is None and row["error"] is None
    assert row["model"] == "gpt-4o-mini"  # sniffed from the request body at its end
    assert row["route"] == "openai" and row["method"] == "POST"
    assert live.ids(status="inflight") == [c.id]
    # the request text waits a moment for the response, to be indexed with it in one go
    assert live.ids(q="ping") == []
    live.now += 1.0
    live.updater.batch_done()  # the writer's next batch, whatever it holds
    assert live.ids(q="ping") == [c.id]  # then a capture still in flight is searchable
    c.response(body=b'{"answer": "pong"}', llm=llm_block("gpt-4o-mini", "pong pong"))
    c.batch()
    row = live.row(c.id)
    assert row["inflight"] == 0 and row["status"] == 200 and row["status_class"] == 2
    assert row["completed"] == 1 and row["response_model"] == "gpt-4o-mini-2025"
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (5, 7, 12)
    assert row["ttft_ms"] == 12.5 and row["api"] == "openai.chat" and row["stream"] == 1
    assert row["duration_ms"] is not None and row["duration_ms"] >= 0
    assert row["response_bytes"] == os.path.getsize(c.path("response"))
    assert live.ids(status="inflight") == []
    assert live.ids(q="pong") == [c.id] == live.ids(q="answer")


def test_response_document_before_request_document(live: Live) -> None:
    """An upload's response stream may reach the logging server first."""
    c = live.capture()
    c.response(status=201, body=b"created", final=False)
    c.batch()
    assert live.row(c.id)["status"] == 201 and live.row(c.id)["inflight"] == 1
    c.request({"model": "claude-x", "messages": []})
    c.close("response")
    c.batch()
    row = live.row(c.id)
    assert row["model"] == "claude-x" and row["inflight"] == 0 and row["status"] == 201
    assert row["request_bytes"] > 0


def test_error_in_flight_and_progress(live: Live) -> None:
    bus_events: list[tuple[str, str]] = []
    c = live.capture()
    c.request({"model": "m"})
    c.response(body=b"data: 1\n\n", final=False, content_type=b"text/event-stream")
    c.batch()
    assert live.row(c.id)["inflight"] == 1
    for n in range(5):
        live.now += 0.1  # 10 chunks/s, progress at most every 0.25 s
        c.write("response", b"data: %d\n\n" % n)
        c.batch()
        bus_events.append(("bytes", str(live.row(c.id)["response_bytes"])))
    sizes = [int(b) for _, b in bus_events]
    assert sizes == sorted(sizes) and len(set(sizes)) < 5  # throttled, but growing
    c.close("response", error="upstream connection lost: reset")
    c.batch()
    row = live.row(c.id)
    assert row["error"] == "upstream connection lost: reset" and row["failed"] == 1
    assert row["inflight"] == 0 and row["completed"] == 0
    assert live.ids(status="error") == [c.id]
    assert row["response_bytes"] == os.path.getsize(c.path("response"))


def test_events_start_progress_end(tmp_path: Path) -> None:
    reactor = Reactor()
    bus = EventBus(reactor, keepalive_interval=0)
    got: list[tuple[str, dict[str, Any]]] = []

    class Subscriber:
        def event(self, event_id: str, kind: str, data: bytes) -> None:
            got.append((kind, json.loads(data)))

        def keepalive(self) -> None:
            pass

        def close(self) -> None:
            pass

    bus.subscribe(Subscriber())
    index = Live(tmp_path / "logs", FTS5, bus)
    index.updater._reactor = reactor
    c = index.capture()
    c.request({"model": "m"})
    c.batch()
    c.response(body=b"x", final=False)
    c.batch()
    for _ in range(3):
        index.now += 0.3
        c.write("response", b"more")
        c.batch()
    c.close("response")
    c.batch()
    kinds = [k for k, _ in got]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("start") == 1
    assert kinds.count("progress") >= 4  # response opened + 3 growths
    assert {item["id"] for _, item in got} == {c.id}
    end = got[-1][1]
    assert end["stream_type"] == "response" and end["summary"]["in_flight"] is False
    assert end["request"]["stream_type"] == "request" and "metadata" not in end["request"]
    progress = [item["summary"]["response_bytes"] for k, item in got if k == "progress"]
    assert progress == sorted(progress) and progress[-1] > progress[0]
    index.close()


def test_a_later_metadata_update_is_applied(live: Live) -> None:
    """An upload's final metadata (PUT .../metadata) rewrites a finished document."""
    c = live.capture()
    c.whole()
    live.updater._live.clear()  # as if long ago: the updater reloads it from the index
    c.close("response", llm=llm_block("late-model", "late text"))
    c.batch()
    assert live.row(c.id)["model"] == "late-model"
    assert live.ids(q="late") == [c.id]


# ---------------------------------------------------------------- reconcile and reindex


def reconcile(index_file: str, log_dir: Path, mode: str, full: bool = False) -> int:
    conn = connect(index_file)
    scanned = 0
    try:
        for chunk in reconcile_chunks(index_file, str(log_dir), full=full, chunk_size=7):
            apply_chunk(conn, chunk, mode)
            scanned += chunk.scanned
    finally:
        conn.close()
    return scanned


def test_reconcile_after_a_crash(tmp_path: Path, mode: str) -> None:
    log_dir = tmp_path / "logs"
    index = Live(log_dir, mode)
    now = time.time()
    indexed = [index.capture(now - 86400 * 2 + n).whole(text=f"kept {n}") for n in range(5)]
    # written while the index was not kept (or lost in a crash before the commit)
    writer = Capture(log_dir, now - 60)
    writer.whole(text="unindexed words")
    in_flight = Capture(log_dir, now - 30)
    in_flight.request({"model": "m"})
    # files deleted by hand: the rows must go
    gone = index.capture(now - 86400 * 2 + 10)
    gone.whole()
    for kind in ("request", "response"):
        gone.path(kind).unlink()
        gone.path(kind, meta=True).unlink()
    # a document replaced while the index was not looking (crash recovery does this)
    late = Capture(log_dir, now - 86400 * 2, capture_id=indexed[0])
    index.updater.close()
    late.response(status=500, error="interrupted")
    scanned = reconcile(index.info.path, log_dir, mode)
    assert scanned == 7  # every capture on disk was looked at
    rows = table_dump(index.info.path)
    assert set(rows) == {*indexed, writer.id, in_flight.id}
    assert rows[indexed[0]]["status"] == 500 and rows[indexed[0]]["error"] == "interrupted"
    assert rows[in_flight.id]["inflight"] == 1
    conn = connect(index.info.path, read_only=True)
    page = q.list_page(conn, q.parse_query({"q": ["unindexed"]}), mode)
    assert [i["id"] for i in page["items"]] == [writer.id]
    # unchanged day folders are not even listed the next time
    os.utime(log_dir / gone.name("request").folder, ns=(1, 1))  # not "hot" any more
    reconcile(index.info.path, log_dir, mode)
    assert reconcile(index.info.path, log_dir, mode) == 0
    # a whole day folder deleted: its rows go
    for path in (log_dir / gone.name("request").folder).iterdir():
        path.unlink()
    (log_dir / gone.name("request").folder).rmdir()
    reconcile(index.info.path, log_dir, mode)
    assert set(table_dump(index.info.path)) == {writer.id, in_flight.id}
    conn.close()
    index.conn.close()


@pytest.mark.parametrize("mode", MODES)
def test_rebuild_equals_the_live_index(tmp_path: Path, mode: str) -> None:
    log_dir = tmp_path / "logs"
    index = Live(log_dir, mode)
    now = time.time()
    for n in range(12):
        c = index.capture(now - 3600 * n, route=["a", "b", None][n % 3])
        if n % 4 == 3:
            c.request({"model": f"m{n}"})
            c.response(status=502, body=b'{"error": "bad gateway"}', error="upstream refused")
        elif n % 4 == 2:  # still in flight
            c.request({"model": f"m{n}"})
            c.response(body=b"data: partial\n\n", final=False)
        else:
            c.request({"model": f"m{n}", "messages": [{"content": f"question {n}"}]})
            c.response(body=b"answer %d" % n, llm=llm_block(f"m{n}", f"reply {n}"))
        c.batch()
    index.now += 5  # request texts held for their response are written by now
    index.updater.batch_done()
    live_rows = table_dump(index.info.path)
    index.close()
    rebuilt = str(tmp_path / "rebuilt.sqlite3")
    count, info = rebuild(str(log_dir), rebuilt, mode)
    assert count == 12 and info.text_search == mode
    again = table_dump(rebuilt)
    assert set(again) == set(live_rows)
    for capture_id, row in live_rows.items():
        other = again[capture_id]
        if row["inflight"]:  # live bytes come from the writer, reindexed from the file size
            row.pop("response_bytes")
            other.pop("response_bytes")
        assert other == row, capture_id


def test_rebuild_replaces_the_index_atomically_and_respects_the_lock(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    Capture(log_dir).whole()
    path = index_path(str(log_dir))
    with exclusive_lock(str(log_dir)):
        rebuild(str(log_dir), path)
    assert not [p for p in os.listdir(log_dir) if ".tmp-" in p]
    assert table_dump(path) != {}
    fd = shared_lock(str(log_dir))  # a running service
    assert fd is not None
    try:
        with pytest.raises(IndexLocked), exclusive_lock(str(log_dir)):
            pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- retention


def test_retention_deletes_rows_and_counts_the_index(tmp_path: Path, mode: str) -> None:
    log_dir = tmp_path / "logs"
    index = Live(log_dir, mode)
    now = time.time()
    old = [index.capture(now - 40 * 86400 + n).whole(text=f"old{n}") for n in range(3)]
    young = index.capture(now - 86400).whole(text="young")
    count, _ = enforce(str(log_dir), 30 * 86400, None, index.info.path)
    assert count == 3
    assert set(table_dump(index.info.path)) == {young}
    assert index.ids(q="old0") == [] and index.ids(q="young") == [young]
    # the index file counts toward max_bytes: a limit below its size deletes down to GRACE
    for n in range(3):
        index.capture(now - 7200 + n).whole()
    index_size = os.path.getsize(index.info.path)
    count, _ = enforce(str(log_dir), None, index_size, index.info.path)
    assert count == 4  # everything older than GRACE
    assert set(table_dump(index.info.path)) == set()
    assert GRACE > 0
    index.close()
    del old


def test_retention_without_an_index_file(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    Capture(log_dir, time.time() - 40 * 86400).whole()
    assert enforce(str(log_dir), 86400, None, index_path(str(log_dir)))[0] == 1
    assert not os.path.exists(index_path(str(log_dir)))


# ---------------------------------------------------------------- text search


def test_text_search(live: Live) -> None:
    a = live.capture().whole(
        model="gpt-4o",
        text='What is the weather in "Paris"?\nUse get_weather.',
        body=b'{"choices": [{"message": {"content": "Sunny, 24 degrees"}}]}',
        llm=llm_block("gpt-4o", "Sunny, 24 degrees and a light breeze"),
    )
    b = live.capture().whole(model="claude-3-5", text="Write a haiku about autumn leaves")
    assert live.ids(q="weather") == [a]
    assert live.ids(q="paris") == [a]  # case-insensitive; the JSON escapes are gone
    assert live.ids(q="breeze") == [a]  # the reassembled output text
    assert live.ids(q="sunny degrees") == [a]  # every word, from any body
    assert live.ids(q="sunny autumn") == []
    assert set(live.ids(q="gpt-4o")) == {a}  # punctuation is a phrase, not query syntax
    assert live.ids(q="haik*") == [b]  # prefix
    assert live.ids(q="get_weather") == [a]
    for odd in ('"', "(", "NEAR(a b)", "*", "a OR b", "-x", "^", "col:val", "'"):
        live.ids(q=odd)  # never an SQL or FTS syntax error
    assert live.ids(q="autumn", model="gpt-4o") == []
    assert live.ids(q="autumn", model="claude*") == [b]


def test_binary_and_large_bodies(live: Live) -> None:
    c = live.capture()
    big = b"start " + b"filler " * 60000 + b" needle-at-the-end"
    c.request(big)
    c.response(body=b"\x00\x01binary\x00stuff")
    c.batch()
    assert live.ids(q="start") == [c.id]
    assert live.ids(q="needle") == []  # past the first 256 KiB
    assert live.ids(q="binary") == []


# ---------------------------------------------------------------- filters and pages


def populate(mode: str, path: str, count: int = 300) -> tuple[list[Entry], dict[str, str]]:
    """Captures with varied attributes, written straight into the index; and their texts."""
    rng = random.Random(5)
    info = open_index(path, mode)
    conn = connect(path)
    entries = []
    texts = {}
    base = 1_750_000_000.0
    conn.execute("BEGIN")
    for n in range(count):
        capture_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        # some share a start time (a page boundary inside equal times)
        started = base + (n // 3) * 7.5
        route = rng.choice(["openai", "anthropic", "lmstudio", None])
        model = rng.choice(["gpt-4o", "gpt-4o-mini", "claude-3", "llama"])
        status = rng.choice([200, 200, 200, 201, 400, 404, 429, 500, 502, None])
        error = "client disconnected" if rng.random() < 0.1 else None
        exchange = {
            "id": capture_id,
            "route": route,
            "method": rng.choice(["POST", "POST", "GET"]),
            "request_started_at": rfc3339(started),
            "response_status_code": status,
        }
        name = CaptureName(capture_id, started, "request")
        entry = Entry(capture_id, file_stem(capture_id, started), round(started * 1e6))
        entry.request_doc = stream_document(
            "request",
            name,
            exchange,
            started_at=started,
            completed_at=started + 1,
            bytes_written=10,
            completed=True,
            error=None,
        )
        if status is not None:
            entry.response_doc = stream_document(
                "response",
                CaptureName(capture_id, started, "response"),
                exchange,
                started_at=started,
                completed_at=None if n % 17 == 0 else started + 2,
                bytes_written=10,
                completed=error is None,
                error=error,
            )
        entry.sniffed_model = model
        entry.request_text = texts[capture_id] = f"word{n % 10} common" + (
            " rare" if n % 50 == 0 else ""
        )
        conn.execute("SAVEPOINT s")
        write_entry(conn, entry, info.text_search)
        conn.execute("RELEASE s")
        entries.append(entry)
    conn.execute("COMMIT")
    conn.close()
    return entries, texts


def expected(entries: list[Entry], texts: dict[str, str], **f: Any) -> list[str]:
    out = []
    for e in entries:
        v = e.values()
        if "route" in f:
            wanted = None if f["route"] == "-" else f["route"]
            if v["route"] != wanted:
                continue
        if "model" in f and (v["model"] is None or not fnmatch.fnmatchcase(v["model"], f["model"])):
            continue
        if "method" in f and v["method"] != f["method"]:
            continue
        if "status" in f:
            ok = False
            for part in f["status"].split(","):
                if part == "error":
                    ok |= v["error"] is not None
                elif part == "inflight":
                    ok |= v["inflight"] == 1
                elif v["status"] is not None:
                    ok |= (
                        v["status"] // 100 == int(part[0])
                        if part.endswith("xx")
                        else v["status"] == int(part)
                    )
            if not ok:
                continue
        if "since" in f and e.started_us < f["since"] * 1e6:
            continue
        if "until" in f and e.started_us >= f["until"] * 1e6:
            continue
        if "q" in f and not all(w in texts[e.capture_id].split() for w in f["q"].split()):
            continue
        out.append(e)
    out.sort(key=lambda e: e.order_key or 0, reverse=True)
    return [e.capture_id for e in out]


FILTERS: list[dict[str, Any]] = [
    {},
    {"route": "openai"},
    {"route": "-"},
    {"model": "gpt-4o"},
    {"model": "gpt-4o*"},
    {"model": "*a*"},
    {"status": "200"},
    {"status": "4xx"},
    {"status": "4xx,5xx"},
    {"status": "error"},
    {"status": "inflight"},
    {"status": "error,inflight,201"},
    {"method": "GET"},
    {"route": "anthropic", "model": "claude-3", "status": "2xx"},
    {"route": "openai", "model": "gpt-4o*", "status": "4xx,error"},
    {"since": 1_750_000_000.0 + 200, "until": 1_750_000_000.0 + 500},
    {"q": "common"},
    {"q": "word3 common"},
    {"q": "rare"},
    {"q": "common", "route": "lmstudio", "status": "2xx,inflight"},
]


@pytest.mark.parametrize("mode", MODES)
def test_filters_and_cursor_pages(tmp_path: Path, mode: str) -> None:
    path = str(tmp_path / "i.sqlite3")
    entries, texts = populate(mode, path)
    conn = connect(path, read_only=True)
    for f in FILTERS:
        args = {k: [rfc3339(v) if k in ("since", "until") else str(v)] for k, v in f.items()}
        want = expected(entries, texts, **f)
        got: list[str] = []
        cursor = None
        pages = 0
        while True:
            page_args = {**args, "limit": ["7"], **({"cursor": [cursor]} if cursor else {})}
            page = q.list_page(conn, q.parse_query(page_args), mode)
            got += [item["id"] for item in page["items"]]
            assert len(page["items"]) <= 7
            cursor = page["next_cursor"]
            pages += 1
            if cursor is None:
                break
            assert pages < 100
        assert got == want, f
        assert len(got) > 0 or f.get("q") == "rare", f
    conn.close()


def test_pages_are_stable_while_captures_arrive(live: Live) -> None:
    now = time.time()
    first = [live.capture(now - 100 + n).whole(text=f"t{n}") for n in range(10)]
    page = q.list_page(live.conn, q.parse_query({"limit": ["4"]}), live.info.text_search)
    seen = [i["id"] for i in page["items"]]
    cursor = page["next_cursor"]
    while cursor:
        for _ in range(2):  # newer captures arrive between pages
            live.capture().whole()
        page = q.list_page(
            live.conn, q.parse_query({"limit": ["4"], "cursor": [cursor]}), live.info.text_search
        )
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
    assert seen == list(reversed(first))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"status": ["teapot"]}, "status:"),
        ({"limit": ["0"]}, "limit:"),
        ({"limit": ["501"]}, "limit:"),
        ({"limit": ["ten"]}, "limit:"),
        ({"since": ["yesterday"]}, "since:"),
        ({"until": ["2025-13-45"]}, "until:"),
        ({"cursor": ["!!!"]}, "cursor:"),
        ({"cursor": ["AAAA"]}, "cursor:"),
        ({"method": ["P O S T"]}, "method:"),
        ({"route": ["a", "b"]}, "route: give it once"),
        ({"colour": ["red"]}, "unknown parameter 'colour'"),
        ({"q": ["x" * 2000]}, "q:"),
    ],
)
def test_bad_parameters(args: dict[str, list[str]], message: str) -> None:
    with pytest.raises(q.BadQuery) as info:
        q.parse_query(args)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_times_relative_and_absolute() -> None:
    now = 1_750_000_000.0
    assert q.parse_query({"since": ["1h"]}, now=now).since_us == round((now - 3600) * 1e6)
    assert q.parse_query({"since": ["2025-06-15"]}).since_us == 1_749_945_600 * 10**6
    until = q.parse_query({"until": ["2025-06-15T12:00:00+02:00"]}).until_us
    assert until == (1_749_945_600 + 10 * 3600) * 10**6


def test_find_by_id_and_prefix(tmp_path: Path) -> None:
    path = str(tmp_path / "i.sqlite3")
    info = open_index(path)
    conn = connect(path)
    for capture_id in (
        "abcd1111-0000-4000-8000-000000000001",
        "abcd2222-0000-4000-8000-000000000002",
    ):
        write_entry(
            conn,
            Entry(capture_id, file_stem(capture_id, 1.7e9), 1_700_000_000_000_000),
            info.text_search,
        )
    assert q.find(conn, "abcd1").capture_id.startswith("abcd1111")
    assert q.find(conn, "abcd2222-0000-4000-8000-000000000002").stem.endswith("002")
    with pytest.raises(q.Ambiguous):
        q.find(conn, "abcd")
    with pytest.raises(q.NotFound):
        q.find(conn, "ffff")
    with pytest.raises(q.BadQuery):
        q.check_id("abc")  # too short
    with pytest.raises(q.BadQuery):
        q.check_id("xyz!")
    conn.close()


def test_held_request_text_is_written_at_close(tmp_path: Path) -> None:
    index = Live(tmp_path / "logs", FTS5)
    c = index.capture()
    c.request({"model": "m", "messages": [{"content": "closing words"}]})
    c.response(body=b"partial", final=False)
    c.batch()
    assert index.ids(q="closing") == []
    index.updater.close()  # the service stops: what is held is written
    assert index.ids(q="closing") == [c.id]
    index.conn.close()
