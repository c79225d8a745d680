"""The query API on the logging Site (SPEC section 10): real services over loopback -- the
proxy, the mock upstream and the logging Site in this process -- and real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support import (
    RawPeer,
    connect_raw,
    finished_capture,
    free_port,
    logserver_url,
    make_config,
    proxy_url,
    start_service,
    wait_for,
)
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.client import ResponseFailed

from logproxy.index.schema import index_path
from logproxy.logserver import site as site_module
from logproxy.logserver.openapi import openapi_document

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers


@dataclass
class Env:
    service: Any
    log_dir: str
    http: HTTPClient
    token: str = ""

    def url(self, path: str) -> str:
        return logserver_url(self.service, path)

    @property
    def port(self) -> int:
        return int(self.service.logserver_port.getHost().port)

    @property
    def bus(self) -> Any:
        return self.service.index.bus

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        """(status, parsed JSON or bytes, response)."""
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        response = await self.http.get(self.url(path), headers=headers, **kwargs)
        body = await response.content()
        content_type = (response.headers.getRawHeaders("content-type") or [""])[0]
        if content_type.startswith("application/json"):
            return response.code, json.loads(body), response
        return response.code, body, response

    async def ids(self, query: str = "") -> list[str]:
        code, page, _ = await self.get(f"/api/requests{query}")
        assert code == 200, page
        return [item["id"] for item in page["items"]]

    async def chat(
        self, content: str, model: str = "gpt-4o-mini", stream: bool = True, **mock: Any
    ) -> str:
        body = {
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": content}],
            "mock": mock,
        }
        response = await self.http.post(
            proxy_url(self.service, "/mock/chat/completions"), data=json.dumps(body).encode()
        )
        await response.content()
        return str(response.headers.getRawHeaders("X-Logproxy-Id")[0])


async def until(probe: Callable[[], Awaitable[Any]], timeout: float = 5.0, what: str = "") -> Any:
    """Poll an async probe until it returns something truthy."""
    deadline = reactor.seconds() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        await deferLater(reactor, 0.02, lambda: None)


async def indexed(env: Env, capture_id: str, finished: bool = True) -> dict[str, Any]:
    """Wait until the index has the capture (finished, by default); its list item."""

    async def probe() -> Any:
        code, detail, _ = await env.get(f"/api/requests/{capture_id}")
        if code != 200:
            return None
        if finished and detail["summary"]["in_flight"]:
            return None
        return detail

    return dict(await until(probe, 5, f"capture {capture_id} in the index"))


def start(
    tmp_path: Path,
    mock_upstream: str,
    services: list[Any],
    http: HTTPClient,
    server: dict[str, Any] | None = None,
    **logging_server: Any,
) -> Env:
    routes = {"mock": {"pattern": "/mock/", "destination": f"{mock_upstream}/v1/"}}
    config = make_config(
        tmp_path, routes, server=server, logging_server={"port": free_port(), **logging_server}
    )
    service = start_service(config)
    services.append(service)
    return Env(service, str(tmp_path / "logs"), http, logging_server.get("token", ""))


@pytest.fixture
def env(tmp_path: Path, mock_upstream: str, services: list[Any], http: HTTPClient) -> Env:
    return start(tmp_path, mock_upstream, services, http)


def raw_get(port: int, path: str, headers: dict[str, str] | None = None) -> Deferred[RawPeer]:
    """An HTTP/1.0 GET on a raw connection (no chunked framing; the body ends at close)."""
    d = connect_raw(port)

    def send(peer: RawPeer) -> RawPeer:
        lines = [
            f"GET {path} HTTP/1.0",
            "Host: x",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        peer.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return peer

    return d.addCallback(send)


def body_of(peer: RawPeer) -> bytes:
    return bytes(peer.received).partition(b"\r\n\r\n")[2]


def sse_events(data: bytes) -> list[dict[str, str]]:
    events = []
    for block in data.split(b"\n\n"):
        fields: dict[str, str] = {}
        for line in block.decode().split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if "event" in fields:
            events.append(fields)
    return events


def validator(name: str) -> Any:
    from jsonschema import Draft202012Validator

    doc = openapi_document()
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    )


# ---------------------------------------------------------------- list, filters, detail


@pytest_twisted.ensureDeferred
async def test_list_filters_search_and_detail(env: Env) -> None:
    streamed = await env.chat("alpha question", model="gpt-4o-mini")
    plain = await env.chat("beta question", model="gpt-4o", stream=False)
    failed = await env.chat("gamma question", model="gpt-4o", stream=False, status=500)
    response = await env.http.get(proxy_url(env.service, "/nowhere"))
    await response.content()
    unmatched = str(response.headers.getRawHeaders("X-Logproxy-Id")[0])
    for capture_id in (streamed, plain, failed, unmatched):
        await indexed(env, capture_id)
    newest_first = [unmatched, failed, plain, streamed]
    code, page, _ = await env.get("/api/requests")
    assert code == 200 and page["next_cursor"] is None
    assert [i["id"] for i in page["items"]] == newest_first
    validator("ListPage").validate(page)
    item = page["items"][-1]
    assert item["stream_type"] == "response" and item["llm"]["model"] == "gpt-4o-mini"
    assert item["request"]["stream_type"] == "request"
    assert item["summary"]["status"] == 200 and item["summary"]["in_flight"] is False
    assert await env.ids("?route=mock") == [failed, plain, streamed]
    assert await env.ids("?route=-") == [unmatched]
    assert await env.ids("?model=gpt-4o") == [failed, plain]
    assert await env.ids("?model=gpt-4o*") == [failed, plain, streamed]
    assert await env.ids("?status=200") == [plain, streamed]
    assert await env.ids("?status=5xx") == [failed]
    assert await env.ids("?status=4xx,5xx") == [unmatched, failed]
    assert await env.ids("?method=get") == [unmatched]
    assert await env.ids("?q=alpha") == [streamed]
    assert await env.ids("?q=question&model=gpt-4o") == [failed, plain]
    assert await env.ids("?since=1h") == newest_first
    assert await env.ids("?until=1h") == []
    assert await env.ids(f"?since={time.strftime('%Y-%m-%d', time.gmtime())}") == newest_first
    code, detail, _ = await env.get(f"/api/requests/{streamed[:8]}")
    assert code == 200 and detail["id"] == streamed
    validator("Detail").validate(detail)
    files = await finished_capture(env.log_dir, streamed)
    assert detail["request"] == files["request"][1] and detail["response"] == files["response"][1]
    assert detail["links"]["tail"] == f"/api/requests/{streamed}/tail"
    code, facets, _ = await env.get("/api/facets")
    assert code == 200 and facets["routes"] == ["mock"] and facets["unmatched"] is True
    assert facets["models"] == ["gpt-4o", "gpt-4o-mini"] and facets["text_search"] == "fts5"
    validator("Facets").validate(facets)


@pytest_twisted.ensureDeferred
async def test_pages_are_stable_while_captures_arrive(env: Env) -> None:
    first = [await env.chat(f"n{n}", stream=False) for n in range(5)]
    for capture_id in first:
        await indexed(env, capture_id)
    seen: list[str] = []
    code, page, _ = await env.get("/api/requests?limit=2")
    while True:
        seen += [i["id"] for i in page["items"]]
        if page["next_cursor"] is None:
            break
        newer = await env.chat("arrives meanwhile", stream=False)
        await indexed(env, newer)
        code, page, _ = await env.get(f"/api/requests?limit=2&cursor={page['next_cursor']}")
        assert code == 200
    assert seen == list(reversed(first))


@pytest_twisted.ensureDeferred
async def test_uploads_to_the_logging_site_are_indexed(env: Env) -> None:
    capture_id = str(uuid.uuid4())
    started = "2026-01-02T03:04:05.678901Z"
    doc = {
        "stream_type": "response",
        "metadata": {
            "id": capture_id,
            "route": "remote",
            "request_started_at": started,
            "response_status_code": 201,
        },
        "started_at": started,
    }
    response = await env.http.put(
        env.url(f"/{capture_id}/response"),
        data=b"HTTP/1.1 201 Created\r\n\r\nuploaded words",
        headers={"X-Logproxy-Metadata": json.dumps(doc)},
    )
    assert response.code == 201
    await response.content()
    detail = await indexed(env, capture_id, finished=False)
    assert detail["summary"]["route"] == "remote" and detail["summary"]["status"] == 201
    assert detail["summary"]["started_at"] == started
    assert await env.ids("?q=uploaded") == [capture_id]


# ---------------------------------------------------------------- raw bodies


@pytest_twisted.ensureDeferred
async def test_raw_bodies_with_range(env: Env) -> None:
    capture_id = await env.chat("range me", stream=False)
    await indexed(env, capture_id)
    files = await finished_capture(env.log_dir, capture_id)
    data = files["response"][0]
    code, body, response = await env.get(f"/api/requests/{capture_id}/response")
    assert code == 200 and body == data
    assert response.headers.getRawHeaders("content-type") == ["application/octet-stream"]
    assert response.headers.getRawHeaders("accept-ranges") == ["bytes"]
    code, body, _ = await env.get(f"/api/requests/{capture_id}/request")
    assert code == 200 and body == files["request"][0]
    cases = [
        ("bytes=0-9", 206, data[:10], f"bytes 0-9/{len(data)}"),
        ("bytes=10-", 206, data[10:], f"bytes 10-{len(data) - 1}/{len(data)}"),
        ("bytes=-5", 206, data[-5:], f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}"),
        ("bytes=5-100000", 206, data[5:], f"bytes 5-{len(data) - 1}/{len(data)}"),
        ("bytes=0-1,5-6", 200, data, None),  # several ranges: the whole file
        ("lines=1-2", 200, data, None),  # not bytes: ignored
    ]
    for header, status, expected, content_range in cases:
        code, body, response = await env.get(
            f"/api/requests/{capture_id}/response", headers={"Range": header}
        )
        assert (code, body) == (status, expected), header
        assert response.headers.getRawHeaders("content-range") == (
            [content_range] if content_range else None
        )
    code, error, response = await env.get(
        f"/api/requests/{capture_id}/response", headers={"Range": f"bytes={len(data)}-"}
    )
    assert code == 416 and "error" in error
    assert response.headers.getRawHeaders("content-range") == [f"bytes */{len(data)}"]
    body_only = data.partition(b"\r\n\r\n")[2]
    code, body, _ = await env.get(f"/api/requests/{capture_id}/response?body=1")
    assert code == 200 and body == body_only
    code, body, _ = await env.get(
        f"/api/requests/{capture_id}/response?body=1", headers={"Range": "bytes=0-3"}
    )
    assert code == 206 and body == body_only[:4]
    response = await env.http.head(env.url(f"/api/requests/{capture_id}/response"))
    assert response.code == 200 and await response.content() == b""
    assert response.headers.getRawHeaders("content-length") == [str(len(data))]


# ---------------------------------------------------------------- events and tail


@pytest_twisted.ensureDeferred
async def test_events_start_progress_end(env: Env) -> None:
    client = await raw_get(env.port, "/api/events")
    await client.wait_received(b": connected")
    assert b"200 OK" in client.received and b"text/event-stream" in client.received
    capture_id = await env.chat("stream slowly", chunks=6, interval=0.15)

    def ended() -> bool:
        return any(
            e["event"] == "end" and json.loads(e["data"])["id"] == capture_id
            for e in sse_events(body_of(client))
        )

    await wait_for(ended, 5, "the end event")
    events = [e for e in sse_events(body_of(client)) if json.loads(e["data"])["id"] == capture_id]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end", kinds
    assert kinds.count("progress") >= 3, kinds  # the response opened, then its body grew
    sizes = [json.loads(e["data"])["summary"]["response_bytes"] or 0 for e in events]
    assert sizes[-1] > sizes[1] and sizes == sorted(sizes)
    seqs = [int(e["id"].split("-")[1]) for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    validator("ListItem").validate(json.loads(events[-1]["data"]))
    # a reconnect with Last-Event-ID gets what it missed
    again = await raw_get(env.port, "/api/events", {"Last-Event-ID": events[0]["id"]})
    await again.wait_received(b"event: end")
    replayed = [e["event"] for e in sse_events(body_of(again))]
    assert replayed[-1] == "end" and "start" not in replayed
    # filters: nothing for another route
    filtered = await raw_get(env.port, "/api/events?route=other")
    await filtered.wait_received(b": connected")
    other = await env.chat("not for you", stream=False)
    await indexed(env, other)
    assert sse_events(body_of(filtered)) == []
    assert env.bus.subscriber_count == 3
    for peer in (client, again, filtered):
        peer.transport.loseConnection()
        await peer.lost_d
    await wait_for(lambda: env.bus.subscriber_count == 0, 2, "unsubscribed")
    assert env.bus._keepalive is None


@pytest_twisted.ensureDeferred
async def test_keepalive_comments(env: Env) -> None:
    env.bus.keepalive_interval = 0.05
    client = await raw_get(env.port, "/api/events")
    await client.wait_received(b": keep-alive\n\n")
    client.transport.loseConnection()
    await client.lost_d
    await wait_for(lambda: env.bus._keepalive is None, 2, "the keep-alive timer to stop")


@pytest_twisted.ensureDeferred
async def test_tail_of_a_stream_in_flight(env: Env) -> None:
    proxied = Deferred.fromCoroutine(env.chat("tail me", chunks=8, interval=0.12))
    capture_id = await until(lambda: env.ids("?status=inflight"), 5, "the capture to start")
    capture_id = capture_id[0]
    tail = await raw_get(env.port, f"/api/requests/{capture_id}/tail")
    await tail.wait_received(b"\r\n\r\n")
    head = bytes(tail.received).partition(b"\r\n\r\n")[0]
    assert b"200 OK" in head and b"X-Logproxy-Content-Type: text/event-stream" in head
    assert b"X-Logproxy-Status: 200" in head
    sizes: list[int] = []

    def grew() -> bool:
        sizes.append(len(body_of(tail)))
        return len(set(sizes)) >= 3

    await wait_for(grew, 5, "the tail to grow")
    assert not proxied.called  # it grew while the stream was still running
    await proxied
    await tail.lost_d  # the tail ends when the capture ends
    files = await finished_capture(env.log_dir, capture_id)
    assert body_of(tail) == files["response"][0].partition(b"\r\n\r\n")[2]
    assert env.bus.watcher_count == 0


@pytest_twisted.ensureDeferred
async def test_tail_of_a_finished_capture_and_unknown_ids(env: Env) -> None:
    capture_id = await env.chat("done already", stream=False)
    await indexed(env, capture_id)
    code, body, response = await env.get(f"/api/requests/{capture_id}/tail")
    files = await finished_capture(env.log_dir, capture_id)
    assert code == 200 and body == files["response"][0].partition(b"\r\n\r\n")[2]
    assert response.headers.getRawHeaders("x-logproxy-content-type") == [
        "application/json"
    ] or response.headers.getRawHeaders("x-logproxy-content-type")[0].startswith("application/json")
    missing = str(uuid.uuid4())
    for path in ("", "/tail", "/request", "/response"):
        code, error, _ = await env.get(f"/api/requests/{missing}{path}")
        assert code == 404 and error == {"error": "no such capture"}, path
    assert env.bus.watcher_count == 0


@pytest_twisted.ensureDeferred
async def test_clients_that_leave_leave_nothing_behind(env: Env) -> None:
    proxied = Deferred.fromCoroutine(env.chat("leave early", chunks=10, interval=0.1))
    capture_id = (await until(lambda: env.ids("?status=inflight"), 5, "a capture"))[0]
    tail = await raw_get(env.port, f"/api/requests/{capture_id}/tail")
    events = await raw_get(env.port, "/api/events")
    await tail.wait_received(b"\r\n\r\n")
    await events.wait_received(b"event: progress")
    assert env.bus.watcher_count == 1 and env.bus.subscriber_count == 1
    tail.transport.abortConnection()
    events.transport.abortConnection()
    await wait_for(
        lambda: env.bus.watcher_count == 0 and env.bus.subscriber_count == 0, 2, "cleanup"
    )
    await proxied  # the proxied stream is not affected
    await indexed(env, capture_id)


@pytest_twisted.ensureDeferred
async def test_a_client_that_does_not_read_is_dropped(env: Env) -> None:
    env.service.logserver_port.factory.api.sse_max_backlog = 256 * 1024
    client = await raw_get(env.port, "/api/events")
    await client.wait_received(b": connected")
    client.transport.pauseProducing()  # stop reading: the socket buffers fill up
    payload = b'{"x":"' + b"y" * 100_000 + b'"}'
    for _ in range(400):  # 40 MB, far more than the socket buffers hold
        env.bus.publish("progress", payload)
        if env.bus.subscriber_count == 0:
            break
    assert env.bus.subscriber_count == 0  # dropped, not buffered without limit
    client.transport.resumeProducing()
    await client.lost_d


# ---------------------------------------------------------------- errors, auth, OpenAPI


@pytest_twisted.ensureDeferred
async def test_bad_requests(env: Env) -> None:
    for path, code in [
        ("/api/requests?status=teapot", 400),
        ("/api/requests?limit=0", 400),
        ("/api/requests?limit=x", 400),
        ("/api/requests?since=yesterday", 400),
        ("/api/requests?cursor=@@", 400),
        ("/api/requests?colour=red", 400),
        ("/api/requests/xyz!", 400),
        ("/api/requests/abc", 400),
        ("/api/events?q=x", 400),
        ("/api/nothing", 404),
        ("/api/requests/0000/what", 404),
    ]:
        got, body, _ = await env.get(path)
        assert got == code, path
        assert set(body) == {"error"} and "\n" not in body["error"], path
    response = await env.http.post(env.url("/api/requests"), data=b"{}")
    assert response.code == 405 and response.headers.getRawHeaders("allow") == ["GET, HEAD"]
    await response.content()
    code, body, _ = await env.get("/api/requests?q=nothing-matches")
    assert code == 200 and body == {"items": [], "next_cursor": None}
    for path, status in (("/api/events", 200), (f"/api/requests/{uuid.uuid4()}/tail", 404)):
        response = await env.http.head(env.url(path))  # answered, not a stream left open
        assert response.code == status, path
        await response.content()
    assert env.bus.subscriber_count == 0 and env.bus.watcher_count == 0


@pytest_twisted.ensureDeferred
async def test_empty_log_dir_lists_nothing(env: Env) -> None:
    assert not os.path.exists(index_path(env.log_dir))  # created with the first capture
    code, page, _ = await env.get("/api/requests")
    assert (code, page) == (200, {"items": [], "next_cursor": None})
    code, _, _ = await env.get(f"/api/requests/{uuid.uuid4()}")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_token_is_needed_everywhere_but_health(
    tmp_path: Path, mock_upstream: str, services: list[Any], http: HTTPClient
) -> None:
    env = start(tmp_path, mock_upstream, services, http, token="s3cret")
    capture_id = await env.chat("secret", stream=False)
    await indexed(env, capture_id)
    paths = [
        "/",
        "/static/app.js",
        "/api/requests",
        "/api/openapi.json",
        "/api/facets",
        f"/api/requests/{capture_id}",
        f"/api/requests/{capture_id}/response",
        f"/api/requests/{capture_id}/tail",
        "/api/events",
    ]
    for path in paths:
        peer = await raw_get(env.port, path)
        await peer.wait_received(b"\r\n\r\n")
        assert peer.received.startswith(b"HTTP/1.0 401 "), path
        assert b'WWW-Authenticate: Bearer realm="logproxy"' in peer.received
        peer.transport.loseConnection()
    browser = await raw_get(env.port, "/", {"Accept": "text/html,*/*"})
    await browser.lost_d
    assert browser.received.startswith(b"HTTP/1.0 401 ")
    assert b'<form method="get" action="/">' in browser.received  # asks for the token
    assert b"<script" not in browser.received
    wrong = await raw_get(env.port, "/api/requests", {"Authorization": "Bearer nope"})
    await wrong.lost_d
    assert wrong.received.startswith(b"HTTP/1.0 401 ")
    health = await raw_get(env.port, "/health")
    await health.lost_d
    assert health.received.startswith(b"HTTP/1.0 200 ")
    code, page, _ = await env.get("/api/requests")  # Bearer
    assert code == 200 and [i["id"] for i in page["items"]] == [capture_id]
    # ?token= works (EventSource, first page load) and sets a cookie for the UI's files
    response = await http.get(env.url("/api/requests?token=s3cret"))
    assert response.code == 200
    await response.content()
    cookie = response.headers.getRawHeaders("set-cookie")[0]
    assert cookie.startswith("logproxy_token=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "s3cret" not in cookie
    value = cookie.split(";")[0]
    with_cookie = await raw_get(env.port, "/api/requests", {"Cookie": value})
    await with_cookie.lost_d
    assert with_cookie.received.startswith(b"HTTP/1.0 200 ")
    wrong_bearer = await raw_get(
        env.port, "/api/requests", {"Cookie": value, "Authorization": "Bearer nope"}
    )
    await wrong_bearer.lost_d
    assert wrong_bearer.received.startswith(b"HTTP/1.0 401 ")  # what the client says wins
    events = await raw_get(env.port, "/api/events?token=s3cret")
    await events.wait_received(b": connected")
    events.transport.loseConnection()
    await events.lost_d


@pytest_twisted.ensureDeferred
async def test_openapi_document(env: Env) -> None:
    from openapi_spec_validator import validate

    code, doc, _ = await env.get("/api/openapi.json")
    assert code == 200 and doc["openapi"].startswith("3.1")
    validate(doc)
    assert {
        "/api/requests",
        "/api/requests/{id}",
        "/api/requests/{id}/request",
        "/api/requests/{id}/response",
        "/api/requests/{id}/tail",
        "/api/events",
        "/api/openapi.json",
    } <= set(doc["paths"])
    names = {p["name"] for p in doc["paths"]["/api/requests"]["get"]["parameters"]}
    assert names == {"route", "model", "status", "method", "q", "since", "until", "cursor", "limit"}


# ---------------------------------------------------------------- the UI's files


@pytest_twisted.ensureDeferred
async def test_ui_files_and_the_json_root(
    tmp_path: Path, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    static = Path(site_module.STATIC_DIR)
    code, body, response = await env.get("/")
    if (static / "index.html").exists():
        assert code == 200 and body == (static / "index.html").read_bytes()
        headers = response.headers
        assert headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
        assert headers.getRawHeaders("cache-control") == ["no-cache"]
        assert "script-src 'self'" in headers.getRawHeaders("content-security-policy")[0]
        assert headers.getRawHeaders("referrer-policy") == ["no-referrer"]
    for name, content_type in (("app.js", "text/javascript"), ("app.css", "text/css")):
        if (static / name).exists():
            code, body, response = await env.get(f"/static/{name}")
            assert code == 200 and body == (static / name).read_bytes()
            assert response.headers.getRawHeaders("content-type")[0].startswith(content_type)
    for path in ("/static/", "/static/../site.py", "/static/%2e%2e/site.py", "/static/.hidden"):
        code, _, _ = await env.get(path)
        assert code == 404, path
    # without the UI's files, / describes the service
    empty = tmp_path / "no-ui"
    empty.mkdir()
    monkeypatch.setattr(site_module, "STATIC_DIR", str(empty))
    other = start(tmp_path / "other", "http://127.0.0.1:9", [], env.http)
    try:
        code, body, _ = await other.get("/")
        assert code == 200 and body["api"] == "/api/requests"
        assert body["openapi"] == "/api/openapi.json" and body["health"] == "/health"
    finally:
        await other.service.stopService()


# ---------------------------------------------------------------- restart, reindex


@pytest_twisted.ensureDeferred
async def test_restart_reconciles_and_reindex_needs_the_service_stopped(
    tmp_path: Path, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    from logproxy.cli import main

    env = start(tmp_path, mock_upstream, services, http)
    ids = [await env.chat(f"before {n}", stream=False) for n in range(3)]
    for capture_id in ids:
        await indexed(env, capture_id)
    assert main(["reindex", "--log-dir", env.log_dir]) == 1  # the service holds the index
    services.remove(env.service)
    await env.service.stopService()
    # captures the index does not know about: the index file lost, files added
    os.unlink(index_path(env.log_dir))
    for suffix in ("-wal", "-shm"):
        if os.path.exists(index_path(env.log_dir) + suffix):
            os.unlink(index_path(env.log_dir) + suffix)
    again = start(tmp_path, mock_upstream, services, http)
    await until(lambda: again.ids(), 5, "the reconcile")
    assert await again.ids() == list(reversed(ids))
    assert await again.ids("?q=before") == list(reversed(ids))
    services.remove(again.service)
    await again.service.stopService()
    assert main(["reindex", "--log-dir", env.log_dir, "-q"]) == 0
    third = start(tmp_path, mock_upstream, services, http)
    assert await third.ids() == list(reversed(ids))


def test_reindex_command_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_index import Capture

    from logproxy.cli import main

    log_dir = tmp_path / "logs"
    for n in range(3):
        Capture(log_dir, time.time() - n).whole(text=f"w{n}")
    assert main(["reindex", "--log-dir", str(log_dir)]) == 0
    err = capsys.readouterr().err
    assert "indexed 3 captures" in err and "text search: fts5" in err
    assert os.path.exists(index_path(str(log_dir)))
    assert main(["reindex", "--log-dir", str(tmp_path / "missing")]) == 1
    assert "cannot read log directory" in capsys.readouterr().err


# ---------------------------------------------------------------- start-up refusal


def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    """The config check, end to end through twistd: one line, non-zero exit."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"logging_server:\n  host: 0.0.0.0\n  port: {free_port()}\nlogging:\n  log_dir: logs\n"
    )
    twistd = Path(sys.executable).parent / "twistd"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(twistd), "-n", "--pidfile=", "logproxy", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "logging_server.token" in lines[0] and "0.0.0.0" in lines[0]
    assert not (tmp_path / "logs").exists()


@pytest_twisted.ensureDeferred
async def test_shutdown_ends_event_streams_and_cuts_unfinished_tails(
    tmp_path: Path, mock_upstream: str, services: list[Any], http: HTTPClient
) -> None:
    env = start(tmp_path, mock_upstream, services, http, server={"shutdown_timeout": 0.2})
    proxied = Deferred.fromCoroutine(env.chat("long", chunks=40, interval=0.1))
    capture_id = (await until(lambda: env.ids("?status=inflight"), 5, "a capture"))[0]
    tail = await raw_get(env.port, f"/api/requests/{capture_id}/tail")
    events = await raw_get(env.port, "/api/events")
    await tail.wait_received(b"data: ")
    await events.wait_received(b": connected")
    services.remove(env.service)
    stopping = env.service.stopService()
    await events.lost_d
    assert events.lost_reason is not None
    assert "ConnectionDone" in repr(events.lost_reason.value)  # a clean end
    await tail.lost_d
    assert tail.lost_reason is not None and "ConnectionLost" in repr(tail.lost_reason.value)
    await stopping
    with pytest.raises(ResponseFailed):
        await proxied  # cut at shutdown_timeout
