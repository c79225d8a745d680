"""The ``logproxy`` command line (SPEC §9): ls, show, export, replay, tail, reindex.

Capture directories are written with the project's own layout helpers
(``logproxy.capture.model``), so the files match what the proxy writes; the CLI runs
in-process through ``main(argv)``, and through the installed console script where the
process boundary matters (``tail`` and Ctrl-C).
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from logproxy.capture.model import (
    CaptureName,
    StreamHead,
    header_block,
    rfc3339,
    stream_document,
)
from logproxy.cli import main
from logproxy.cli.export import Progress
from logproxy.cli.store import Store
from logproxy.cli.tail import Follower, follow
from logproxy.mockllm import expected_text

FIXTURES = Path(__file__).parent / "fixtures" / "cli"
ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """Subprocesses import this checkout, wherever the installed package points."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


REDACT = frozenset({b"authorization", b"x-api-key", b"api-key", b"cookie"})
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# --------------------------------------------------------------------------
# Writing captures as the proxy does
# --------------------------------------------------------------------------


def _extra() -> dict[str, Any]:
    return {
        "truncated": False,
        "bytes_lost": 0,
        "decode_error": None,
        "capture_error": None,
        "writer_pid": 1,
    }


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Atomically, as the proxy replaces metadata documents."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)


def write_capture(
    log_dir: Path,
    *,
    started: float,
    capture_id: str | None = None,
    method: str = "POST",
    route: str | None = "openai",
    source_url: str = "http://localhost:5601/openai/chat/completions",
    target_url: str | None = "https://api.openai.com/v1/chat/completions",
    request_headers: list[tuple[bytes, bytes]] | None = None,
    request_body: bytes = b"",
    status: int | None = 200,
    reason: str = "OK",
    response_headers: list[tuple[bytes, bytes]] | None = None,
    response_body: bytes = b"",
    response_encoding: str | None = None,
    header_ms: float | None = 120.0,
    duration: float = 0.5,
    response: bool = True,
    finished: bool = True,
    error: str | None = None,
    llm: dict[str, Any] | None = None,
) -> str:
    """The four files of one capture (the response ones unless ``response`` is false)."""
    cid = capture_id or str(uuid.uuid4())
    req_name = CaptureName(cid, started, "request")
    folder = log_dir / req_name.folder
    folder.mkdir(parents=True, exist_ok=True)
    exchange: dict[str, Any] = {
        "id": cid,
        "route": route,
        "pattern": f"/{route}/" if route else None,
        "method": method,
        "source_url": source_url,
        "target_url": target_url,
        "request_started_at": rfc3339(started),
        "client_address": "127.0.0.1:50000",
        "request_content_encoding": None,
    }
    if request_headers is None:
        request_headers = [(b"Content-Type", b"application/json")]
    if request_body:
        request_headers = [*request_headers, (b"Content-Length", str(len(request_body)).encode())]
    request_line = f"{method} {target_url or source_url} HTTP/1.1".encode()
    data = (
        header_block(
            request_line, request_headers, REDACT, [(b"X-Proxy-Path", source_url.encode())]
        )
        + request_body
    )
    (folder / req_name.bin_name).write_bytes(data)
    doc = stream_document(
        "request",
        req_name,
        exchange,
        started_at=started,
        completed_at=started + 0.001,
        bytes_written=len(data),
        completed=True,
        error=None,
        extra=_extra(),
    )
    _write_json(folder / req_name.metadata_name, doc)
    if not response:
        return cid
    resp_name = CaptureName(cid, started, "response")
    exchange = dict(exchange)
    if status is not None:
        exchange.update(
            upstream_response_at=rfc3339(started + (header_ms or 0) / 1000),
            upstream_header_duration_ms=header_ms,
            response_status=f"{status} {reason}",
            response_status_code=status,
            response_content_encoding=response_encoding,
        )
    if response_headers is None:
        response_headers = [(b"Content-Type", b"application/json")]
    if status is None:
        data = b""
    else:
        head = StreamHead(f"HTTP/1.1 {status} {reason}".encode(), response_headers, None, [])
        data = head.block(REDACT, decoded=response_encoding is not None, decode_error=None)
        data += response_body
    (folder / resp_name.bin_name).write_bytes(data)
    extra = _extra()
    if llm is not None:
        extra["llm"] = llm
    doc = stream_document(
        "response",
        resp_name,
        exchange,
        started_at=started + (header_ms or 0) / 1000,
        completed_at=started + duration if finished or error else None,
        bytes_written=len(data),
        completed=finished and error is None,
        error=error,
        extra=extra,
    )
    _write_json(folder / resp_name.metadata_name, doc)
    return cid


def sse(*events: Any, done: bool = True) -> bytes:
    out = b""
    for event in events:
        if isinstance(event, tuple):
            out += f"event: {event[0]}\ndata: {json.dumps(event[1])}\n\n".encode()
        else:
            out += f"data: {json.dumps(event)}\n\n".encode()
    return out + (b"data: [DONE]\n\n" if done else b"")


def chat_chunks(text_parts: list[str], usage: dict[str, int] | None = None) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024"}
    events: list[Any] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    ]
    events += [
        {**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
        for p in text_parts
    ]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage is not None:
        events.append({**base, "choices": [], "usage": usage})
    return sse(*events)


SSE_HEADERS = [(b"Content-Type", b"text/event-stream; charset=utf-8")]
OPENAI_KEY = b"Bearer sk-proj-abcdefghijklmnopqrstuvwxyz1234"


def chat_request(model: str, content: str, stream: bool = False, **extra: Any) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


@dataclass
class Sample:
    log_dir: Path
    ids: dict[str, str]
    now: float


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    """A capture directory with one of each shape the proxy writes."""
    log_dir = tmp_path / "logs"
    now = time.time()
    ids: dict[str, str] = {}
    # Two days ago: only --since/--until tell it from the others.
    ids["old"] = write_capture(
        log_dir,
        started=now - 2 * 86400,
        request_body=chat_request("gpt-3.5-turbo", "old times"),
        response_body=json.dumps(
            {
                "object": "chat.completion",
                "model": "gpt-3.5-turbo-0125",
                "choices": [{"message": {"role": "assistant", "content": "long ago"}}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
            }
        ).encode(),
    )
    # A streamed OpenAI chat without an llm block: model and usage come from the bodies.
    ids["stream"] = write_capture(
        log_dir,
        started=now - 600,
        request_headers=[(b"Content-Type", b"application/json"), (b"Authorization", OPENAI_KEY)],
        request_body=chat_request(
            "gpt-4o-mini", "say hello", stream=True, stream_options={"include_usage": True}
        ),
        response_headers=SSE_HEADERS,
        response_body=chat_chunks(
            ["Hello", ", world"], {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
        ),
        duration=1.25,
    )
    # A gzip response (stored decoded) with an llm block.
    ids["gzip"] = write_capture(
        log_dir,
        started=now - 500,
        request_body=chat_request("gpt-4o", "weather?"),
        response_headers=[(b"Content-Type", b"application/json"), (b"Content-Encoding", b"gzip")],
        response_encoding="gzip",
        response_body=json.dumps(
            {
                "object": "chat.completion",
                "model": "gpt-4o-2024-08-06",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Sunny."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
            }
        ).encode(),
        llm={
            "api": "openai.chat",
            "model": "gpt-4o",
            "response_model": "gpt-4o-2024-08-06",
            "stream": False,
            "finish_reason": "stop",
            "usage": {
                "input_tokens": 20,
                "output_tokens": 2,
                "total_tokens": 22,
                "cached_input_tokens": 0,
                "cache_write_input_tokens": None,
                "reasoning_tokens": None,
                "cost": None,
            },
            "ttfb_ms": 180.2,
            "ttft_ms": 181.0,
            "output_text": "Sunny.",
            "tool_calls": [],
            "partial": False,
        },
    )
    # An unmatched request: the proxy's own 404.
    ids["notfound"] = write_capture(
        log_dir,
        started=now - 400,
        method="GET",
        route=None,
        source_url="http://localhost:5601/nowhere?x=1",
        target_url=None,
        request_headers=[(b"Accept", b"*/*")],
        status=404,
        reason="Not Found",
        response_headers=[(b"Content-Type", b"text/plain; charset=utf-8")],
        response_body=b"No route found for /nowhere",
        header_ms=None,
        duration=0.002,
    )
    # A streamed Anthropic call with a tool call; the key was redacted.
    ids["anthropic"] = write_capture(
        log_dir,
        started=now - 300,
        route="anthropic",
        source_url="http://localhost:5601/anthropic/v1/messages",
        target_url="https://api.anthropic.com/v1/messages",
        request_headers=[
            (b"Content-Type", b"application/json"),
            (b"X-Api-Key", b"sk-ant-api03-abcdefghijklmnopqrstuvwxyz"),
            (b"Anthropic-Version", b"2023-06-01"),
        ],
        request_body=json.dumps(
            {
                "model": "claude-sonnet-4",
                "max_tokens": 100,
                "stream": True,
                "system": "Be brief.",
                "tools": [
                    {
                        "name": "get_weather",
                        "description": "Weather",
                        "input_schema": {"type": "object"},
                    }
                ],
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
            }
        ).encode(),
        response_headers=SSE_HEADERS,
        response_body=sse(
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "model": "claude-sonnet-4-20250514",
                        "usage": {
                            "input_tokens": 10,
                            "cache_read_input_tokens": 5,
                            "cache_creation_input_tokens": 0,
                            "output_tokens": 1,
                        },
                    },
                },
            ),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Checking."},
                },
            ),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather"},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'},
                },
            ),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use"},
                    "usage": {"output_tokens": 7},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
            done=False,
        ),
    )
    # Upstream died mid-stream.
    ids["broken"] = write_capture(
        log_dir,
        started=now - 200,
        request_body=chat_request("gpt-4o-mini", "cut me off", stream=True),
        response_headers=SSE_HEADERS,
        response_body=chat_chunks(["partial"])[:150],
        finished=False,
        error="upstream connection lost: Connection to the other side was lost",
    )
    # An embeddings call: not a chat call.
    ids["embed"] = write_capture(
        log_dir,
        started=now - 150,
        source_url="http://localhost:5601/openai/embeddings",
        target_url="https://api.openai.com/v1/embeddings",
        request_body=json.dumps({"model": "text-embedding-3-small", "input": "hi"}).encode(),
        response_body=json.dumps(
            {
                "object": "list",
                "data": [{"embedding": [0.1]}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        ).encode(),
    )
    # Still streaming: the response document says completed false, no completed_at.
    ids["inflight"] = write_capture(
        log_dir,
        started=now - 5,
        request_body=chat_request("gpt-4o-mini", "take your time", stream=True),
        response_headers=SSE_HEADERS,
        response_body=b"".join(chat_chunks(["so far"]).partition(b"so far")[:2]) + b'"}}]}\n\n',
        finished=False,
    )
    return Sample(log_dir, ids, now)


def generate_captures(log_dir: Path, count: int, end: float, spacing: float = 10.0) -> list[str]:
    """``count`` captures, one every ``spacing`` seconds up to ``end``, of four kinds
    (streamed chat, chat with an llm block, Anthropic JSON, a 404). Used by a test at 500
    and, for the numbers in the README, at 10,000."""
    ids = []
    for i in range(count):
        started = end - (count - 1 - i) * spacing
        kind = i % 4
        if kind == 0:
            cid = write_capture(
                log_dir,
                started=started,
                request_body=chat_request("gpt-4o-mini", f"question {i}", stream=True),
                response_headers=SSE_HEADERS,
                response_body=chat_chunks(
                    ["answer ", str(i)],
                    {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                ),
            )
        elif kind == 1:
            cid = write_capture(
                log_dir,
                started=started,
                request_body=chat_request("gpt-4o", f"question {i}"),
                response_body=json.dumps(
                    {
                        "object": "chat.completion",
                        "model": "gpt-4o",
                        "choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}],
                    }
                ).encode(),
                llm={
                    "api": "openai.chat",
                    "model": "gpt-4o",
                    "stream": False,
                    "usage": {"input_tokens": 5, "output_tokens": 2},
                    "output_text": f"answer {i}",
                    "tool_calls": [],
                    "partial": False,
                },
            )
        elif kind == 2:
            cid = write_capture(
                log_dir,
                started=started,
                route="anthropic",
                source_url="http://localhost:5601/anthropic/v1/messages",
                target_url="https://api.anthropic.com/v1/messages",
                request_body=json.dumps(
                    {
                        "model": "claude-haiku",
                        "max_tokens": 10,
                        "messages": [{"role": "user", "content": f"question {i}"}],
                    }
                ).encode(),
                response_body=json.dumps(
                    {
                        "type": "message",
                        "model": "claude-haiku",
                        "content": [{"type": "text", "text": f"answer {i}"}],
                        "usage": {"input_tokens": 5, "output_tokens": 2},
                    }
                ).encode(),
            )
        else:
            cid = write_capture(
                log_dir,
                started=started,
                method="GET",
                route=None,
                source_url="http://localhost:5601/missing",
                target_url=None,
                status=404,
                reason="Not Found",
                response_body=b"No route found for /missing",
                header_ms=None,
            )
        ids.append(cid)
    return ids


# --------------------------------------------------------------------------
# Running the CLI
# --------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def run(*argv: str) -> Result:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def one_line_error(result: Result) -> str:
    assert result.code != 0
    assert result.out == ""
    assert result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    return result.err


# --------------------------------------------------------------------------
# ls
# --------------------------------------------------------------------------


def test_ls_table_newest_first_with_markers(sample: Sample, cli: Callable[..., Result]) -> None:
    result = cli("ls", "--log-dir", str(sample.log_dir))
    assert result.code == 0
    header, *rows = result.lines
    assert header.split() == [
        "TIME",
        "ID",
        "ROUTE",
        "METHOD",
        "PATH",
        "STATUS",
        "MODEL",
        "IN",
        "OUT",
        "DURATION",
    ]
    order = ["inflight", "embed", "broken", "anthropic", "notfound", "gzip", "stream", "old"]
    assert [row[22:30] for row in rows] == [sample.ids[k][:8] for k in order]
    by_id = {row[22:30]: row for row in rows}
    inflight = by_id[sample.ids["inflight"][:8]]
    assert inflight.startswith("~") and inflight.split()[-1] == "-"
    assert by_id[sample.ids["broken"][:8]].startswith("!")
    stream = by_id[sample.ids["stream"][:8]]
    assert stream.startswith(" ")
    # model sniffed from the request body, tokens from the SSE usage chunk
    assert stream.split()[-4:] == ["gpt-4o-mini", "9", "3", "1.25s"]
    assert "/openai/chat/completions" in stream
    gzip_row = by_id[sample.ids["gzip"][:8]].split()
    assert gzip_row[-4:-1] == ["gpt-4o", "20", "2"]  # from the llm block
    notfound = by_id[sample.ids["notfound"][:8]].split()
    assert notfound[3:7] == ["-", "GET", "/nowhere?x=1", "404"]
    anthropic = by_id[sample.ids["anthropic"][:8]].split()
    # Anthropic input counts cache reads too (SPEC §8)
    assert anthropic[-4:-1] == ["claude-sonnet-4", "15", "7"]


def test_ls_filters(sample: Sample, cli: Callable[..., Result]) -> None:
    def ids(*args: str) -> list[str]:
        result = cli("ls", "--log-dir", str(sample.log_dir), "--json", *args)
        assert result.code == 0, result.err
        return [doc["metadata"]["id"] for doc in result.json_lines]

    key = {v: k for k, v in sample.ids.items()}

    def kinds(*args: str) -> list[str]:
        return [key[i] for i in ids(*args)]

    assert kinds("--route", "anthropic") == ["anthropic"]
    assert kinds("--route", "-") == ["notfound"]
    assert kinds("--route", "open*", "--limit", "2") == ["inflight", "embed"]
    assert kinds("--status", "404") == ["notfound"]
    assert kinds("--status", "4xx,5xx") == ["notfound"]
    assert kinds("--status", "error") == ["broken"]
    assert kinds("--status", "inflight") == ["inflight"]
    assert kinds("--model", "gpt-4o") == ["gzip"]
    assert kinds("--model", "gpt-4o-2024-08-06") == ["gzip"]  # the answering model
    assert kinds("--model", "GPT-4O-MINI") == ["inflight", "broken", "stream"]
    assert kinds("--model", "claude*") == ["anthropic"]
    assert "old" not in kinds("--since", "1h")
    assert len(kinds("--since", "1h")) == 7
    assert kinds("--until", "1d") == ["old"]
    since = rfc3339(sample.now - 450)
    until = rfc3339(sample.now - 250)
    assert kinds("--since", since, "--until", until) == ["anthropic", "notfound"]
    day = time.strftime("%Y-%m-%d", time.gmtime(sample.now - 2 * 86400))
    assert kinds("--until", day) == []
    assert kinds("--since", day, "--limit", "0")[-1] == "old"


def test_ls_json_is_response_metadata(sample: Sample, cli: Callable[..., Result]) -> None:
    result = cli("ls", "--log-dir", str(sample.log_dir), "--json", "--limit", "0")
    docs = result.json_lines
    assert len(docs) == 8
    starts = [doc["metadata"]["request_started_at"] for doc in docs]
    assert starts == sorted(starts, reverse=True)
    for doc in docs:
        assert doc["stream_type"] == "response"
        assert {"method", "source_url", "route", "request_started_at"} <= set(doc["metadata"])
    gzip_doc = next(d for d in docs if d["metadata"]["id"] == sample.ids["gzip"])
    assert gzip_doc["llm"]["usage"]["input_tokens"] == 20
    inflight = next(d for d in docs if d["metadata"]["id"] == sample.ids["inflight"])
    assert inflight["completed"] is False and inflight["completed_at"] is None


def test_ls_limit(sample: Sample, cli: Callable[..., Result]) -> None:
    result = cli("ls", "--log-dir", str(sample.log_dir), "--limit", "3")
    assert len(result.lines) == 4
    assert "--limit" in result.err  # more exist
    assert cli("ls", "--log-dir", str(sample.log_dir), "--limit", "8").err == ""
    empty = cli("ls", "--log-dir", str(sample.log_dir), "--route", "nope")
    assert empty.code == 0 and empty.out == "" and "no captures" in empty.err


def test_ls_request_only_capture_is_in_flight(tmp_path: Path, cli: Callable[..., Result]) -> None:
    """Before upstream answers only the request files exist."""
    cid = write_capture(
        tmp_path, started=time.time(), request_body=chat_request("m", "x"), response=False
    )
    result = cli("ls", "--log-dir", str(tmp_path))
    assert result.lines[1].startswith("~") and cid[:8] in result.lines[1]
    (doc,) = cli("ls", "--log-dir", str(tmp_path), "--json").json_lines
    assert doc["stream_type"] == "request"


def test_model_of_large_request_bodies(tmp_path: Path, cli: Callable[..., Result]) -> None:
    """Big bodies are searched at both ends: SDKs put ``model`` before or after messages."""
    history = [{"role": "user", "content": "x" * 1000 + ' "model": "nested"'}] * 400
    now = time.time()
    late = write_capture(
        tmp_path,
        started=now - 2,
        request_body=json.dumps({"messages": history, "model": "model-last"}).encode(),
    )
    early = write_capture(
        tmp_path,
        started=now - 1,
        request_body=json.dumps({"model": "model-first", "messages": history}).encode(),
    )
    docs = cli("ls", "--log-dir", str(tmp_path), "--model", "model-*", "--json").json_lines
    assert [d["metadata"]["id"] for d in docs] == [early, late]
    table = cli("ls", "--log-dir", str(tmp_path)).out
    assert "model-first" in table and "model-last" in table


def test_log_dir_from_config(
    sample: Sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Result]
) -> None:
    monkeypatch.delenv("LOGPROXY_LOG_DIR", raising=False)
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    config = conf_dir / "proxy.yaml"
    config.write_text(f"logging:\n  log_dir: {os.path.relpath(sample.log_dir, conf_dir)}\n")
    assert len(cli("ls", "--config", str(config)).lines) == 9
    # options may also come before the command
    assert len(cli("--config", str(config), "ls").lines) == 9
    # the default ./config.yaml
    monkeypatch.chdir(conf_dir)
    shutil.copy(config, conf_dir / "config.yaml")
    assert len(cli("ls").lines) == 9
    # no config.yaml: ./logs, or $LOGPROXY_LOG_DIR
    os.unlink(conf_dir / "config.yaml")
    (conf_dir / "logs").symlink_to(sample.log_dir)
    assert len(cli("ls").lines) == 9
    monkeypatch.setenv("LOGPROXY_LOG_DIR", str(tmp_path / "elsewhere"))
    assert "elsewhere" in one_line_error(cli("ls"))
    monkeypatch.delenv("LOGPROXY_LOG_DIR")
    # --log-dir beats the config
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("ls", "--config", str(config), "--log-dir", str(empty)).out == ""


# --------------------------------------------------------------------------
# Errors: one line, non-zero
# --------------------------------------------------------------------------


def test_errors_are_one_line(
    sample: Sample, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = str(sample.log_dir)
    assert "no capture with id" in one_line_error(cli("show", "0000", "--log-dir", d))
    assert "invalid capture id" in one_line_error(cli("show", "xyz!", "--log-dir", d))
    missing = str(tmp_path / "missing")
    assert "cannot read log directory" in one_line_error(cli("ls", "--log-dir", missing))
    assert "--since" in one_line_error(cli("ls", "--log-dir", d, "--since", "yesterday"))
    assert "--until" in one_line_error(cli("export", "--log-dir", d, "--until", "1x"))
    assert "--status" in one_line_error(cli("ls", "--log-dir", d, "--status", "teapot"))
    assert "invalid choice" in one_line_error(cli("export", "--log-dir", d, "--format", "csv"))
    assert "invalid int" in one_line_error(cli("ls", "--log-dir", d, "--limit", "many"))
    assert "required" in one_line_error(cli())
    assert "invalid choice" in one_line_error(cli("frobnicate"))
    assert "cannot read log directory" in one_line_error(cli("reindex", "--log-dir", missing))
    bad = tmp_path / "bad.yaml"
    bad.write_text("logging:\n  log_dri: x\n")
    assert "log_dri" in one_line_error(cli("ls", "--config", str(bad)))
    assert "cannot read" in one_line_error(cli("ls", "--config", str(tmp_path / "none.yaml")))
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0)
        assert "cannot read" in one_line_error(cli("ls", "--log-dir", str(locked)))


def test_ambiguous_and_unique_prefixes(tmp_path: Path, cli: Callable[..., Result]) -> None:
    now = time.time()
    a = write_capture(tmp_path, started=now - 1, capture_id="abcd1111-0000-4000-8000-000000000001")
    b = write_capture(tmp_path, started=now, capture_id="abcd2222-0000-4000-8000-000000000002")
    err = one_line_error(cli("show", "abcd", "--log-dir", str(tmp_path)))
    assert "ambiguous" in err and "abcd1111" in err and "abcd2222" in err
    assert cli("show", "abcd1", "--log-dir", str(tmp_path)).lines[0] == f"capture {a}"
    assert cli("show", "ABCD2", "--log-dir", str(tmp_path)).lines[0] == f"capture {b}"
    assert cli("show", b, "--log-dir", str(tmp_path)).code == 0


def test_help(cli: Callable[..., Result]) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in ("ls", "show", "export", "replay", "tail", "reindex"):
        assert command in result.out
        sub = cli(command, "--help")
        assert sub.code == 0 and sub.out.startswith(f"usage: logproxy {command}")
        assert "--log-dir" in sub.out


# --------------------------------------------------------------------------
# show
# --------------------------------------------------------------------------


def test_show_streamed_chat(sample: Sample, cli: Callable[..., Result]) -> None:
    cid = sample.ids["stream"]
    result = cli("show", cid[:6], "--log-dir", str(sample.log_dir))
    assert result.code == 0
    out = result.out
    assert out.startswith(f"capture {cid}\n")
    assert "route         openai (/openai/)" in out
    assert "status        200 OK" in out
    assert "state         completed" in out
    assert "duration      1.25s (upstream headers after 120.0ms)" in out
    # headers as stored: redacted
    assert "Authorization: <redacted>...1234" in out
    assert "sk-proj" not in out
    # the request body pretty-printed
    assert '\n  "model": "gpt-4o-mini",\n' in out
    # the SSE events, numbered, and the reassembled text
    assert "(6 server-sent events)" in out
    assert "[6] [DONE]" in out
    assert "=== Assistant ===\nHello, world\n" in out
    assert "tokens in=9 out=3" in out


def test_show_llm_block_gzip_and_tool_calls(sample: Sample, cli: Callable[..., Result]) -> None:
    d = str(sample.log_dir)
    out = cli("show", sample.ids["gzip"][:8], "--log-dir", d).out
    assert "gzip (stored decoded)" in out
    assert "Content-Encoding" not in out  # the proxy leaves it out of the stored header block
    assert "openai.chat, gpt-4o -> gpt-4o-2024-08-06, finish=stop, tokens in=20 out=2" in out
    assert "ttft=181.0ms" in out
    assert "=== Assistant ===\nSunny.\n" in out
    out = cli("show", sample.ids["anthropic"][:8], "--log-dir", d).out
    assert "X-Api-Key: <redacted>...wxyz" in out
    assert "[1] message_start " in out
    assert "=== Assistant ===\nChecking.\n" in out
    assert 'tool call get_weather({"city": "Paris"}) id=toolu_1' in out
    assert "tokens in=15 out=7 cached=5" in out


def test_show_404_inflight_and_broken(sample: Sample, cli: Callable[..., Result]) -> None:
    d = str(sample.log_dir)
    out = cli("show", sample.ids["notfound"], "--log-dir", d).out
    assert "route         - (no route matched)" in out
    assert "GET http://localhost:5601/nowhere?x=1 HTTP/1.1" in out
    assert "HTTP/1.1 404 Not Found" in out
    assert "No route found for /nowhere" in out
    out = cli("show", sample.ids["inflight"], "--log-dir", d).out
    assert "state         in flight" in out
    assert "=== Assistant (partial) ===\nso far" in out
    out = cli("show", sample.ids["broken"], "--log-dir", d).out
    assert "state         error: upstream connection lost" in out


def test_show_escapes_control_characters(tmp_path: Path, cli: Callable[..., Result]) -> None:
    cid = write_capture(
        tmp_path,
        started=time.time(),
        response_headers=[(b"Content-Type", b"text/plain")],
        response_body=b"evil \x1b[31mred\x1b[0m text\n",
    )
    out = cli("show", cid, "--log-dir", str(tmp_path)).out
    assert "\x1b" not in out and "\\x1b[31mred" in out


def test_show_json(sample: Sample, cli: Callable[..., Result]) -> None:
    result = cli("show", sample.ids["stream"], "--json", "--log-dir", str(sample.log_dir))
    doc = json.loads(result.out)
    assert doc["id"] == sample.ids["stream"]
    assert doc["request"]["stream_type"] == "request"
    assert doc["response"]["stream_type"] == "response"
    assert doc["request_line"].startswith("POST https://api.openai.com/v1/chat/completions")
    assert ["Authorization", "<redacted>...1234"] in doc["request_headers"]
    assert json.loads(doc["request_body"])["model"] == "gpt-4o-mini"
    assert doc["response_body"].startswith("data: {")
    assert doc["response_body_encoding"] == "utf-8"
    binary = write_capture(
        sample.log_dir,
        started=time.time(),
        response_headers=[(b"Content-Type", b"application/octet-stream")],
        response_body=b"\xff\xfe\x00binary",
    )
    doc = json.loads(cli("show", binary, "--json", "--log-dir", str(sample.log_dir)).out)
    assert doc["response_body_encoding"] == "base64"
    text = cli("show", binary, "--log-dir", str(sample.log_dir)).out
    assert "9 bytes of binary data, application/octet-stream" in text


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------


def test_export_jsonl(sample: Sample, cli: Callable[..., Result]) -> None:
    result = cli("export", "--log-dir", str(sample.log_dir))
    assert result.code == 0
    assert result.err == "export: 8 records to stdout\n"
    records = result.json_lines
    assert records[0]["id"] == sample.ids["old"]  # oldest first
    assert len(records) == 8
    keys = {
        "id",
        "timestamp",
        "route",
        "method",
        "endpoint",
        "model",
        "request_body",
        "status_code",
        "response_body",
        "stream",
        "duration_ms",
        "error",
        "usage",
    }
    for record in records:
        assert keys <= set(record)
    by = {r["id"]: r for r in records}
    stream = by[sample.ids["stream"]]
    assert stream["endpoint"] == "/v1/chat/completions"
    assert stream["model"] == "gpt-4o-mini"
    assert stream["stream"] is True
    assert stream["request_body"]["messages"][0]["content"] == "say hello"
    assert isinstance(stream["response_body"], str) and "data: [DONE]" in stream["response_body"]
    assert stream["output_text"] == "Hello, world"
    assert stream["usage"]["input_tokens"] == 9 and stream["usage"]["total_tokens"] == 12
    assert stream["duration_ms"] == pytest.approx(1250, abs=1)
    assert stream["timestamp"].endswith("Z")
    gz = by[sample.ids["gzip"]]
    assert gz["response_body"]["choices"][0]["message"]["content"] == "Sunny."
    assert gz["stream"] is False and gz["usage"]["output_tokens"] == 2
    nf = by[sample.ids["notfound"]]
    assert nf["route"] is None and nf["status_code"] == 404 and nf["endpoint"] == "/nowhere"
    assert nf["request_body"] is None and nf["response_body"] == "No route found for /nowhere"
    broken = by[sample.ids["broken"]]
    assert broken["error"].startswith("upstream connection lost")
    assert by[sample.ids["inflight"]]["duration_ms"] is None


def test_export_filters_and_output_file(
    sample: Sample, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    target = tmp_path / "out" / "calls.jsonl"
    target.parent.mkdir()
    d = str(sample.log_dir)
    result = cli("export", "--log-dir", d, "--since", "1h", "--route", "openai", "-o", str(target))
    assert result.code == 0 and result.out == ""
    assert result.err == f"export: 5 records to {target}\n"
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert {r["route"] for r in records} == {"openai"}
    assert sample.ids["old"] not in {r["id"] for r in records}
    assert os.listdir(target.parent) == ["calls.jsonl"]  # no temporary left behind
    quiet = cli("export", "--log-dir", d, "--until", "1d", "-q")
    assert quiet.err == "" and len(quiet.lines) == 1
    err = one_line_error(cli("export", "--log-dir", d, "-o", str(tmp_path / "no" / "x")))
    assert "cannot write" in err


def test_export_progress(
    sample: Sample, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Progress, "EVERY", 3)
    result = cli("export", "--log-dir", str(sample.log_dir), "--format", "har")
    assert result.err.splitlines() == [
        "export: 3/8 captures",
        "export: 6/8 captures",
        "export: 8 records to stdout",
    ]
    json.loads(result.out)  # stdout is only the data

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    progress = Progress(tty, 200, quiet=False)
    for n in range(1, 201):
        progress.step(n)
    progress.finish(200, 0, "x")
    assert "\rexport:  50% (100/200)" in tty.getvalue()
    assert tty.getvalue().endswith("export: 200 records to x\n")


HAR_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "log": {"version": str, "creator": dict, "entries": list},
    "creator": {"name": str, "version": str},
    "entry": {
        "startedDateTime": str,
        "time": (int, float),
        "request": dict,
        "response": dict,
        "cache": dict,
        "timings": dict,
    },
    "request": {
        "method": str,
        "url": str,
        "httpVersion": str,
        "cookies": list,
        "headers": list,
        "queryString": list,
        "headersSize": int,
        "bodySize": int,
    },
    "response": {
        "status": int,
        "statusText": str,
        "httpVersion": str,
        "cookies": list,
        "headers": list,
        "content": dict,
        "redirectURL": str,
        "headersSize": int,
        "bodySize": int,
    },
    "content": {"size": int, "mimeType": str},
    "timings": {"send": (int, float), "wait": (int, float), "receive": (int, float)},
}


def _has(obj: dict[str, Any], part: str) -> None:
    for key, kind in HAR_REQUIRED[part].items():
        assert key in obj, f"{part}.{key} missing"
        assert isinstance(obj[key], kind) and not isinstance(obj[key], bool), f"{part}.{key}"


def test_export_har(sample: Sample, cli: Callable[..., Result]) -> None:
    result = cli("export", "--format", "har", "--log-dir", str(sample.log_dir))
    har = json.loads(result.out)
    import jsonschema

    schema = json.loads((FIXTURES / "har-1.2.schema.json").read_text())
    jsonschema.validate(har, schema, format_checker=jsonschema.FormatChecker())
    _has(har["log"], "log")
    assert har["log"]["version"] == "1.2"
    _has(har["log"]["creator"], "creator")
    entries = har["log"]["entries"]
    assert len(entries) == 8
    for entry in entries:
        _has(entry, "entry")
        _has(entry["request"], "request")
        _has(entry["response"], "response")
        _has(entry["response"]["content"], "content")
        _has(entry["timings"], "timings")
        for header in entry["request"]["headers"] + entry["response"]["headers"]:
            assert set(header) == {"name", "value"}
        timings = entry["timings"]
        total = sum(v for k, v in timings.items() if k != "comment" and v != -1)
        assert entry["time"] == pytest.approx(total)
    by = {e["_logproxy"]["id"]: e for e in entries}
    stream = by[sample.ids["stream"]]
    assert stream["request"]["url"] == "https://api.openai.com/v1/chat/completions"
    assert stream["request"]["postData"]["mimeType"] == "application/json"
    assert json.loads(stream["request"]["postData"]["text"])["model"] == "gpt-4o-mini"
    assert stream["response"]["content"]["mimeType"].startswith("text/event-stream")
    assert "Hello" in stream["response"]["content"]["text"]
    assert stream["timings"]["wait"] == 120.0
    assert stream["startedDateTime"].endswith("Z")
    nf = by[sample.ids["notfound"]]
    assert nf["request"]["queryString"] == [{"name": "x", "value": "1"}]
    assert nf["response"]["status"] == 404 and nf["response"]["statusText"] == "Not Found"
    assert by[sample.ids["gzip"]]["response"]["bodySize"] == -1  # the wire size is unknown
    assert "error" in by[sample.ids["broken"]]["comment"]


def test_export_openai_chat(sample: Sample, cli: Callable[..., Result]) -> None:
    result = cli("export", "--format", "openai-chat", "--log-dir", str(sample.log_dir))
    assert result.code == 0
    records = result.json_lines
    # the 404, embeddings, the broken and the in-flight stream are skipped
    assert result.err == "export: 4 records to stdout, 4 skipped\n"
    for record in records:
        messages = record["messages"]
        assert messages[-1]["role"] == "assistant"
        assert all(set(m) <= {"role", "content", "tool_calls", "tool_call_id"} for m in messages)
    old, stream, gz, anthropic = records
    assert old["messages"] == [
        {"role": "user", "content": "old times"},
        {"role": "assistant", "content": "long ago"},
    ]
    assert stream["messages"][-1] == {"role": "assistant", "content": "Hello, world"}
    assert gz["messages"][-1] == {"role": "assistant", "content": "Sunny."}
    assert anthropic["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
    ]
    assert anthropic["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object"},
                "description": "Weather",
            },
        }
    ]


def test_export_openai_chat_anthropic_history(tmp_path: Path, cli: Callable[..., Result]) -> None:
    """Tool results become tool messages; content the chat format cannot carry is skipped."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "P"}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}],
        },
    ]
    reply = json.dumps(
        {"type": "message", "content": [{"type": "text", "text": "It is sunny."}]}
    ).encode()
    for content in (messages, [{"role": "user", "content": [{"type": "image"}]}]):
        write_capture(
            tmp_path,
            started=time.time(),
            source_url="http://localhost:5601/anthropic/v1/messages",
            target_url="https://api.anthropic.com/v1/messages",
            request_body=json.dumps(
                {"model": "claude", "max_tokens": 5, "messages": content}
            ).encode(),
            response_body=reply,
        )
    result = cli("export", "--format", "openai-chat", "--log-dir", str(tmp_path))
    (record,) = result.json_lines
    assert "1 skipped" in result.err
    assert record["messages"] == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"c": "P"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ]


# --------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------


@dataclass
class Recorder:
    url: str
    requests: list[dict[str, Any]]
    reply: dict[str, Any]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """An HTTP server on a thread that records what it receives and answers ``reply``."""
    requests: list[dict[str, Any]] = []
    reply: dict[str, Any] = {
        "status": 200,
        "headers": [("Content-Type", "application/json")],
        "body": b"{}",
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": list(self.headers.items()),
                    "body": self.rfile.read(length),
                }
            )
            body = reply["body"]
            self.send_response(reply["status"])
            for name, value in reply["headers"]:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = handle_one

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Recorder(f"http://127.0.0.1:{server.server_address[1]}", requests, reply)
    finally:
        server.shutdown()
        server.server_close()


def _headers(request: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in request["headers"]}


def test_replay_to_recorder_with_credentials_and_diff(
    tmp_path: Path,
    recorder: Recorder,
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LOGPROXY_REPLAY_AUTHORIZATION"):
        monkeypatch.delenv(var, raising=False)
    body = chat_request("gpt-4o", "hi")
    cid = write_capture(
        tmp_path,
        started=time.time(),
        source_url="http://localhost:5601/openai/chat/completions?api-version=2",
        target_url="https://api.openai.com/v1/chat/completions?api-version=2",
        request_headers=[
            (b"Content-Type", b"application/json"),
            (b"Authorization", OPENAI_KEY),
            (b"X-Custom", b"kept"),
            (b"Cookie", b"session=1"),
        ],
        request_body=body,
        response_body=json.dumps({"answer": "old", "n": 1}).encode(),
    )
    recorder.reply["body"] = json.dumps({"answer": "new", "n": 1}).encode()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live")
    result = cli("replay", cid[:8], "--to", recorder.url, "--log-dir", str(tmp_path))
    assert result.code == 0, result.err
    (request,) = recorder.requests
    assert request["method"] == "POST"
    assert request["path"] == "/v1/chat/completions?api-version=2"
    assert request["body"] == body
    headers = _headers(request)
    assert headers["authorization"] == "Bearer sk-live"
    assert headers["x-custom"] == "kept"
    assert headers["host"] == recorder.url.removeprefix("http://")
    assert "x-proxy-path" not in headers and "cookie" not in headers
    assert headers["content-length"] == str(len(body))
    assert result.err == "replay: warning: Cookie was redacted in the capture; sending without it\n"
    out = result.out
    assert f"replay {cid[:8]}: POST {recorder.url}/v1/chat/completions?api-version=2" in out
    assert "HTTP/1.0 200 OK (captured: 200 OK)" in out
    assert f"--- captured {cid[:8]} (json)\n+++ replay (json)\n" in out
    assert '\n-  "answer": "old",\n+  "answer": "new",\n' in out

    # the generic override, and a missing credential: warn, send without it
    monkeypatch.setenv("LOGPROXY_REPLAY_AUTHORIZATION", "Token abc")
    cli("replay", cid, "--to", recorder.url + "/", "--log-dir", str(tmp_path))
    assert _headers(recorder.requests[-1])["authorization"] == "Token abc"
    monkeypatch.delenv("LOGPROXY_REPLAY_AUTHORIZATION")
    monkeypatch.delenv("OPENAI_API_KEY")
    result = cli("replay", cid, "--to", recorder.url, "--log-dir", str(tmp_path))
    assert result.code == 0
    assert "authorization" not in _headers(recorder.requests[-1])
    assert "Authorization was redacted and OPENAI_API_KEY is not set" in result.err


def test_replay_anthropic_key_and_original_destination(
    tmp_path: Path,
    recorder: Recorder,
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LOGPROXY_REPLAY_AUTHORIZATION", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-live")
    cid = write_capture(
        tmp_path,
        started=time.time(),
        method="PUT",
        route="local",
        source_url="http://localhost:5601/local/v1/messages",
        target_url=f"{recorder.url}/v1/messages",
        request_headers=[(b"X-Api-Key", b"sk-ant-secret"), (b"Anthropic-Version", b"2023-06-01")],
        request_body=b"payload",
        response_headers=[(b"Content-Type", b"text/plain")],
        response_body=b"same\n",
    )
    recorder.reply.update(headers=[("Content-Type", "text/plain")], body=b"same\n")
    result = cli("replay", cid, "--log-dir", str(tmp_path))
    assert result.code == 0 and result.err == ""
    (request,) = recorder.requests
    assert request["method"] == "PUT" and request["path"] == "/v1/messages"
    assert _headers(request)["x-api-key"] == "sk-ant-live"
    assert _headers(request)["anthropic-version"] == "2023-06-01"
    assert result.out.endswith("response body identical to the capture\n")
    # --via-proxy: the URL the client used (X-Proxy-Path), its origin replaced by --to
    cli("replay", cid, "--via-proxy", "--to", recorder.url, "--log-dir", str(tmp_path))
    assert recorder.requests[-1]["path"] == "/local/v1/messages"


def test_replay_errors(tmp_path: Path, cli: Callable[..., Result]) -> None:
    cid = write_capture(tmp_path, started=time.time(), target_url="http://127.0.0.1:9/v1/x")
    d = str(tmp_path)
    assert "--to" in one_line_error(cli("replay", cid, "--to", "localhost:80", "--log-dir", d))
    assert "--to" in one_line_error(cli("replay", cid, "--to", "http://h/x", "--log-dir", d))
    result = cli("replay", cid, "--log-dir", d, "--timeout", "5")
    assert result.code == 1 and result.out.startswith(f"replay {cid[:8]}: POST http://127.0.0.1:9")
    assert result.err.count("\n") == 1 and "failed" in result.err


@pytest.fixture(scope="module")
def mock_llm() -> Iterator[str]:
    """The project's mock LLM server as a separate process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "logproxy.mockllm", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found:
                found.append(match.group(1).rstrip("/"))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(10), "the mock did not start"
        yield found[0]
    finally:
        proc.terminate()
        proc.wait(10)


def test_replay_sse_against_mock(
    tmp_path: Path, mock_llm: str, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed reply is compared by its reassembled text (ids and timestamps differ)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("LOGPROXY_REPLAY_AUTHORIZATION", raising=False)
    words = expected_text(3, None).split(" ")
    parts = [words[0]] + [" " + w for w in words[1:]]
    request = chat_request("gpt-4o-mini", "hi", stream=True, mock={"chunks": 3})
    same = write_capture(
        tmp_path,
        started=time.time() - 1,
        target_url="http://127.0.0.1:1/v1/chat/completions",
        request_headers=[(b"Content-Type", b"application/json"), (b"Authorization", OPENAI_KEY)],
        request_body=request,
        response_headers=SSE_HEADERS,
        response_body=chat_chunks(parts),
    )
    result = cli("replay", same, "--to", mock_llm, "--log-dir", str(tmp_path))
    assert result.code == 0, result.err
    assert "HTTP/1.1 200 OK (captured: 200 OK)" in result.out
    assert result.out.endswith("response body identical to the capture\n")
    assert "OPENAI_API_KEY is not set" in result.err  # sent without it; the mock needs none
    other = write_capture(
        tmp_path,
        started=time.time(),
        target_url=f"{mock_llm}/v1/chat/completions",
        request_body=request,
        response_headers=SSE_HEADERS,
        response_body=chat_chunks(["something", " else"]),
    )
    out = cli("replay", other, "--log-dir", str(tmp_path)).out
    assert "(reassembled text)" in out
    assert "\n-something else\n+" + " ".join(words) + "\n" in out


def test_replay_gzip_response_is_decoded(
    tmp_path: Path, recorder: Recorder, cli: Callable[..., Result]
) -> None:
    recorder.reply.update(
        headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        body=gzip.compress(b'{"a": 2}'),
    )
    cid = write_capture(
        tmp_path,
        started=time.time(),
        target_url=f"{recorder.url}/v1/x",
        response_body=b'{"a": 1}',
    )
    out = cli("replay", cid, "--log-dir", str(tmp_path)).out
    assert '\n-  "a": 1\n+  "a": 2\n' in out


# --------------------------------------------------------------------------
# tail
# --------------------------------------------------------------------------


class Lines(io.StringIO):
    def wait_for(self, pattern: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.getvalue().splitlines():
                if re.search(pattern, line):
                    return line
            time.sleep(0.01)
        raise AssertionError(f"no line matching {pattern!r} in {self.getvalue()!r}")


def _finish(log_dir: Path, cid: str, started: float, **kwargs: Any) -> None:
    """Rewrite the capture as finished (the proxy replaces the metadata atomically)."""
    for path in log_dir.glob(f"*/*{cid}_response*"):
        path.unlink()
    write_capture(log_dir, started=started, capture_id=cid, **kwargs)


def test_tail_follows_new_captures_and_day_rollover(tmp_path: Path) -> None:
    now = time.time()
    write_capture(tmp_path, started=now - 60)  # finished before tail starts: not shown
    running = write_capture(tmp_path, started=now - 30, finished=False)
    out = Lines()
    stop = threading.Event()
    thread = threading.Thread(
        target=follow, args=(Store(str(tmp_path)), out), kwargs={"stop": stop, "interval": 0.02}
    )
    thread.start()
    try:
        out.wait_for(rf"\[{running[:8]}\] POST /openai/chat/completions -> https://api")
        started = time.time()
        cid = write_capture(
            tmp_path,
            started=started,
            request_body=chat_request("gpt-4o", "x"),
            response=False,
        )
        line = out.wait_for(rf"\[{cid[:8]}\] POST")
        assert line.endswith("[openai]")
        _finish(
            tmp_path,
            cid,
            started,
            request_body=chat_request("gpt-4o", "x"),
            response_body=json.dumps(
                {"choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": 4}}
            ).encode(),
        )
        end = out.wait_for(rf"\[{cid[:8]}\] 200 OK")
        assert "gpt-4o" in end and "tokens=4/-" in end and "500.0ms" in end
        _finish(tmp_path, running, now - 30, error="client disconnected")
        out.wait_for(rf"\[{running[:8]}\] 200 OK .* error: client disconnected")
        # a capture in a day folder that did not exist when tail started
        tomorrow = now + 86400
        late = write_capture(tmp_path, started=tomorrow, status=404, reason="Not Found")
        out.wait_for(rf"\[{late[:8]}\] POST")
        out.wait_for(rf"\[{late[:8]}\] 404 Not Found")
    finally:
        stop.set()
        thread.join(5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 6, lines


def test_tail_since_replays_history(tmp_path: Path) -> None:
    now = time.time()
    write_capture(tmp_path, started=now - 7200)
    recent = write_capture(tmp_path, started=now - 60)
    out = Lines()
    stop = threading.Event()
    thread = threading.Thread(
        target=follow,
        args=(Store(str(tmp_path)), out, now - 3600),
        kwargs={"stop": stop, "interval": 0.02},
    )
    thread.start()
    try:
        out.wait_for(rf"\[{recent[:8]}\] 200 OK")
    finally:
        stop.set()
        thread.join(5)
    assert len(out.getvalue().splitlines()) == 2


def _line_reader(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_tail_forgets_old_days(tmp_path: Path) -> None:
    """A long-running tail keeps the file names of the last two day folders only."""
    now = time.time()
    ids = [write_capture(tmp_path, started=now - days * 86400) for days in (3, 2, 1, 0)]
    out = Lines()
    follower = Follower(Store(str(tmp_path)), out, since=now - 4 * 86400)
    follower.poll()
    assert len(out.getvalue().splitlines()) == 8
    assert all(f"[{cid[:8]}] 200 OK" in out.getvalue() for cid in ids)
    assert sorted(follower.names) == sorted(os.listdir(tmp_path))[-2:]
    follower.poll()
    assert len(out.getvalue().splitlines()) == 8


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tail_console_script_and_ctrl_c(tmp_path: Path, signum: int) -> None:
    """Through the installed ``logproxy`` script: lines appear live; Ctrl-C (or a
    SIGTERM) ends it with status 0 and nothing on stderr."""
    script = shutil.which("logproxy")
    assert script is not None, "the console script is not installed"
    (tmp_path / "logs").mkdir()
    proc = subprocess.Popen(
        [script, "tail", "--log-dir", str(tmp_path / "logs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        started = time.time()
        # in flight, so it is news whether tail's first scan sees it or a later one does
        cid = write_capture(tmp_path / "logs", started=started, finished=False)
        lines = _line_reader(proc)
        first = lines.get(timeout=10)
        assert f"[{cid[:8]}] POST /openai/chat/completions" in first
        _finish(tmp_path / "logs", cid, started)
        second = lines.get(timeout=10)
        assert f"[{cid[:8]}] 200 OK" in second
        proc.send_signal(signum)
        assert proc.wait(10) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------
# Many captures
# --------------------------------------------------------------------------


def test_many_captures(tmp_path: Path, cli: Callable[..., Result]) -> None:
    """500 captures over ~1.4 hours: listing stops early, exports see all."""
    now = time.time()
    ids = generate_captures(tmp_path, 500, end=now, spacing=10.0)
    d = str(tmp_path)
    began = time.monotonic()
    rows = cli("ls", "--log-dir", d, "--limit", "50").lines[1:]
    assert [row[22:30] for row in rows] == [i[:8] for i in reversed(ids[-50:])]
    since = cli("ls", "--log-dir", d, "--since", "1h", "--limit", "0", "--json").json_lines
    assert len(since) in (360, 361)
    records = cli("export", "--log-dir", d).json_lines
    assert [r["id"] for r in records] == ids
    chat = cli("export", "--log-dir", d, "--format", "openai-chat").json_lines
    assert len(chat) == 375  # the 404s are skipped
    assert cli("show", ids[123], "--log-dir", d).code == 0
    assert time.monotonic() - began < 10
