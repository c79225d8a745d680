"""Answers the proxy gives itself (404, 301, 502), each with an id and a capture."""

from __future__ import annotations

import http.client
import json

import anthropic
import openai
import pytest

from .conftest import Logproxy, anthropic_client, assert_complete, openai_client, split_http

pytestmark = pytest.mark.e2e


def get(proxy: Logproxy, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("localhost", proxy.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def test_unmatched_request_is_404_and_captured(proxy: Logproxy) -> None:
    response, body = get(proxy, "/nope")
    assert response.status == 404
    assert body.decode().strip() == "No route found for /nope"
    capture_id = response.headers["X-Logproxy-Id"]

    capture = proxy.capture(capture_id)
    assert_complete(capture, None, 404)
    start, headers, _ = split_http(capture.request)
    assert start == f"GET {proxy.url}/nope HTTP/1.1"  # the source URL: there is no target
    assert headers["x-proxy-path"] == f"{proxy.url}/nope"
    start, headers, stored = split_http(capture.response)
    assert start == "HTTP/1.1 404 Not Found"
    assert stored == body
    assert headers["x-logproxy-id"] == capture_id


def test_subtree_without_slash_redirects(proxy: Logproxy) -> None:
    response, _ = get(proxy, "/mock")
    assert response.status == 301
    assert response.headers["Location"] == "/mock/"
    capture = proxy.capture(response.headers["X-Logproxy-Id"])
    assert_complete(capture, None, 301)
    assert split_http(capture.response)[1]["location"] == "/mock/"


def test_upstream_down_is_502_json(proxy: Logproxy, closed_port: int) -> None:
    conn = http.client.HTTPConnection("localhost", proxy.port, timeout=10)
    conn.request(
        "POST", "/down/chat/completions", body=b"{}", headers={"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    capture_id = response.headers["X-Logproxy-Id"]
    assert response.status == 502
    assert response.headers["Content-Type"] == "application/json"
    assert set(body["error"]) >= {"message", "type", "request_id"}
    assert body["error"]["type"] == "proxy_error"
    assert body["error"]["request_id"] == capture_id

    capture = proxy.capture(capture_id)
    assert capture.request.startswith(
        f"POST http://127.0.0.1:{closed_port}/v1/chat/completions HTTP/1.1\r\n".encode()
    )
    assert capture.request.endswith(b"\r\n\r\n{}")
    assert capture.request_meta["completed"] is True
    meta = capture.response_meta
    assert meta["metadata"]["response_status_code"] == 502
    assert meta["metadata"]["route"] == "down"
    assert meta["error"] and "unreachable" in meta["error"]
    assert meta["bytes_written"] == capture.files["response.bin"].stat().st_size
    assert json.loads(split_http(capture.response)[2]) == body


def test_upstream_down_openai_sdk_error(proxy: Logproxy) -> None:
    client = openai_client(f"{proxy.url}/down")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 502
    assert "upstream unreachable" in str(info.value)
    proxy.capture(info.value.response.headers["x-logproxy-id"])


def test_upstream_down_anthropic_sdk_error(proxy: Logproxy) -> None:
    client = anthropic_client(f"{proxy.url}/down")
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 502
    assert "upstream unreachable" in str(info.value)
    proxy.capture(info.value.response.headers["x-logproxy-id"])
