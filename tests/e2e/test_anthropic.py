"""The official Anthropic SDK through a real proxy (``/anthropic/`` -> the mock's root)."""

from __future__ import annotations

import json

import anthropic
import pytest

from .conftest import ANTHROPIC_KEY, Logproxy, Mock, assert_complete, split_http

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hello proxy"}]
REPLY = "word1 word2 word3 word4 word5"


def check_request(capture_bytes: bytes, proxy: Logproxy, mock: Mock) -> dict:
    start, headers, body = split_http(capture_bytes)
    # the SDK appends /v1/messages to its base URL http://localhost:<port>/anthropic
    assert start == f"POST {mock.origin}/v1/messages HTTP/1.1"
    assert headers["x-proxy-path"] == f"{proxy.url}/anthropic/v1/messages"
    # this SDK version sends the key as a bearer token; older ones use x-api-key
    keys = [headers[name] for name in ("x-api-key", "authorization") if name in headers]
    assert keys and all(value.startswith("<redacted>") for value in keys)
    assert "anthropic-version" in headers
    assert ANTHROPIC_KEY.encode() not in capture_bytes
    return json.loads(body)


def test_messages(proxy: Logproxy, mock: Mock, claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES
    )
    message = raw.parse()
    assert message.content[0].text == REPLY
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 5)

    capture = proxy.capture(raw.headers["x-logproxy-id"])
    assert_complete(capture, "anthropic", 200)
    assert check_request(capture.request, proxy, mock)["messages"] == MESSAGES
    stored = json.loads(split_http(capture.response)[2])
    assert stored["id"] == message.id
    assert stored["usage"]["output_tokens"] == 5


def test_messages_stream(proxy: Logproxy, mock: Mock, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES
    ) as stream:
        capture_id = stream.response.headers["x-logproxy-id"]
        message = stream.get_final_message()
    assert message.content[0].text == REPLY
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 5)

    capture = proxy.capture(capture_id)
    assert_complete(capture, "anthropic", 200)
    assert check_request(capture.request, proxy, mock)["stream"] is True
    _, headers, body = split_http(capture.response)
    assert headers["content-type"].startswith("text/event-stream")
    names = [
        line[len("event: ") :] for line in body.decode().split("\n") if line.startswith("event:")
    ]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names.count("content_block_delta") == 5
    assert message.id in body.decode()
