"""The capture index at scale: list/search latency over 1,000,000 captures, and what the
index costs the capture writer.

    python -m bench.index_bench [--rows 1000000] [--path /tmp/index-bench.sqlite3]
                                [--reuse] [--repeat 200] [--writer 3000] [--skip-writer]

1. **Fill** (skipped with ``--reuse`` when the file exists): ``--rows`` captures inserted
   straight into a fresh index through the same row code the live updater uses
   (:class:`logproxy.index.rows.Entry` -> :func:`logproxy.index.store.write_entry`):
   30 days of traffic, 12 routes, 40 models (Zipf-distributed), realistic status mix,
   errors, a few in flight, JSON request bodies and SSE/JSON responses with text drawn
   from a Zipf vocabulary, so text search sees common, medium and rare words.
2. **Queries**: p50/p95/p99 over ``--repeat`` runs of each query through
   :func:`logproxy.index.query.list_json` (SQL, decoding the stored documents, building
   the JSON page: everything ``GET /api/requests`` does but HTTP), on a warm cache, with
   varied parameters (different routes, models, cursors, windows) per run.
3. **Writer cost**: ``--writer`` captures through a real :class:`WriterThread` +
   :class:`LocalStore` (request and SSE response files, llm block), with and without the
   :class:`IndexUpdater` listener; captures/s and the added microseconds per capture.

Prints markdown tables. Not part of the test suite (the fill takes minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from logproxy.capture.model import CaptureName, file_stem, rfc3339, stream_document
from logproxy.index import query as q
from logproxy.index.rows import Entry
from logproxy.index.schema import connect, open_index, remove
from logproxy.index.store import write_entry

DAY = 86400.0
ROUTES = [
    ("openai", 0.30),
    ("anthropic", 0.25),
    ("openrouter", 0.15),
    ("lmstudio", 0.08),
    ("llama.cpp", 0.05),
    ("azure", 0.05),
    ("gemini", 0.04),
    ("mistral", 0.03),
    ("groq", 0.02),
    ("together", 0.015),
    ("fireworks", 0.01),
    (None, 0.005),  # unmatched (404)
]
STATUSES = [
    (200, 0.90),
    (400, 0.02),
    (401, 0.01),
    (404, 0.005),
    (429, 0.03),
    (500, 0.01),
    (502, 0.015),
    (503, 0.005),
    (504, 0.005),
]


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (k**s) for k in range(1, n + 1)]


def _vocabulary(rng: random.Random, n: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    return ordered


class Generator:
    """Deterministic synthetic traffic (seeded)."""

    def __init__(self, seed: int = 7) -> None:
        rng = self.rng = random.Random(seed)
        self.vocab = _vocabulary(rng, 20000)
        cum = list(itertools.accumulate(_zipf_weights(len(self.vocab))))
        # snippets: ~20-word sentences; bodies are made of a few of them
        self.snippets = [
            " ".join(rng.choices(self.vocab, cum_weights=cum, k=rng.randint(12, 28)))
            for _ in range(50000)
        ]
        self.snippet_weights = list(itertools.accumulate(_zipf_weights(len(self.snippets), 0.6)))
        self.models = [f"model-{i:02d}" for i in range(40)]
        self.model_weights = list(itertools.accumulate(_zipf_weights(8, 1.2)))
        self.words = {  # for the text-search queries: frequent, medium and rare words
            "common": self.vocab[0],
            "medium": self.vocab[200],
            "rare": self.vocab[8000],
        }

    def route_models(self, r: int) -> list[str]:
        """Models are served by some routes only (as in life): eight per route, in
        overlapping windows; OpenRouter (an aggregator) has them all."""
        if ROUTES[r][0] == "openrouter":
            return self.models
        start = (r * 4) % len(self.models)
        return [self.models[(start + k) % len(self.models)] for k in range(8)]

    def model_for(self, r: int) -> str:
        models = self.route_models(r)
        if len(models) == 8:
            return self.rng.choices(models, cum_weights=self.model_weights)[0]
        return self.rng.choice(models)

    def capture(self, started: float, inflight: bool) -> Entry:
        rng = self.rng
        cid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        r = rng.choices(range(len(ROUTES)), [w for _, w in ROUTES])[0]
        route = ROUTES[r][0]
        model = self.model_for(r)
        status = 404 if route is None else rng.choices(*zip(*STATUSES, strict=True))[0]
        method = "POST" if rng.random() < 0.95 else "GET"
        stream = rng.random() < 0.6
        error = None
        if rng.random() < 0.02:
            error = rng.choice(["client disconnected", "upstream connection lost: reset"])
        prompt = " ".join(
            rng.choices(self.snippets, cum_weights=self.snippet_weights, k=rng.randint(3, 9))
        )
        answer = " ".join(
            rng.choices(self.snippets, cum_weights=self.snippet_weights, k=rng.randint(2, 6))
        )
        name = CaptureName(cid, started, "request")
        exchange: dict[str, Any] = {
            "id": cid,
            "route": route,
            "pattern": f"/{route}/" if route else None,
            "method": method,
            "source_url": f"http://localhost:5601/{route or 'missing'}/v1/chat/completions",
            "target_url": f"https://api.{route}.example/v1/chat/completions" if route else None,
            "request_started_at": rfc3339(started),
            "client_address": "127.0.0.1:50000",
            "request_content_encoding": None,
        }
        request_body = json.dumps(
            {
                "model": model,
                "stream": stream,
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": prompt},
                ],
            }
        )
        extra = {"truncated": False, "bytes_lost": 0, "decode_error": None, "capture_error": None}
        req_doc = stream_document(
            "request",
            name,
            exchange,
            started_at=started,
            completed_at=started + 0.001,
            bytes_written=len(request_body) + 300,
            completed=True,
            error=None,
            extra={**extra, "writer_pid": 1},
        )
        entry = Entry(cid, file_stem(cid, started), round(started * 1_000_000))
        entry.request_doc = req_doc
        entry.request_text = request_body
        entry.sniffed_model = model
        if inflight:
            return entry
        header_s = rng.uniform(0.05, 0.8)
        duration = header_s + rng.uniform(0.2, 20.0)
        resp_exchange = {
            **exchange,
            "upstream_response_at": rfc3339(started + header_s),
            "upstream_header_duration_ms": round(header_s * 1000, 3),
            "response_status": f"{status} X",
            "response_status_code": status,
            "response_content_encoding": None,
        }
        words = answer.split()
        if stream:
            body = "".join(
                'data: {"choices":[{"delta":{"content":"' + w + ' "}}]}\n\n' for w in words
            )
        else:
            body = json.dumps({"choices": [{"message": {"content": answer}}]})
        llm = None
        if status == 200 and route is not None:
            llm = {
                "api": "anthropic.messages" if route == "anthropic" else "openai.chat",
                "model": model,
                "response_model": model + "-2025",
                "stream": stream,
                "finish_reason": "stop",
                "usage": {
                    "input_tokens": len(prompt.split()),
                    "output_tokens": len(words),
                    "total_tokens": len(prompt.split()) + len(words),
                    "cached_input_tokens": 0,
                    "cache_write_input_tokens": None,
                    "reasoning_tokens": None,
                    "cost": None,
                },
                "ttfb_ms": round(header_s * 1000, 1),
                "ttft_ms": round(header_s * 1000 + 30, 1),
                "output_text": answer,
                "tool_calls": [],
                "partial": False,
            }
        entry.response_doc = stream_document(
            "response",
            CaptureName(cid, started, "response"),
            resp_exchange,
            started_at=started + header_s,
            completed_at=started + duration,
            bytes_written=len(body) + 200,
            completed=error is None,
            error=error,
            extra={**extra, "writer_pid": 1, "llm": llm},
        )
        entry.response_text = body
        entry.output_text = answer if llm else ""
        return entry


def fill(path: str, rows: int, now: float) -> None:
    remove(path)
    info = open_index(path)
    gen = Generator()
    conn = connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    start = time.monotonic()
    span = 30 * DAY
    batch = 2000
    last = start
    for first in range(0, rows, batch):
        conn.execute("BEGIN")
        for i in range(first, min(rows, first + batch)):
            started = now - span + span * i / rows + gen.rng.random() * 0.001
            entry = gen.capture(started, inflight=i >= rows - 20)
            write_entry(conn, entry, info.text_search)
        conn.execute("COMMIT")
        if time.monotonic() - last > 5:
            last = time.monotonic()
            done = min(rows, first + batch)
            rate = done / (last - start)
            print(f"  filled {done:,}/{rows:,} ({rate:,.0f}/s)", file=sys.stderr)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = os.path.getsize(path)
    elapsed = time.monotonic() - start
    print(
        f"filled {rows:,} captures in {elapsed:.0f} s; index {size / 1e9:.2f} GB", file=sys.stderr
    )


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)

    def pick(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return pick(0.50), pick(0.95), pick(0.99)


def prewarm(conn: sqlite3.Connection) -> float:
    """Read the narrow table and its indexes once (what a running service keeps in the
    page cache: every listing walks them); the documents and the text index stay cold.
    Returns the seconds it took."""
    t0 = time.monotonic()
    conn.execute("SELECT count(*), sum(length(stem)) FROM captures").fetchone()
    names = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'captures' "
            "AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for name in names:
        with contextlib.suppress(sqlite3.OperationalError):  # partial indexes
            conn.execute(f"SELECT count(*) FROM captures INDEXED BY {name}").fetchone()
    return time.monotonic() - t0


def measure(path: str, repeat: int, now: float) -> list[tuple[str, float, float, float, int]]:
    gen = Generator()
    conn = connect(path, read_only=True)
    print(f"  prewarmed the narrow table in {prewarm(conn):.1f} s", file=sys.stderr)
    mode = conn.execute("SELECT value FROM meta WHERE key = 'text_search'").fetchone()[0]
    rng = random.Random(11)
    hi = conn.execute("SELECT max(order_key) FROM captures").fetchone()[0]
    lo = conn.execute("SELECT min(order_key) FROM captures").fetchone()[0]
    common_routes = ["openai", "anthropic", "openrouter", "lmstudio"]
    models = gen.models

    def page(**params: str) -> Callable[[], bytes]:
        args = {k: [v] for k, v in params.items()}
        return lambda: q.list_json(conn, q.parse_query(args, now=now), mode)

    def routed(**extra: str) -> Callable[[], bytes]:
        r = rng.randrange(4)
        return page(route=ROUTES[r][0] or "-", model=rng.choice(gen.route_models(r)), **extra)

    def deep() -> Callable[[], bytes]:
        cursor = q.encode_cursor(rng.randint(lo, hi))
        return page(cursor=cursor)

    def window() -> Callable[[], bytes]:
        day = rng.uniform(1, 29)
        return page(since=rfc3339(now - day * DAY), until=rfc3339(now - day * DAY + 3600))

    cases: list[tuple[str, Callable[[], Callable[[], bytes]]]] = [
        ("newest 50, no filter", lambda: page()),
        ("route=R (common route)", lambda: page(route=rng.choice(common_routes))),
        ("route=R (rare: 0.5%)", lambda: page(route="-")),
        ("model=M (any of 40, Zipf)", lambda: page(model=rng.choice(models))),
        ("model=M (rarest model)", lambda: page(model=models[-1])),
        ("model glob model-1*", lambda: page(model="model-1*")),
        ("status=200", lambda: page(status="200")),
        ("status=5xx", lambda: page(status="5xx")),
        ("status=429", lambda: page(status="429")),
        ("status=error", lambda: page(status="error")),
        ("status=inflight", lambda: page(status="inflight")),
        ("method=GET", lambda: page(method="GET")),
        ("1-hour window, random day", window),
        ("since=1d route+model", lambda: page(since="1d", route="openai", model=models[0])),
        ("route+model+status", lambda: routed(status="5xx")),
        (
            "route+model of another route (no match)",
            lambda: page(route="openai", model=gen.route_models(1)[-1]),
        ),
        ("q common word", lambda: page(q=gen.words["common"])),
        ("q medium word", lambda: page(q=gen.words["medium"])),
        ("q rare word", lambda: page(q=gen.words["rare"])),
        ("q two words", lambda: page(q=f"{gen.words['medium']} {gen.words['common']}")),
        ("q + route", lambda: page(q=gen.words["medium"], route="anthropic")),
        ("q common + rare route (0.5%)", lambda: page(q=gen.words["common"], route="-")),
        ("q rare + status=5xx", lambda: page(q=gen.words["rare"], status="5xx")),
        ("q absent word", lambda: page(q="zzzzqqqq")),
        ("deep cursor (random point)", deep),
        ("limit=500", lambda: page(limit="500")),
    ]
    results = []
    for label, make in cases:
        for _ in range(3):  # warm up
            make()()
        samples = []
        count = 0
        for _ in range(repeat):
            fn = make()
            t0 = time.perf_counter()
            out = fn()
            samples.append((time.perf_counter() - t0) * 1000)
            count = len(json.loads(out)["items"])
        p50, p95, p99 = _percentiles(samples)
        results.append((label, p50, p95, p99, count))
        print(f"  {label}: p95 {p95:.1f} ms", file=sys.stderr)
    conn.close()
    return results


# ---------------------------------------------------------------- writer cost


def writer_cost(captures: int, where: str | None = None) -> list[tuple[str, float, float, float]]:
    """What the writer thread does per capture, without and with the index listener.

    The writer's work items run in this thread, batch by batch, exactly as
    ``WriterThread._run`` runs them (``_flush`` then tells the listeners), so the
    numbers are the writer thread's own cost, free of GIL hand-overs. Each capture: a
    2 KiB JSON request and a 60-event SSE response arriving over several reactor turns
    (a batch each), 4 files, 4 metadata documents.
    Returns (label, captures/s, µs per capture, µs of it in the index listener).
    """
    from twisted.internet.task import Clock

    from logproxy.capture.model import StreamHead
    from logproxy.capture.writer import LocalStore, WriterThread
    from logproxy.index.updater import IndexUpdater

    class Reactor(Clock):
        """Batches are run by hand (``turn``): nothing to schedule, nothing to hop."""

        def callLater(self, delay: float, fn: Any, *args: Any, **kw: Any) -> Any:
            return None

        def callFromThread(self, fn: Any, *args: Any, **kw: Any) -> None:
            pass

    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello world " * 170}]}
    ).encode()
    sse = b"".join(
        b'data: {"choices":[{"delta":{"content":"word%d "}}]}\n\n' % i for i in range(60)
    )
    request_head = StreamHead(
        b"POST http://x/v1/chat/completions HTTP/1.1",
        [(b"Content-Type", b"application/json")],
        None,
        [],
    )
    response_head = StreamHead(
        b"HTTP/1.1 200 OK", [(b"Content-Type", b"text/event-stream")], None, []
    )
    results = []
    for label, with_index in (("without index", False), ("with index", True)):
        tmp = tempfile.mkdtemp(prefix="index-bench-", dir=where)
        spent = [0.0]
        try:
            reactor = Reactor()
            writer = WriterThread(reactor, 1 << 30)  # its thread is not started
            if with_index:
                info = open_index(os.path.join(tmp, ".logproxy-index.sqlite3"))
                # grouped commits, as in a service (the loop runs batches all the time,
                # so no wake-up is needed)
                updater = IndexUpdater(
                    lambda info=info: info, tmp, reactor, wake=lambda delay: None
                )

                class Timed:
                    """The updater, with the time spent in it counted."""

                    def __init__(self, target: Any, spent: list[float]) -> None:
                        self._target, self._spent = target, spent

                    def __getattr__(self, name: str) -> Any:
                        method = getattr(self._target, name)

                        def timed(*args: Any) -> Any:
                            t = time.perf_counter()
                            try:
                                return method(*args)
                            finally:
                                self._spent[0] += time.perf_counter() - t

                        return timed

                writer.listeners.append(Timed(updater, spent))  # type: ignore[arg-type]
            store = LocalStore(
                writer, tmp, frozenset(), 1 << 28, lambda *a: None, lambda *a: None, lambda n: None
            )

            def turn(writer: WriterThread = writer) -> None:
                """One reactor turn's items, run as the writer thread runs a batch."""
                batch, writer._outbox = writer._outbox, []
                for fn, arg, _ in batch:
                    fn(arg)
                writer._flush()

            t0 = time.perf_counter()
            for _ in range(captures):
                cid = str(uuid.uuid4())
                started = time.time()
                exchange = {
                    "id": cid,
                    "route": "mock",
                    "method": "POST",
                    "request_started_at": rfc3339(started),
                    "response_status_code": 200,
                }
                req = store.open_stream(cid, started, "request")
                req.begin(request_head, exchange)
                req.write(body)
                req.end(exchange, None)
                turn()
                resp = store.open_stream(cid, started, "response")
                resp.begin(response_head, exchange)
                for start in range(0, len(sse), 256):
                    resp.write(sse[start : start + 256])
                    if start % 1024 == 0:
                        turn()
                resp.end(exchange, None, {"llm": {"model": "gpt-4o-mini", "output_text": "w"}})
                turn()
            elapsed = time.perf_counter() - t0
            if with_index:
                updater.close()
            rate = captures / elapsed
            results.append((label, rate, elapsed / captures * 1e6, spent[0] / captures * 1e6))
            print(f"  writer {label}: {rate:,.0f} captures/s", file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.index_bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--path", default=os.path.join(tempfile.gettempdir(), "index-bench.sqlite3")
    )
    parser.add_argument("--reuse", action="store_true", help="keep an existing filled index")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--writer", type=int, default=3000, help="captures for the writer test")
    parser.add_argument("--skip-writer", action="store_true")
    parser.add_argument(
        "--writer-dir",
        help="where the writer test writes (default: the temp dir, then /dev/shm)",
    )
    parser.add_argument("--keep", action="store_true", help="do not delete the index file")
    args = parser.parse_args(argv)
    now = 1_790_000_000.0  # fixed, so that --reuse sees the same time range
    if not (args.reuse and os.path.exists(args.path)):
        print(f"filling {args.path} with {args.rows:,} captures ...", file=sys.stderr)
        fill(args.path, args.rows, now)
    rows = connect(args.path, read_only=True).execute("SELECT count(*) FROM captures").fetchone()[0]
    size = sum(
        os.path.getsize(args.path + s) for s in ("", "-wal") if os.path.exists(args.path + s)
    )
    results = measure(args.path, args.repeat, now)
    print(f"\n### Index: list/search latency, {rows:,} captures ({size / 1e9:.2f} GB index)\n")
    print(f"{args.repeat} runs each, warm cache, one thread; p95 target <= 50 ms.\n")
    print("| query (page of 50 unless noted) | p50 ms | p95 ms | p99 ms | items |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, p50, p95, p99, count in results:
        print(f"| {label} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {count} |")
    if not args.skip_writer:
        places = [args.writer_dir] if args.writer_dir else [tempfile.gettempdir()]
        if not args.writer_dir and os.path.isdir("/dev/shm"):
            places.append("/dev/shm")  # memory: the disk's noise out of the comparison
        print(
            f"\n### Capture writer thread with and without the index ({args.writer:,} captures)\n"
        )
        print("| files in | writer | captures/s | µs per capture | µs of it in the index |")
        print("| --- | --- | ---: | ---: | ---: |")
        for place in places:
            cost = writer_cost(args.writer, place)
            for label, rate, micros, listener in cost:
                shown = f"{listener:,.0f}" if listener else "-"
                print(f"| {place} | {label} | {rate:,.0f} | {micros:,.0f} | {shown} |")
    if not args.keep and not args.reuse:
        with contextlib.suppress(OSError):
            remove(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
