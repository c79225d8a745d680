"""The proxy end to end in one process: real loopback sockets, the mock upstream, real files."""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Any

import pytest_twisted
from support import (
    RawServer,
    connect_raw,
    finished_capture,
    make_config,
    proxy_url,
    raw_request,
    split_bin,
    start_service,
    wait_for,
    with_timeout,
)
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred

KEY = "sk-test-0123456789abcdefghijWXYZ"


def mock_routes(upstream: str, **extra: Any) -> dict[str, Any]:
    return {
        "mock": {"pattern": "/mock/", "destination": f"{upstream}/v1/", **extra},
        "helpers": {"pattern": "/helpers/", "destination": f"{upstream}/mock/"},
    }


def start_proxy(tmp_path: Any, services: list[Any], routes: dict[str, Any], **kw: Any) -> Any:
    service = start_service(make_config(tmp_path, routes, **kw))
    services.append(service)
    return service


def log_dir(tmp_path: Any) -> str:
    return str(tmp_path / "logs")


@pytest_twisted.ensureDeferred
async def test_chat_completion_is_relayed_and_captured(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    proxy = start_proxy(tmp_path, services, mock_routes(mock_upstream))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    response = await http.post(
        proxy_url(proxy, "/mock/chat/completions?x=1"),
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.code == 200
    answer = await response.json()
    assert answer["choices"][0]["message"]["content"]
    capture_id = response.headers.getRawHeaders("X-Logproxy-Id")[0]

    capture = await finished_capture(log_dir(tmp_path), capture_id)
    request_bin, request_meta = capture["request"]
    start, headers, sent_body = split_bin(request_bin)
    port = mock_upstream.rsplit(":", 1)[1]
    assert start == f"POST http://127.0.0.1:{port}/v1/chat/completions?x=1 HTTP/1.1".encode()
    assert json.loads(sent_body) == body
    names = {name.lower(): value for name, value in headers}
    assert names[b"authorization"].startswith(b"<redacted>")
    assert KEY.encode() not in request_bin
    assert (
        names[b"x-proxy-path"]
        == proxy_url(proxy, "/mock/chat/completions?x=1").replace("127.0.0.1", "127.0.0.1").encode()
    )
    meta = request_meta["metadata"]
    assert meta["id"] == capture_id
    assert meta["route"] == "mock" and meta["pattern"] == "/mock/"
    assert request_meta["completed"] is True and request_meta["error"] is None
    assert request_meta["bytes_written"] == len(request_bin)
    assert request_meta["format_version"] == 1

    response_bin, response_meta = capture["response"]
    status, _, stored = split_bin(response_bin)
    assert status == b"HTTP/1.1 200 OK"
    assert json.loads(stored) == answer
    assert response_meta["metadata"]["response_status_code"] == 200
    assert response_meta["metadata"]["upstream_header_duration_ms"] > 0
    assert response_meta["bytes_written"] == len(response_bin)
    # the four names share the request's start time
    names_ = sorted(
        p.rsplit("/", 1)[1]
        for p in __import__("glob").glob(f"{log_dir(tmp_path)}/*/*{capture_id}*")
    )
    assert len(names_) == 4 and len({n.split("_")[0] + n.split("_")[1] for n in names_}) == 1


@pytest_twisted.ensureDeferred
async def test_headers_forwarded_hop_by_hop_dropped_host_rewritten(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    proxy = start_proxy(tmp_path, services, mock_routes(mock_upstream))
    response = await http.get(
        proxy_url(proxy, "/helpers/echo"),
        headers={
            "X-Repeated": ["one", "two"],
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "must not pass",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Upgrade": "websocket",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Host": "client.example",
        },
    )
    echo = await response.json()
    received = [(name.lower(), value) for name, value in echo["headers"]]
    names = {name for name, _ in received}
    for hop in ("connection", "x-secret-hop", "keep-alive", "te", "upgrade", "proxy-authorization"):
        assert hop not in names, hop
    assert [v for n, v in received if n == "x-repeated"] == ["one", "two"]
    assert dict(received)["host"] == mock_upstream.removeprefix("http://")
    assert echo["path"] == "/mock/echo"


@pytest_twisted.ensureDeferred
async def test_error_responses_carry_id_and_json(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    dead = reactor.listenTCP(
        0,
        __import__("twisted.internet.protocol", fromlist=["Factory"]).Factory(),
        interface="127.0.0.1",
    )
    dead_port = dead.getHost().port
    await dead.stopListening()
    routes = {
        "down": {"pattern": "/down/", "destination": f"http://127.0.0.1:{dead_port}/"},
        **mock_routes(mock_upstream),
    }
    proxy = start_proxy(tmp_path, services, routes, server={"not_found": "/404/"})

    response = await http.post(proxy_url(proxy, "/down/chat"), json={"a": 1})
    assert response.code == 502
    error = (await response.json())["error"]
    capture_id = response.headers.getRawHeaders("X-Logproxy-Id")[0]
    assert error["type"] == "proxy_error" and error["request_id"] == capture_id
    assert "refused" in error["message"].lower()
    capture = await finished_capture(log_dir(tmp_path), capture_id)
    assert capture["response"][0].startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert capture["response"][1]["error"] == error["message"]

    response = await http.get(proxy_url(proxy, "/nope/x"))
    assert response.code == 404
    assert await response.text() == "No route found for /nope/x\n"
    capture_id = response.headers.getRawHeaders("X-Logproxy-Id")[0]
    capture = await finished_capture(log_dir(tmp_path), capture_id)
    assert capture["request"][0].startswith(b"GET " + proxy_url(proxy, "/nope/x").encode())
    assert capture["response"][1]["metadata"]["route"] is None

    response = await http.get(proxy_url(proxy, "/404/anything"))
    assert response.code == 404
    await response.text()

    response = await http.get(proxy_url(proxy, "/mock?q=1"), allow_redirects=False)
    assert response.code == 301
    assert response.headers.getRawHeaders("Location") == ["/mock/?q=1"]
    assert response.headers.getRawHeaders("X-Logproxy-Id")
    await response.text()

    response = await http.get(proxy_url(proxy, "/mock/../helpers/echo"), allow_redirects=False)
    assert response.code == 301
    assert response.headers.getRawHeaders("Location") == ["/helpers/echo"]
    await response.text()


@pytest_twisted.ensureDeferred
async def test_method_not_allowed_and_bad_request_forms(
    tmp_path: Any, mock_upstream: str, services: list[Any]
) -> None:
    routes = {"models": {"pattern": "GET /models", "destination": f"{mock_upstream}/v1/models"}}
    proxy = start_proxy(tmp_path, services, routes)
    port = proxy.proxy_port.getHost().port
    client = await connect_raw(port)
    client.transport.write(b"POST /models HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    await client.wait_received(b"Method Not Allowed\n")
    assert b"HTTP/1.1 405 " in client.received and b"Allow: GET, HEAD" in client.received
    client.transport.write(b"GET /models HTTP/1.1\r\nHost: x\r\n\r\n")
    await client.wait_received(b'"object"')
    assert b"HTTP/1.1 200 OK" in client.received
    client.transport.loseConnection()
    await client.lost_d

    for line in (b"GET http://other.example/x HTTP/1.1", b"CONNECT other.example:443 HTTP/1.1"):
        client = await connect_raw(port)
        client.transport.write(line + b"\r\nHost: other.example\r\n\r\n")
        await client.lost_d
        assert client.received.startswith(b"HTTP/1.1 400 Bad Request\r\n")


@pytest_twisted.ensureDeferred
async def test_request_body_streams_upstream_before_client_finishes(
    tmp_path: Any, services: list[Any]
) -> None:
    upstream = RawServer()
    try:
        proxy = start_proxy(
            tmp_path, services, {"raw": {"pattern": "/raw/", "destination": upstream.url}}
        )
        client = await connect_raw(proxy.proxy_port.getHost().port)
        client.transport.write(
            b"POST /raw/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"6\r\nfirst-\r\n"
        )
        peer = await with_timeout(upstream.peer_d, 5, "upstream connection")
        # Upstream sees the headers and the first chunk while the client is still sending.
        await peer.wait_received(b"first-")
        assert b"POST /upload HTTP/1.1" in peer.received
        assert b"second" not in peer.received
        client.transport.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await peer.wait_received(b"second")
        await peer.wait_received(b"0\r\n\r\n")
        peer.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await client.wait_received(b"\r\n\r\nok")
        client.transport.loseConnection()
        await client.lost_d
    finally:
        await upstream.close()


@pytest_twisted.ensureDeferred
async def test_sse_events_reach_the_client_one_by_one(tmp_path: Any, services: list[Any]) -> None:
    """Upstream sends event 2 only after the client has seen event 1: a proxy that held
    events back would deadlock here (and the test would time out)."""
    upstream = RawServer()
    try:
        proxy = start_proxy(
            tmp_path, services, {"raw": {"pattern": "/raw/", "destination": upstream.url}}
        )
        client = await connect_raw(proxy.proxy_port.getHost().port)
        client.transport.write(b"GET /raw/events HTTP/1.1\r\nHost: x\r\n\r\n")
        peer = await with_timeout(upstream.peer_d, 5, "upstream connection")
        await peer.wait_received(b"\r\n\r\n")
        peer.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for n in range(1, 4):
            event = b"data: event %d\n\n" % n
            peer.transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            await client.wait_received(event, timeout=5)
            assert b"event %d" % (n + 1) not in client.received
        peer.transport.write(b"0\r\n\r\n")
        await client.wait_received(b"0\r\n\r\n")
        assert client.received.count(b"data: event") == 3
        capture_id = _header(client.received, b"X-Logproxy-Id")
        client.transport.loseConnection()
        await client.lost_d
        capture = await finished_capture(log_dir(tmp_path), capture_id)
        assert split_bin(capture["response"][0])[2] == b"".join(
            b"data: event %d\n\n" % n for n in range(1, 4)
        )
    finally:
        await upstream.close()


def _header(raw: bytes, name: bytes) -> str:
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        key, _, value = line.partition(b": ")
        if key.lower() == name.lower():
            return value.decode()
    raise AssertionError(f"no {name!r} header")


@pytest_twisted.ensureDeferred
async def test_gzip_both_ways_passes_through_and_is_captured_decoded(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    proxy = start_proxy(tmp_path, services, mock_routes(mock_upstream))
    body = json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "zip me " * 50}],
            "mock": {"gzip": True},
        }
    ).encode()
    compressed = gzip.compress(body)
    response, raw = await raw_request(
        b"POST",
        proxy_url(proxy, "/mock/chat/completions"),
        {b"Content-Type": [b"application/json"], b"Content-Encoding": [b"gzip"]},
        compressed,
    )
    assert response.code == 200
    assert response.headers.getRawHeaders(b"Content-Encoding") == [b"gzip"]
    answer = json.loads(gzip.decompress(raw))  # the client got the bytes as upstream sent them
    capture_id = response.headers.getRawHeaders(b"X-Logproxy-Id")[0].decode()
    capture = await finished_capture(log_dir(tmp_path), capture_id)

    request_bin, request_meta = capture["request"]
    _, headers, stored = split_bin(request_bin)
    assert stored == body
    assert b"content-encoding" not in {n.lower() for n, _ in headers}
    assert request_meta["metadata"]["request_content_encoding"] == "gzip"
    response_bin, response_meta = capture["response"]
    _, headers, stored = split_bin(response_bin)
    assert json.loads(stored) == answer
    assert b"content-encoding" not in {n.lower() for n, _ in headers}
    assert response_meta["metadata"]["response_content_encoding"] == "gzip"

    # upstream got the compressed bytes unchanged
    echo = await http.post(
        proxy_url(proxy, "/helpers/echo"),
        data=compressed,
        headers={"Content-Encoding": "gzip"},
    )
    assert (await echo.json())["body_sha256"] == hashlib.sha256(compressed).hexdigest()


@pytest_twisted.ensureDeferred
async def test_undecodable_body_is_stored_as_received(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    proxy = start_proxy(tmp_path, services, mock_routes(mock_upstream))
    response = await http.post(
        proxy_url(proxy, "/helpers/echo"),
        data=b"not gzip at all",
        headers={"Content-Encoding": "gzip"},
    )
    await response.content()
    capture_id = response.headers.getRawHeaders("X-Logproxy-Id")[0]
    capture = await finished_capture(log_dir(tmp_path), capture_id)
    _, headers, stored = split_bin(capture["request"][0])
    names = {n.lower(): v for n, v in headers}
    assert stored == b"not gzip at all"
    assert names[b"content-encoding"] == b"gzip"
    assert b"x-decompression-error" in names
    assert capture["request"][1]["decode_error"]


@pytest_twisted.ensureDeferred
async def test_redact_headers_replaces_the_default_list(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    proxy = start_proxy(
        tmp_path,
        services,
        mock_routes(mock_upstream),
        logging={"redact_headers": ["x-custom-secret"]},
    )
    response = await http.get(
        proxy_url(proxy, "/helpers/echo"),
        headers={"X-Custom-Secret": "hunter2hunter2", "Authorization": "Bearer visible"},
    )
    await response.content()
    capture_id = response.headers.getRawHeaders("X-Logproxy-Id")[0]
    capture = await finished_capture(log_dir(tmp_path), capture_id)
    request_bin = capture["request"][0]
    assert b"hunter2" not in request_bin
    assert b"X-Custom-Secret: <redacted>" in request_bin
    assert b"Authorization: Bearer visible" in request_bin


@pytest_twisted.ensureDeferred
async def test_route_with_logging_off_writes_nothing(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    routes = mock_routes(mock_upstream, logging=False)
    proxy = start_proxy(tmp_path, services, routes)
    response = await http.get(proxy_url(proxy, "/mock/models"))
    assert response.code == 200
    await response.content()
    response = await http.get(proxy_url(proxy, "/helpers/echo"))
    capture_id = response.headers.getRawHeaders("X-Logproxy-Id")[0]
    await response.content()
    await finished_capture(log_dir(tmp_path), capture_id)
    files = list((tmp_path / "logs").glob("*/*"))
    assert len(files) == 4 and all(capture_id in f.name for f in files)


@pytest_twisted.ensureDeferred
async def test_upstream_connections_are_reused(
    tmp_path: Any, http: HTTPClient, services: list[Any]
) -> None:
    upstream = RawServer()
    try:
        proxy = start_proxy(
            tmp_path, services, {"raw": {"pattern": "/raw/", "destination": upstream.url}}
        )
        for n in range(3):
            d = http.get(proxy_url(proxy, f"/raw/{n}"))
            await wait_for(
                lambda n=n: upstream.peers and f"GET /{n} ".encode() in upstream.peers[-1].received
            )
            upstream.peers[-1].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
            response = await d
            assert await response.content() == b"x"
        assert len(upstream.peers) == 1
    finally:
        await upstream.close()


@pytest_twisted.ensureDeferred
async def test_head_and_no_body_responses(
    tmp_path: Any, mock_upstream: str, services: list[Any]
) -> None:
    proxy = start_proxy(tmp_path, services, mock_routes(mock_upstream))
    client = await connect_raw(proxy.proxy_port.getHost().port)
    client.transport.write(b"HEAD /helpers/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    await client.wait_received(b"\r\n\r\n")
    client.transport.write(b"GET /helpers/status/204 HTTP/1.1\r\nHost: x\r\n\r\n")
    await client.wait_received(b"HTTP/1.1 204")
    await client.wait_received(b"\r\n\r\n", timeout=5)
    head, _, rest = client.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert rest.startswith(b"HTTP/1.1 204")  # nothing between: HEAD had no body
    client.transport.loseConnection()
    await client.lost_d


@pytest_twisted.ensureDeferred
async def test_http10_client_gets_a_close_delimited_body(
    tmp_path: Any, mock_upstream: str, services: list[Any]
) -> None:
    proxy = start_proxy(tmp_path, services, mock_routes(mock_upstream))
    client = await connect_raw(proxy.proxy_port.getHost().port)
    client.transport.write(b"GET /helpers/sse?events=3 HTTP/1.0\r\nHost: x\r\n\r\n")
    await with_timeout(client.lost_d, 5, "connection close")
    assert client.received.startswith(b"HTTP/1.0 200") or client.received.startswith(
        b"HTTP/1.1 200"
    )
    assert b"Transfer-Encoding" not in client.received
    assert client.received.count(b"data:") == 3


@pytest_twisted.ensureDeferred
async def test_expect_100_continue(tmp_path: Any, mock_upstream: str, services: list[Any]) -> None:
    proxy = start_proxy(tmp_path, services, mock_routes(mock_upstream))
    client = await connect_raw(proxy.proxy_port.getHost().port)
    client.transport.write(
        b"POST /helpers/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    await client.wait_received(b"HTTP/1.1 100 Continue\r\n\r\n")
    client.transport.write(b"hello")
    await client.wait_received(b'"body_len":5')
    client.transport.loseConnection()
    await client.lost_d


@pytest_twisted.ensureDeferred
async def test_max_body_size(tmp_path: Any, mock_upstream: str, services: list[Any]) -> None:
    proxy = start_proxy(
        tmp_path, services, mock_routes(mock_upstream), server={"max_body_size": 10}
    )
    port = proxy.proxy_port.getHost().port
    client = await connect_raw(port)
    client.transport.write(b"POST /helpers/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
    await with_timeout(client.lost_d, 5, "close after 413")
    assert client.received.startswith(b"HTTP/1.1 413 ")
    client = await connect_raw(port)
    client.transport.write(
        b"POST /helpers/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"8\r\n12345678\r\n8\r\n12345678\r\n"
    )
    await with_timeout(client.lost_d, 5, "close after 413")
    assert client.received.startswith(b"HTTP/1.1 413 ")
    capture_id = _header(client.received, b"X-Logproxy-Id")
    capture = await finished_capture(log_dir(tmp_path), capture_id)
    assert "max_body_size" in capture["request"][1]["error"]


async def _deferred_value(d: Deferred[Any]) -> Any:
    return await d


@pytest_twisted.ensureDeferred
async def test_host_header_rules(tmp_path: Any, mock_upstream: str, services: list[Any]) -> None:
    """RFC 9112 section 3.2: HTTP/1.1 needs exactly one Host (a host pattern routes on it)."""
    proxy = start_proxy(tmp_path, services, mock_routes(mock_upstream))
    port = proxy.proxy_port.getHost().port
    for head in (
        b"GET /helpers/echo HTTP/1.1\r\n\r\n",
        b"GET /helpers/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ):
        client = await connect_raw(port)
        client.transport.write(head)
        await with_timeout(client.lost_d, 5, "close after 400")
        assert client.received.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"X-Logproxy-Id: " in client.received
    client = await connect_raw(port)  # HTTP/1.0 without Host is fine
    client.transport.write(b"GET /helpers/echo HTTP/1.0\r\n\r\n")
    await with_timeout(client.lost_d, 5, "close after the answer")
    assert b" 200 OK\r\n" in client.received.split(b"\r\n", 1)[0] + b"\r\n"


@pytest_twisted.ensureDeferred
async def test_channel_rejections_carry_an_id_and_are_counted(
    tmp_path: Any, mock_upstream: str, services: list[Any]
) -> None:
    proxy = start_proxy(tmp_path, services, mock_routes(mock_upstream))
    client = await connect_raw(proxy.proxy_port.getHost().port)
    client.transport.write(b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n")
    await with_timeout(client.lost_d, 5, "close after 414")
    assert client.received.startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    assert b"X-Logproxy-Id: " in client.received
    text = proxy.metrics.render().decode()
    assert 'logproxy_requests_total{route="-",status="414"} 1.0' in text


@pytest_twisted.ensureDeferred
async def test_llm_calls_are_understood(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    """The capture side reads usage, timing and the reassembled reply (SPEC section 8)."""
    routes = {
        "mock": {"pattern": "/mock/", "destination": f"{mock_upstream}/v1/"},
        "claude": {"pattern": "/claude/", "destination": f"{mock_upstream}/"},
    }
    proxy = start_proxy(tmp_path, services, routes)
    chat = {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "two words"}],
        "mock": {"chunks": 3},
    }
    claude = {
        "model": "claude-x",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "hi there"}],
    }
    results = {}
    for path, body in (("/mock/chat/completions", chat), ("/claude/v1/messages", claude)):
        response = await http.post(proxy_url(proxy, path), json=body)
        assert response.code == 200
        await response.content()
        capture_id = response.headers.getRawHeaders("X-Logproxy-Id")[0]
        capture = await finished_capture(log_dir(tmp_path), capture_id)
        results[path] = capture["response"][1]["llm"]
    chat_llm = results["/mock/chat/completions"]
    assert chat_llm["api"] == "openai.chat" and chat_llm["stream"] is True
    assert chat_llm["output_text"] == "word1 word2 word3"
    assert chat_llm["usage"]["output_tokens"] == 3 and chat_llm["partial"] is False
    assert 0 < chat_llm["ttfb_ms"] <= chat_llm["ttft_ms"]
    claude_llm = results["/claude/v1/messages"]
    assert claude_llm["api"] == "anthropic.messages" and claude_llm["finish_reason"] == "end_turn"
    assert claude_llm["usage"]["input_tokens"] == 2
    text = proxy.metrics.render().decode()
    assert (
        'logproxy_llm_tokens_total{kind="output",model="gpt-4o-mini-mock-2025",route="mock"} 3.0'
        in text
    )
    assert 'logproxy_llm_calls_total{api="anthropic.messages"' in text


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest_twisted.ensureDeferred
async def test_upstream_by_ip_literal_or_host_name(
    tmp_path: Any, http: HTTPClient, services: list[Any]
) -> None:
    """IP literals are connected to directly, names resolved first: all reach the upstream."""
    from logproxy.mockllm import build_site

    v4 = reactor.listenTCP(0, build_site(reactor), interface="127.0.0.1")
    listeners = [v4]
    port = v4.getHost().port
    routes = {
        "literal": {"pattern": "/v4/", "destination": f"http://127.0.0.1:{port}/mock/"},
        "name": {"pattern": "/name/", "destination": f"http://localhost:{port}/mock/"},
    }
    if _ipv6_loopback():
        v6 = reactor.listenTCP(0, build_site(reactor), interface="::1")
        listeners.append(v6)
        routes["v6"] = {"pattern": "/v6/", "destination": f"http://[::1]:{v6.getHost().port}/mock/"}
    try:
        proxy = start_proxy(tmp_path, services, routes)
        for prefix in [r["pattern"] for r in routes.values()]:
            response = await http.get(proxy_url(proxy, f"{prefix}bytes?size=5"))
            assert response.code == 200, prefix
            assert len(await response.content()) == 5, prefix
    finally:
        for listener in listeners:
            await listener.stopListening()


def test_upstream_endpoints_skip_name_resolution_for_ip_literals() -> None:
    from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
    from twisted.web.client import URI, BrowserLikePolicyForHTTPS

    from logproxy.proxy.upstream import UpstreamEndpoints

    endpoints = UpstreamEndpoints(reactor, BrowserLikePolicyForHTTPS(), 3.0)
    kinds = {
        b"http://127.0.0.1:8080/": TCP4ClientEndpoint,
        b"http://[::1]:8080/": TCP6ClientEndpoint,
        b"http://localhost:8080/": HostnameEndpoint,
    }
    for url, kind in kinds.items():
        assert isinstance(endpoints.endpointForURI(URI.fromBytes(url)), kind), url
    tls = endpoints.endpointForURI(URI.fromBytes(b"https://127.0.0.1/"))
    assert not isinstance(tls, TCP4ClientEndpoint)  # wrapped in TLS
    assert isinstance(tls._wrappedEndpoint, TCP4ClientEndpoint)  # type: ignore[attr-defined]
