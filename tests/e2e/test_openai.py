"""The official OpenAI SDK through a real proxy to the mock upstream, checked on disk."""

from __future__ import annotations

import json
import re

import openai
import pytest

from .conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    Capture,
    Logproxy,
    Mock,
    anthropic_client,
    assert_complete,
    split_http,
)

pytestmark = pytest.mark.e2e

CHAT = [{"role": "user", "content": "hello proxy"}]
REPLY = "word1 word2 word3 word4 word5"


def check_request(capture: Capture, proxy: Logproxy, mock: Mock, method: str, path: str) -> dict:
    """The request.bin: request line to the upstream, X-Proxy-Path, redacted key; its body."""
    start, headers, body = split_http(capture.request)
    assert start == f"{method} {mock.origin}/v1/{path} HTTP/1.1"
    assert capture.request.startswith(f"{start}\r\n".encode())
    assert headers["x-proxy-path"] == f"{proxy.url}/mock/{path}"
    assert headers["authorization"].startswith("<redacted>")
    assert OPENAI_KEY not in capture.all_bytes().decode("latin-1")
    assert capture.request_meta["metadata"]["target_url"] == f"{mock.origin}/v1/{path}"
    assert capture.request_meta["metadata"]["method"] == method
    return json.loads(body) if body else {}


def sse_events(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [
        line[len("data: ") :]
        for event in body.decode().split("\n\n")
        for line in event.split("\n")
        if line.startswith("data: ")
    ]


def test_chat_completion(proxy: Logproxy, mock: Mock, oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    completion = raw.parse()
    assert completion.choices[0].message.content == REPLY
    capture_id = raw.headers["x-logproxy-id"]

    capture = proxy.capture(capture_id)
    assert_complete(capture, "mock", 200)
    sent = check_request(capture, proxy, mock, "POST", "chat/completions")
    assert sent["messages"] == CHAT
    start, headers, body = split_http(capture.response)
    assert start == "HTTP/1.1 200 OK"
    assert headers["x-logproxy-id"] == capture_id
    assert json.loads(body)["id"] == completion.id


def test_chat_completion_stream(proxy: Logproxy, mock: Mock, oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o-mini", messages=CHAT, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    capture_id = stream.response.headers["x-logproxy-id"]

    capture = proxy.capture(capture_id)
    assert_complete(capture, "mock", 200)
    assert check_request(capture, proxy, mock, "POST", "chat/completions")["stream"] is True
    _, headers, body = split_http(capture.response)
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    assert [json.loads(e) for e in events[:-1]] == [c.to_dict() for c in chunks]


def test_embeddings(proxy: Logproxy, mock: Mock, oai: openai.OpenAI) -> None:
    raw = oai.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="hello", encoding_format="float"
    )
    vector = raw.parse().data[0].embedding
    assert len(vector) > 0
    capture = proxy.capture(raw.headers["x-logproxy-id"])
    assert_complete(capture, "mock", 200)
    assert check_request(capture, proxy, mock, "POST", "embeddings")["input"] == "hello"
    assert json.loads(split_http(capture.response)[2])["data"][0]["embedding"] == vector


def test_models_list(proxy: Logproxy, mock: Mock, oai: openai.OpenAI) -> None:
    raw = oai.models.with_raw_response.list()
    ids = [m.id for m in raw.parse()]
    assert "gpt-4o-mini" in ids
    capture = proxy.capture(raw.headers["x-logproxy-id"])
    assert_complete(capture, "mock", 200)
    assert check_request(capture, proxy, mock, "GET", "models") == {}
    assert [m["id"] for m in json.loads(split_http(capture.response)[2])["data"]] == ids


def test_responses_api(proxy: Logproxy, mock: Mock, oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model="gpt-4o-mini", input="hello there")
    response = raw.parse()
    assert response.output_text == REPLY
    capture = proxy.capture(raw.headers["x-logproxy-id"])
    assert_complete(capture, "mock", 200)
    assert check_request(capture, proxy, mock, "POST", "responses")["input"] == "hello there"
    assert json.loads(split_http(capture.response)[2])["id"] == response.id


def test_responses_api_stream(proxy: Logproxy, mock: Mock, oai: openai.OpenAI) -> None:
    stream = oai.responses.create(model="gpt-4o-mini", input="hello there", stream=True)
    events = list(stream)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == REPLY
    capture = proxy.capture(stream.response.headers["x-logproxy-id"])
    assert_complete(capture, "mock", 200)
    stored = [json.loads(e) for e in sse_events(split_http(capture.response)[2])]
    assert [e["type"] for e in stored] == [e.type for e in events]
    assert stored[-1]["response"]["id"] == events[-1].response.id


def test_console_lines(proxy: Logproxy, mock: Mock, oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    short = raw.headers["x-logproxy-id"][:8]
    start = re.escape(
        f"[{short}] POST /mock/chat/completions -> {mock.origin}/v1/chat/completions [mock]"
    )
    proxy.wait_log(rf"\d{{2}}:\d{{2}}:\d{{2}}.* {start}\n")
    proxy.wait_log(rf"\[{short}\] 200 OK in=\d+B out=\d+B [\d.]+ms")


def test_console_end_line_has_token_usage(proxy: Logproxy, oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    short = raw.headers["x-logproxy-id"][:8]
    line = proxy.wait_log(rf"\[{short}\] 200 OK[^\n]*").group(0)
    # usage is prompt_tokens=2, completion_tokens=5
    assert "gpt-4o-mini-mock-2025 tokens=2+5" in line, line
    proxy.wait_log(rf"\[{short}\] \[USAGE\] prompt_tokens=2 completion_tokens=5 total_tokens=7")
    meta = proxy.capture(raw.headers["x-logproxy-id"]).response_meta
    llm = meta["llm"]
    assert llm["api"] == "openai.chat" and llm["model"] == "gpt-4o-mini"
    assert llm["usage"]["input_tokens"] == 2 and llm["usage"]["output_tokens"] == 5
    assert llm["output_text"] == "word1 word2 word3 word4 word5"


def test_api_keys_never_stored_or_logged(proxy: Logproxy, oai: openai.OpenAI) -> None:
    raws = [
        oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT),
        anthropic_client(f"{proxy.url}/anthropic").messages.with_raw_response.create(
            model="claude-sonnet-4-6", max_tokens=50, messages=CHAT
        ),
    ]
    for raw in raws:
        proxy.capture(raw.headers["x-logproxy-id"])
        proxy.wait_log(rf"\[{raw.headers['x-logproxy-id'][:8]}\] 200 OK")
    for path in proxy.log_dir.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert OPENAI_KEY.encode() not in text, path
            assert ANTHROPIC_KEY.encode() not in text, path
    assert OPENAI_KEY not in proxy.log()
    assert ANTHROPIC_KEY not in proxy.log()
