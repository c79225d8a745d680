"""The mock LLM upstream (logproxy.mockllm): API shapes, SSE framing, knobs, helpers, faults."""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Generator, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import anthropic
import brotli
import openai
import pytest
import pytest_twisted
import treq
import zstandard
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from logproxy.mockllm import (
    BYTE_PATTERN,
    MODEL_SUFFIX,
    Options,
    build_site,
    expected_text,
    makeService,
)
from logproxy.mockllm._service import tls_options

REPO = Path(__file__).resolve().parents[1]
CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello mock world"}]


# --------------------------------------------------------------------------- fixtures & helpers


@pytest.fixture(scope="module")
def base() -> Generator[str, None, None]:
    """An in-process mock on a loopback port."""
    port = reactor.listenTCP(0, build_site(), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture(scope="module")
def http() -> treq.client.HTTPClient:
    """A treq client without connection reuse, so no idle-connection timers linger."""
    return treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, False)))


def sse(text: str) -> list[tuple[str | None, str]]:
    """Parse an SSE body into ``(event, data)`` pairs, checking the blank-line framing."""
    assert text.endswith("\n\n")
    out = []
    for block in text[:-2].split("\n\n"):
        event, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            else:
                assert field == "data", line
                data.append(value)
        out.append((event, "\n".join(data)))
    return out


def openai_chunks(text: str) -> list[dict[str, Any]]:
    events = sse(text)
    assert events[-1] == (None, "[DONE]")
    assert all(name is None for name, _ in events)
    return [json.loads(data) for _, data in events[:-1]]


@inlineCallbacks
def post(
    http: Any, url: str, body: object, **kwargs: Any
) -> Generator[Any, Any, tuple[Any, bytes]]:
    response = yield http.post(url, json=body, **kwargs)
    content = yield response.content()
    return response, content


@inlineCallbacks
def raw_get(url: str, headers: dict[bytes, list[bytes]] | None = None) -> Generator[Any, Any, Any]:
    """An Agent request without treq's gzip decoding; returns (response, [chunks])."""
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, False))
    response = yield agent.request(b"GET", url.encode(), Headers(headers or {}))
    chunks: list[bytes] = []
    yield treq.collect(response, chunks.append)
    return response, chunks


def body_of(data: bytes) -> FileBodyProducer:
    return FileBodyProducer(BytesIO(data))


def poll(predicate: Any, timeout: float = 3.0) -> Deferred[None]:
    """Fire once ``predicate()`` is true, checking every few milliseconds."""

    @inlineCallbacks
    def loop() -> Generator[Any, Any, None]:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition never became true"
            yield deferLater(reactor, 0.005, lambda: None)

    return loop()


# --------------------------------------------------------------------------- OpenAI chat


@pytest_twisted.inlineCallbacks
def test_chat_completion(base: str, http: Any) -> Generator[Any, Any, None]:
    response, content = yield post(
        http, base + "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": CHAT}
    )
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    assert response.headers.getRawHeaders("x-request-id")[0].startswith("req_")
    body = json.loads(content)
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini" + MODEL_SUFFIX
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == expected_text(5) == "word1 word2 word3 word4 word5"
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (5, 5, 10)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


@pytest.mark.parametrize("include_usage", [True, False])
@pytest_twisted.inlineCallbacks
def test_chat_stream(base: str, http: Any, include_usage: bool) -> Generator[Any, Any, None]:
    request = {
        "model": "gpt-4o-mini",
        "messages": CHAT,
        "stream": True,
        "stream_options": {"include_usage": include_usage},
        "mock": {"chunks": 3},
    }
    response, content = yield post(http, base + "/v1/chat/completions", request)
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/event-stream")
    chunks = openai_chunks(content.decode())
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == expected_text(3)
    with_choices = [c for c in chunks if c["choices"]]
    assert [c["choices"][0]["finish_reason"] for c in with_choices][-1] == "stop"
    assert len(with_choices) == 1 + 3 + 1
    if include_usage:
        assert all(c["usage"] is None for c in with_choices)
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] == 3
        assert chunks[-1]["usage"]["prompt_tokens"] == 5
    else:
        assert chunks[-1] is with_choices[-1]
        assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.inlineCallbacks
def test_chat_tool_call(base: str, http: Any, stream: bool) -> Generator[Any, Any, None]:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
    }
    messages = [{"role": "user", "content": "Please call a tool"}]
    request = {"model": "gpt-4o", "messages": messages, "tools": [tool], "stream": stream}
    _, content = yield post(http, base + "/v1/chat/completions", request)
    if stream:
        chunks = openai_chunks(content.decode())
        deltas = [c["choices"][0]["delta"] for c in chunks]
        assert deltas[0]["tool_calls"][0]["function"]["name"] == "get_weather"
        arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[:-1])
        finish = chunks[-1]["choices"][0]["finish_reason"]
    else:
        choice = json.loads(content)["choices"][0]
        assert choice["message"]["content"] is None
        (call,) = choice["message"]["tool_calls"]
        assert call["id"].startswith("call_") and call["function"]["name"] == "get_weather"
        arguments, finish = call["function"]["arguments"], choice["finish_reason"]
    assert json.loads(arguments) == {"city": "mock", "days": 1}
    assert finish == "tool_calls"


@pytest_twisted.inlineCallbacks
def test_max_tokens_truncates(base: str, http: Any) -> Generator[Any, Any, None]:
    request = {"model": "m", "messages": CHAT, "max_tokens": 2}
    _, content = yield post(http, base + "/v1/chat/completions", request)
    body = json.loads(content)
    assert body["choices"][0]["message"]["content"] == "word1 word2"
    assert body["choices"][0]["finish_reason"] == "length"


# --------------------------------------------------------------------------- other OpenAI endpoints


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.inlineCallbacks
def test_legacy_completions(base: str, http: Any, stream: bool) -> Generator[Any, Any, None]:
    request: dict[str, Any] = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "say hi",
        "stream": stream,
    }
    request["stream_options"] = {"include_usage": True} if stream else None
    _, content = yield post(http, base + "/v1/completions", request)
    if stream:
        chunks = openai_chunks(content.decode())
        assert all(c["object"] == "text_completion" for c in chunks)
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        usage = chunks[-1]["usage"]
    else:
        body = json.loads(content)
        assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
        text, usage = body["choices"][0]["text"], body["usage"]
    assert text == expected_text(5)
    assert usage == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


@pytest_twisted.inlineCallbacks
def test_embeddings(base: str, http: Any) -> Generator[Any, Any, None]:
    url = base + "/v1/embeddings"
    request = {"model": "text-embedding-3-small", "input": ["a b", "c"]}
    _, floats = yield post(http, url, request)
    _, again = yield post(http, url, request)
    _, b64 = yield post(http, url, {**request, "encoding_format": "base64", "dimensions": 4})
    floats, b64 = json.loads(floats), json.loads(b64)
    assert floats["object"] == "list" and floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [d["index"] for d in floats["data"]] == [0, 1]
    vector = floats["data"][0]["embedding"]
    assert len(vector) == 8 and vector == json.loads(again)["data"][0]["embedding"]
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-5
    assert vector != floats["data"][1]["embedding"]
    decoded = struct.unpack("<4f", base64.b64decode(b64["data"][0]["embedding"]))
    assert len(decoded) == 4


@pytest_twisted.inlineCallbacks
def test_models(base: str, http: Any) -> Generator[Any, Any, None]:
    response = yield http.get(base + "/v1/models")
    body = yield response.json()
    assert body["object"] == "list" and "gpt-4o-mini" in [m["id"] for m in body["data"]]
    response = yield http.get(base + "/v1/models", headers={"anthropic-version": "2023-06-01"})
    body = yield response.json()
    assert body["has_more"] is False and all(m["type"] == "model" for m in body["data"])


@pytest_twisted.inlineCallbacks
def test_responses(base: str, http: Any) -> Generator[Any, Any, None]:
    request = {"model": "gpt-4.1", "input": "hello mock world", "instructions": "be brief"}
    _, content = yield post(http, base + "/v1/responses", request)
    body = json.loads(content)
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["id"].startswith("resp_")
    (item,) = body["output"]
    assert item["type"] == "message" and item["content"][0]["type"] == "output_text"
    assert item["content"][0]["text"] == expected_text(5)
    usage = body["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (5, 5, 10)
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert usage["output_tokens_details"]["reasoning_tokens"] == 0


@pytest_twisted.inlineCallbacks
def test_responses_stream(base: str, http: Any) -> Generator[Any, Any, None]:
    request = {"model": "gpt-4.1", "input": [{"role": "user", "content": "hi"}], "stream": True}
    _, content = yield post(http, base + "/v1/responses", {**request, "mock": {"chunks": 2}})
    events = sse(content.decode())
    names = [name for name, _ in events]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    datas = [json.loads(data) for _, data in events]
    assert [d["type"] for d in datas] == names
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    assert "".join(d["delta"] for d in datas if "delta" in d) == expected_text(2)
    assert datas[6]["text"] == expected_text(2)
    final = datas[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == expected_text(2)
    assert final["usage"]["output_tokens"] == 2


# --------------------------------------------------------------------------- Anthropic


@pytest_twisted.inlineCallbacks
def test_messages(base: str, http: Any) -> Generator[Any, Any, None]:
    request = {
        "model": "claude-mock-1",
        "max_tokens": 100,
        "system": "be brief",
        "messages": CHAT[1:],
    }
    response, content = yield post(http, base + "/v1/messages", request, headers={"x-api-key": "k"})
    assert response.headers.getRawHeaders("request-id")[0].startswith("req_")
    body = json.loads(content)
    assert body["id"].startswith("msg_") and body["type"] == "message"
    assert body["role"] == "assistant" and body["model"] == "claude-mock-1"
    assert body["content"] == [{"type": "text", "text": expected_text(5)}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"] == {
        "input_tokens": 5,
        "output_tokens": 5,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


@pytest_twisted.inlineCallbacks
def test_messages_stream(base: str, http: Any) -> Generator[Any, Any, None]:
    request = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": CHAT[1:], "stream": True}
    _, content = yield post(http, base + "/v1/messages", {**request, "mock": {"chunks": 3}})
    events = sse(content.decode())
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    datas = [json.loads(data) for _, data in events]
    assert [d["type"] for d in datas] == names
    assert datas[0]["message"]["usage"]["input_tokens"] == 3
    assert datas[0]["message"]["usage"]["output_tokens"] == 1
    text = "".join(d["delta"]["text"] for d in datas if d["type"] == "content_block_delta")
    assert text == expected_text(3)
    assert datas[-2]["delta"]["stop_reason"] == "end_turn"
    assert datas[-2]["usage"]["output_tokens"] == 3


@pytest_twisted.inlineCallbacks
def test_messages_tool_use_stream(base: str, http: Any) -> Generator[Any, Any, None]:
    tool = {
        "name": "lookup",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    messages = [{"role": "user", "content": [{"type": "text", "text": "call a tool now"}]}]
    request = {
        "model": "claude",
        "max_tokens": 9,
        "messages": messages,
        "tools": [tool],
        "stream": True,
    }
    _, content = yield post(http, base + "/v1/messages", request)
    datas = [json.loads(data) for _, data in sse(content.decode())]
    assert datas[1]["content_block"]["type"] == "tool_use"
    assert datas[1]["content_block"]["name"] == "lookup"
    partial = "".join(
        d["delta"]["partial_json"] for d in datas if d["type"] == "content_block_delta"
    )
    assert json.loads(partial) == {"q": "mock"}
    assert datas[-2]["delta"]["stop_reason"] == "tool_use"


# --------------------------------------------------------------------------- errors & knobs


@pytest_twisted.inlineCallbacks
def test_request_errors(base: str, http: Any) -> Generator[Any, Any, None]:
    response = yield http.post(base + "/v1/chat/completions", data=b"{not json")
    body = yield response.json()
    assert response.code == 400 and body["error"]["type"] == "invalid_request_error"
    response, content = yield post(http, base + "/v1/chat/completions", {"messages": CHAT})
    assert response.code == 400 and "model" in json.loads(content)["error"]["message"]
    response, content = yield post(
        http, base + "/v1/messages", {"model": "c", "messages": CHAT, "mock": {"chunkz": 1}}
    )
    assert response.code == 400 and json.loads(content)["type"] == "error"
    response = yield http.get(base + "/v1/nope")
    assert response.code == 404
    response = yield http.get(base + "/v1/chat/completions")
    assert response.code == 405


@pytest.mark.parametrize(("path", "status"), [("/v1/chat/completions", 429), ("/v1/messages", 529)])
@pytest_twisted.inlineCallbacks
def test_status_knob(base: str, http: Any, path: str, status: int) -> Generator[Any, Any, None]:
    request = {"model": "m", "messages": CHAT, "stream": True, "mock": {"status": status}}
    response, content = yield post(http, base + path, request)
    assert response.code == status
    body = json.loads(content)
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    else:
        assert body["error"]["type"] == "rate_limit_error"


@pytest_twisted.inlineCallbacks
def test_header_knobs_and_echo(base: str, http: Any) -> Generator[Any, Any, None]:
    headers = {"X-Mock-Chunks": "4", "X-Mock-Chunk-Size": "7"}
    request = {"model": "m", "messages": CHAT}
    _, content = yield post(http, base + "/v1/chat/completions", request, headers=headers)
    text = json.loads(content)["choices"][0]["message"]["content"]
    assert text == expected_text(4, 7) == "The quick brown fox jumps ov"
    # The body's mock object wins over headers; echo repeats the last user message.
    request = {**request, "stream": True, "mock": {"echo": True, "chunks": 1}}
    _, content = yield post(http, base + "/v1/chat/completions", request, headers=headers)
    chunks = openai_chunks(content.decode())
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert pieces == ["hello m", "ock wor", "ld"]


@pytest_twisted.inlineCallbacks
def test_ttft_and_interval(base: str, http: Any) -> Generator[Any, Any, None]:
    request = {"model": "m", "messages": CHAT, "stream": True}
    response = yield http.post(
        base + "/v1/chat/completions",
        json={**request, "mock": {"chunks": 3, "ttft": 0.15, "interval": 0.05}},
        unbuffered=True,
    )
    started = time.monotonic()
    arrivals: list[float] = []
    yield treq.collect(response, lambda data: arrivals.append(time.monotonic() - started))
    assert arrivals[-1] >= 0.15 + 3 * 0.05 - 0.01
    # Non-streamed answers arrive after the same generation time, all at once.
    started = time.monotonic()
    yield post(http, base + "/v1/messages", {"model": "c", "messages": CHAT, "mock": {"ttft": 0.1}})
    assert time.monotonic() - started >= 0.09


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest_twisted.inlineCallbacks
def test_gzip_knob(base: str, http: Any, path: str) -> Generator[Any, Any, None]:
    request = {
        "model": "m",
        "messages": CHAT,
        "stream": True,
        "mock": {"gzip": True, "interval": 0.01},
    }
    response, content = yield post(http, base + path, request)  # treq decodes gzip itself
    assert response.headers.getRawHeaders("content-encoding") is None
    assert b"word5" in content
    # Raw: every network chunk inflates to whole events (Z_SYNC_FLUSH per event).
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, False))
    raw = yield agent.request(
        b"POST",
        (base + path).encode(),
        Headers({"content-type": ["application/json"], "x-mock-gzip": ["1"]}),
        body_of(json.dumps({**request, "mock": {"interval": 0.01}}).encode()),
    )
    assert raw.headers.getRawHeaders(b"content-encoding") == [b"gzip"]
    inflater = zlib.decompressobj(31)
    pieces: list[bytes] = []
    yield treq.collect(raw, lambda data: pieces.append(inflater.decompress(data)))
    assert all(p.endswith(b"\n\n") for p in pieces if p)
    assert inflater.eof
    assert b"word5" in b"".join(pieces)


@pytest_twisted.inlineCallbacks
def test_gzip_knob_non_stream(base: str, http: Any) -> Generator[Any, Any, None]:
    request = {"model": "m", "messages": CHAT, "mock": {"gzip": True}}
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, False))
    response = yield agent.request(
        b"POST",
        (base + "/v1/chat/completions").encode(),
        Headers({}),
        body_of(json.dumps(request).encode()),
    )
    body = yield treq.content(response)
    assert response.length == len(body)  # Content-Length, not chunked
    assert json.loads(gzip.decompress(body))["choices"][0]["message"]["content"] == expected_text()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", lambda data: zstandard.ZstdCompressor().compress(data)),
        ("gzip, zstd", lambda data: zstandard.ZstdCompressor().compress(gzip.compress(data))),
    ],
)
@pytest_twisted.inlineCallbacks
def test_compressed_request_bodies(
    base: str, http: Any, coding: str, encode: Any
) -> Generator[Any, Any, None]:
    request = {"model": "m", "messages": CHAT, "mock": {"echo": True}}
    headers = {"content-encoding": coding, "content-type": "application/json"}
    response = yield http.post(
        base + "/v1/chat/completions", data=encode(json.dumps(request).encode()), headers=headers
    )
    body = yield response.json()
    assert response.code == 200
    assert body["choices"][0]["message"]["content"] == "hello mock world"


@pytest_twisted.inlineCallbacks
def test_bad_content_encoding(base: str, http: Any) -> Generator[Any, Any, None]:
    response = yield http.post(
        base + "/v1/messages", data=b"not zstd", headers={"content-encoding": "zstd"}
    )
    assert response.code == 400
    response = yield http.post(
        base + "/v1/messages", data=b"{}", headers={"content-encoding": "lzma"}
    )
    assert response.code == 415


@pytest_twisted.inlineCallbacks
def test_large_non_stream_body_is_streamed(base: str, http: Any) -> Generator[Any, Any, None]:
    """Beyond 1 MiB the JSON is produced in blocks (chunked), and must still be valid."""
    request = {"model": "m", "messages": CHAT, "mock": {"chunks": 3000, "chunk_size": 1000}}
    response, content = yield post(http, base + "/v1/responses", {**request, "input": "x"})
    assert response.length == UNKNOWN_LENGTH  # chunked
    text = json.loads(content)["output"][0]["content"][0]["text"]
    assert text == expected_text(3000, 1000) and len(text) == 3_000_000


# --------------------------------------------------------------------------- faults


@pytest_twisted.inlineCallbacks
def test_drop_after_knob(base: str, http: Any) -> Generator[Any, Any, None]:
    request = {"model": "m", "messages": CHAT, "stream": True, "mock": {"drop_after": 3}}
    response = yield http.post(base + "/v1/chat/completions", json=request, unbuffered=True)
    received: list[bytes] = []
    with pytest.raises(ResponseFailed):
        yield treq.collect(response, received.append)
    events = sse(b"".join(received).decode())
    assert len(events) == 3 and events[-1][1] != "[DONE]"


@pytest_twisted.inlineCallbacks
def test_drop_endpoint(base: str, http: Any) -> Generator[Any, Any, None]:
    response = yield http.get(base + "/mock/drop?after=5000", unbuffered=True)
    assert response.length > 5000
    received: list[bytes] = []
    with pytest.raises(ResponseFailed):
        yield treq.collect(response, received.append)
    assert b"".join(received) == (BYTE_PATTERN * 400)[:5000]


@pytest_twisted.inlineCallbacks
def test_disconnect_leaves_no_delayed_calls(base: str) -> Generator[Any, Any, None]:
    before = set(reactor.getDelayedCalls())
    request = {
        "model": "m",
        "messages": CHAT,
        "stream": True,
        "mock": {"chunks": 1000, "interval": 0.02},
    }
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, False))
    response = yield agent.request(
        b"POST",
        (base + "/v1/chat/completions").encode(),
        Headers({}),
        body_of(json.dumps(request).encode()),
    )
    done: Deferred[None] = Deferred()
    pending: list[Any] = []

    class HangUp(Protocol):
        def dataReceived(self, data: bytes) -> None:
            pending.extend(set(reactor.getDelayedCalls()) - before)
            self.transport.stopProducing()  # closes the connection mid-stream

        def connectionLost(self, reason: Failure | None = None) -> None:
            done.callback(None)

    response.deliverBody(HangUp())
    yield done
    assert any("Emitter" in repr(call.func) for call in pending)  # the next event's timer
    yield poll(lambda: not set(reactor.getDelayedCalls()) - before)


# --------------------------------------------------------------------------- /mock helpers


@pytest_twisted.inlineCallbacks
def test_bytes_large(base: str, http: Any) -> Generator[Any, Any, None]:
    size = 50 * 1024 * 1024 + 7
    response = yield http.get(base + f"/mock/bytes?size={size}&chunk=100000", unbuffered=True)
    assert response.length == size
    ring = BYTE_PATTERN * (256 * 1024 // 16 + 2)
    state = {"offset": 0, "bad": 0}

    def check(data: bytes) -> None:
        start = state["offset"] % 16
        for at in range(0, len(data), 256 * 1024):
            piece = data[at : at + 256 * 1024]
            begin = (start + at) % 16
            state["bad"] += piece != ring[begin : begin + len(piece)]
        state["offset"] += len(data)

    yield treq.collect(response, check)
    assert state == {"offset": size, "bad": 0}


@pytest_twisted.inlineCallbacks
def test_bytes_chunked(base: str, http: Any) -> Generator[Any, Any, None]:
    response = yield http.get(base + "/mock/bytes?size=100000&chunk=999&chunked=1")
    assert response.length == UNKNOWN_LENGTH
    body = yield response.content()
    assert body == (BYTE_PATTERN * 6300)[:100000]


@pytest_twisted.inlineCallbacks
def test_echo_endpoint(base: str) -> Generator[Any, Any, None]:
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, False))
    payload = "héllo".encode()
    response = yield agent.request(
        b"PUT",
        (base + "/mock/echo?a=1&b=2").encode(),
        Headers({"x-dup": ["one", "two"], "authorization": ["Bearer k"]}),
        body_of(payload),
    )
    body = json.loads((yield treq.content(response)))
    assert (body["method"], body["path"], body["query"]) == ("PUT", "/mock/echo", "a=1&b=2")
    assert ["x-dup", "one"] in body["headers"] and ["x-dup", "two"] in body["headers"]
    assert ["authorization", "Bearer k"] in body["headers"]
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert (body["body_len"], body["body"]) == (len(payload), "héllo")


@pytest_twisted.inlineCallbacks
def test_status_slow_headers_and_sse(base: str, http: Any) -> Generator[Any, Any, None]:
    response = yield http.get(base + "/mock/status/503")
    assert response.code == 503 and (yield response.json())["status"] == 503
    response = yield http.get(base + "/mock/status/204")
    assert response.code == 204
    started = time.monotonic()
    response = yield http.get(base + "/mock/slow-headers?delay=0.1", unbuffered=True)
    assert time.monotonic() - started >= 0.09
    yield response.content()
    response = yield http.get(base + "/mock/sse?events=4&size=5&interval=0.01")
    text = (yield response.content()).decode()
    assert text == "".join(f"id: {i}\nevent: message\ndata: 01234\n\n" for i in range(4))


# --------------------------------------------------------------------------- running it


def test_options() -> None:
    options = Options()
    options.parseOptions([])
    assert (options["port"], options["host"], options["tls-cert"]) == (5600, "127.0.0.1", None)
    options.parseOptions(["--port", "0", "--host", "0.0.0.0"])
    service = makeService(options)
    assert service.args[0] == 0 and service.kwargs["interface"] == "0.0.0.0"


def _self_signed(directory: Path) -> tuple[Path, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = directory / "mock.pem"
    path.write_bytes(key_pem + cert_pem)
    return path, cert_pem


@pytest_twisted.inlineCallbacks
def test_tls(tmp_path: Path) -> Generator[Any, Any, None]:
    pem, cert_pem = _self_signed(tmp_path)
    port = reactor.listenSSL(0, build_site(), tls_options(str(pem), None), interface="127.0.0.1")
    try:
        policy = BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(cert_pem))
        agent = Agent(reactor, contextFactory=policy, pool=HTTPConnectionPool(reactor, False))
        url = f"https://localhost:{port.getHost().port}/v1/models"
        response = yield agent.request(b"GET", url.encode())
        body = json.loads((yield treq.content(response)))
        assert body["object"] == "list"
    finally:
        yield port.stopListening()


# ------------------------------------------------------------------ real SDKs, real process


@pytest.fixture(scope="module")
def mock_process() -> Iterator[str]:
    """``python -m logproxy.mockllm`` on a free port, polled until it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "logproxy.mockllm", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mock did not start"
                with pytest.raises(subprocess.TimeoutExpired):  # still alive: keep polling
                    proc.wait(timeout=0.02)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_openai_sdk(mock_process: str) -> None:
    client = openai.OpenAI(base_url=mock_process + "/v1", api_key="sk-test", max_retries=0)
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == expected_text()
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 10

    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=CHAT,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"mock": {"chunks": 4}},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected_text(
        4
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4

    with client.responses.stream(model="gpt-4.1", input="hello there") as events:
        final = events.get_final_response()
    assert final.output_text == expected_text()
    assert final.usage is not None and final.usage.output_tokens == 5
    response = client.responses.create(model="gpt-4.1", input="hi")
    assert response.output_text == expected_text()

    embedding = client.embeddings.create(model="text-embedding-3-small", input="hi", dimensions=6)
    assert len(embedding.data[0].embedding) == 6

    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="m", messages=CHAT, extra_body={"mock": {"status": 429}}
        )  # type: ignore[arg-type]


def test_anthropic_sdk(mock_process: str) -> None:
    client = anthropic.Anthropic(base_url=mock_process, api_key="sk-ant-test", max_retries=0)
    message = client.messages.create(
        model="claude-mock-1", max_tokens=64, messages=[{"role": "user", "content": "hi there"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == expected_text()
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 5)

    with client.messages.stream(
        model="claude-mock-1",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi there"}],
        extra_body={"mock": {"chunks": 6}},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected_text(6)
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 6)

    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(
            model="c",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Mock-Status": "529"},
        )
