"""Malformed requests on the HTTP front: a clear 4xx, the proxy keeps serving, and
nothing malformed (and no path outside the route's prefix) reaches the upstream.

``test_channel_*`` pin the Twisted 26.10 hooks ``logproxy/http/channel.py`` overrides,
driving a ``ProxyChannel`` over a ``StringTransport``. The rest run a real proxy in this
process over loopback sockets; the property test throws random request lines, headers,
paths and framings at it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    RawPeer,
    RawServer,
    connect_raw,
    make_config,
    proxy_url,
    raw_request,
    start_service,
    with_timeout,
)
from twisted.internet import reactor
from twisted.internet.testing import StringTransport
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web import http

from logproxy.http.channel import MalformedRequest, ProxyChannel

MAX = ProxyChannel.MAX_LENGTH
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def req(head: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    """A request from its request line and header lines (Host first)."""
    return b"\r\n".join([head, b"Host: proxy.test", *headers, b"", b""]) + body


def chunked_post(body: bytes, *headers: bytes) -> bytes:
    return req(b"POST /raw/upload HTTP/1.1", b"Transfer-Encoding: chunked", *headers, body=body)


# (id, request bytes, status, text in the answer's body). All are complete requests, so
# the proxy answers at once; none may reach the upstream.
CASES: list[tuple[str, bytes, int, bytes]] = [
    (
        "request-line-too-long",
        req(b"GET /raw/" + b"a" * MAX + b" HTTP/1.1"),
        414,
        b"URI Too Long: request line longer than 16384 bytes",
    ),
    (
        "request-line-too-long-unterminated",
        b"GET /raw/" + b"a" * (MAX + 100),
        414,
        b"URI Too Long: request line longer than 16384 bytes",
    ),
    (
        "header-line-too-long",
        req(b"GET /raw/x HTTP/1.1", b"X-Big: " + b"v" * MAX),
        431,
        b"Request Header Fields Too Large: header line longer than 16384 bytes",
    ),
    (
        "headers-too-large",
        req(b"GET /raw/x HTTP/1.1", *[b"X-H%d: %s" % (i, b"v" * 100) for i in range(200)]),
        431,
        b"Request Header Fields Too Large: request line and headers larger than 16384 bytes",
    ),
    (
        "too-many-headers",
        req(b"GET /raw/x HTTP/1.1", *[b"X-H%d: v" % i for i in range(500)]),
        431,
        b"Request Header Fields Too Large: more than 500 header fields",
    ),
    (
        "content-length-not-a-number",
        req(b"POST /raw/x HTTP/1.1", b"Content-Length: abc", body=b"abc"),
        400,
        b"Bad Request: invalid Content-Length",
    ),
    (
        "content-length-negative",
        req(b"POST /raw/x HTTP/1.1", b"Content-Length: -3", body=b"abc"),
        400,
        b"Bad Request: invalid Content-Length",
    ),
    (
        "content-length-list",
        req(b"POST /raw/x HTTP/1.1", b"Content-Length: 3, 3", body=b"abc"),
        400,
        b"Bad Request: invalid Content-Length",
    ),
    (
        "content-length-conflicting",
        req(b"POST /raw/x HTTP/1.1", b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"),
        400,
        b"Bad Request: more than one Content-Length",
    ),
    (
        "content-length-then-chunked",
        req(
            b"POST /raw/x HTTP/1.1",
            b"Content-Length: 5",
            b"Transfer-Encoding: chunked",
            body=b"0\r\n\r\n",
        ),
        400,
        b"Bad Request: conflicting Content-Length and Transfer-Encoding",
    ),
    (
        "chunked-then-content-length",
        req(
            b"POST /raw/x HTTP/1.1",
            b"Transfer-Encoding: chunked",
            b"Content-Length: 5",
            body=b"0\r\n\r\n",
        ),
        400,
        b"Bad Request: conflicting Content-Length and Transfer-Encoding",
    ),
    (
        "identity-and-content-length",
        req(
            b"POST /raw/x HTTP/1.1",
            b"Transfer-Encoding: identity",
            b"Content-Length: 3",
            body=b"abc",
        ),
        400,
        b"Bad Request: conflicting Content-Length and Transfer-Encoding",
    ),
    (
        "transfer-encoding-unsupported",
        req(b"POST /raw/x HTTP/1.1", b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
        400,
        b"Bad Request: unsupported Transfer-Encoding",
    ),
    (
        "chunk-size-not-hex",
        chunked_post(b"zz\r\nabc\r\n0\r\n\r\n"),
        400,
        b"Bad Request: malformed chunked request body",
    ),
    (
        "chunk-data-longer-than-size",
        chunked_post(b"3\r\nabcdef\r\n0\r\n\r\n"),
        400,
        b"Bad Request: malformed chunked request body",
    ),
    (
        "chunk-size-line-too-long",
        chunked_post(b"3;" + b"x" * 2000 + b"\r\nabc\r\n0\r\n\r\n"),
        400,
        b"Bad Request: malformed chunked request body",
    ),
    (
        "space-before-colon",
        req(b"POST /raw/x HTTP/1.1", b"Content-Length : 3", body=b"abc"),
        400,
        b"Bad Request: invalid header name",
    ),
    (
        "header-without-colon",
        req(b"GET /raw/x HTTP/1.1", b"X-No-Colon"),
        400,
        b"Bad Request: header line without a colon",
    ),
    (
        "nul-in-header-value",
        req(b"GET /raw/x HTTP/1.1", b"X-Nul: a\x00b"),
        400,
        b"Bad Request: control character in header value",
    ),
    (
        "bare-cr-in-header-value",
        req(b"GET /raw/x HTTP/1.1", b"X-Cr: a\rContent-Length: 3"),
        400,
        b"Bad Request: control character in header value",
    ),
    (
        "control-character-in-header-value",
        req(b"GET /raw/x HTTP/1.1", b"X-Ctl: a\x1bb"),
        400,
        b"Bad Request: control character in header value",
    ),
    (
        "invalid-method",
        req(b"G(T /raw/x HTTP/1.1"),
        400,
        b"Bad Request: invalid method",
    ),
    (
        "unsupported-version",
        req(b"GET /raw/x HTTP/2.0"),
        400,
        b"Bad Request: unsupported HTTP version",
    ),
    (
        "http-0.9-request-line",
        b"GET /raw/x\r\n\r\n",
        400,
        b"Bad Request: malformed request line",
    ),
    (
        "raw-0xff-in-path",
        req(b"GET /raw/\xff\xfe HTTP/1.1"),
        400,
        b"Bad Request: invalid character in request target",
    ),
    (
        "raw-0x80-in-path",  # Twisted 26.10 itself lets 0x7F-0xB0 through
        req(b"GET /raw/\x80\xa9 HTTP/1.1"),
        400,
        b"Bad Request: invalid character in request target",
    ),
    (
        "raw-del-in-path",
        req(b"GET /raw/\x7f HTTP/1.1"),
        400,
        b"Bad Request: invalid character in request target",
    ),
]

# Answered by the exchange rather than the channel (the request itself is well-formed).
PROXY_CASES: list[tuple[str, bytes, int, bytes]] = [
    (
        "absolute-form",
        req(b"GET http://127.0.0.1:1/raw/x HTTP/1.1"),
        400,
        b"Absolute-form and CONNECT requests are not served",
    ),
    (
        "connect",
        req(b"CONNECT 127.0.0.1:443 HTTP/1.1"),
        400,
        b"Absolute-form and CONNECT requests are not served",
    ),
    (
        "asterisk-form",
        req(b"OPTIONS * HTTP/1.1"),
        400,
        b"Absolute-form and CONNECT requests are not served",
    ),
    (
        "body-over-max-body-size",
        req(b"POST /raw/x HTTP/1.1", b"Content-Length: 1001", body=b"a" * 1001),
        413,
        b"request body larger than server.max_body_size (1000 bytes)",
    ),
]


def status_of(data: bytes) -> int | None:
    match = STATUS_LINE.match(bytes(data))
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- the channel


class RecordingRequest(http.Request):
    """Records what the application would see; answers 200 once the body is in."""

    seen: list[Any] = []

    def gotLength(self, length: int | None) -> None:
        self.seen.append(("request", self.channel._command, self.channel._path))
        super().gotLength(length)

    def connectionLost(self, reason: Failure) -> None:
        self.seen.append(("lost", reason.type))
        super().connectionLost(reason)

    def process(self) -> None:
        self.seen.append(("process",))
        self.setResponseCode(200)
        self.finish()


def channel() -> tuple[ProxyChannel, StringTransport, list[Any]]:
    RecordingRequest.seen = []
    chan = ProxyChannel()
    chan.requestFactory = RecordingRequest
    transport = StringTransport()
    chan.makeConnection(transport)
    return chan, transport, RecordingRequest.seen


@pytest.mark.parametrize(
    ("data", "status", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_channel_answers_malformed_input(data: bytes, status: int, text: bytes) -> None:
    chan, transport, seen = channel()
    chan.dataReceived(data + req(b"GET /raw/after HTTP/1.1"))  # ignored: after the answer
    answer = transport.value()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(answer) == status
    assert b"\r\nConnection: close\r\n" in head + b"\r\n"
    assert b"Content-Length: %d" % len(body) in head
    assert body.startswith(text) and body.endswith(b"\n") and body.count(b"\n") == 1
    assert transport.disconnecting and not transport.disconnected  # closed, not aborted
    assert ("process",) not in seen
    assert ("request", b"GET", b"/raw/after") not in seen


def test_channel_limits_are_twisteds() -> None:
    assert MAX == 16384 == http.HTTPChannel.MAX_LENGTH
    assert ProxyChannel.totalHeadersSize == 16384 and ProxyChannel.maxHeaders == 500
    # A request line of exactly MAX_LENGTH bytes is not 414 (Twisted counts it in the
    # 16 KiB header budget too, so it has to come without headers).
    line = b"GET /" + b"a" * (MAX - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == MAX
    chan, transport, seen = channel()
    chan.dataReceived(line + b"\r\n\r\n")
    assert status_of(transport.value()) == 200
    assert ("process",) in seen


def test_channel_good_requests_pass_unchanged() -> None:
    chan, transport, seen = channel()
    chan.dataReceived(
        req(b"POST /raw/a HTTP/1.1", b"Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n")
        + req(b"GET /raw/%2e%2e/%ff HTTP/1.1", b"X-Obs: \x80\xff")
        + b"\r\n"  # a stray empty line between requests is tolerated, as by Twisted
        + req(b"PUT /raw/b HTTP/1.0", b"Content-Length: 2", body=b"ok")
    )
    assert [event for event in seen if event[0] == "request"] == [
        ("request", b"POST", b"/raw/a"),
        ("request", b"GET", b"/raw/%2e%2e/%ff"),
        ("request", b"PUT", b"/raw/b"),
    ]
    assert re.findall(rb"HTTP/1\.[01] 200 OK", transport.value()) == [b"HTTP/1.1 200 OK"] * 2 + [
        b"HTTP/1.0 200 OK"
    ]


def test_channel_tells_the_request_at_once_when_its_body_turns_out_malformed() -> None:
    chan, transport, seen = channel()
    chan.dataReceived(req(b"POST /raw/a HTTP/1.1", b"Transfer-Encoding: chunked"))
    chan.dataReceived(b"3\r\nabc\r\n")
    assert seen == [("request", b"POST", b"/raw/a")]
    chan.dataReceived(b"zz\r\n")
    # Before the transport reports the connection lost, and only once.
    assert seen[1:] == [("lost", MalformedRequest)]
    assert status_of(transport.value()) == 400
    assert transport.disconnecting and not transport.disconnected  # the 400 is flushed first
    chan.connectionLost(Failure(ConnectionError("gone")))
    assert seen[1:] == [("lost", MalformedRequest)]


def test_channel_aborts_when_the_application_already_answers() -> None:
    chan, transport, _ = channel()
    chan.dataReceived(req(b"POST /raw/a HTTP/1.1", b"Transfer-Encoding: chunked"))
    request = chan.requests[-1]
    request.setResponseCode(404)
    request.write(b"not found\n")  # e.g. an unmatched path, answered before the body ends
    answered = transport.value()
    chan.dataReceived(b"zz\r\n")
    assert transport.value() == answered  # no second status line after the 404
    assert transport.disconnected  # StringTransport's mark of abortConnection()


# --------------------------------------------------------------------------- the proxy


class UpstreamRequest(http.Request):
    """The test upstream: records each request it parses and answers 200 ``ok``."""

    def process(self) -> None:
        factory = self.channel.factory
        factory.seen.append((self.method, self.uri))
        if not all(0x21 <= byte <= 0x7E for byte in self.uri):
            factory.malformed.append(self.uri)
        self.setHeader(b"content-type", b"text/plain")
        self.write(b"ok")
        self.finish()


class UpstreamChannel(http.HTTPChannel):
    """Flags anything the upstream's own parser would refuse (it must never see any).

    Its size limits are above the proxy's: a request line just under the proxy's 16 KiB
    grows on the way (the destination's path, Host) but is still well-formed.
    """

    MAX_LENGTH = totalHeadersSize = 4 * ProxyChannel.MAX_LENGTH

    def connectionMade(self) -> None:
        super().connectionMade()
        self.raw = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        super().dataReceived(data)

    def headerReceived(self, line: bytes) -> bool:
        if any((byte < 0x20 and byte != 0x09) or byte == 0x7F for byte in line):
            self.factory.malformed.append(line)  # Twisted would refuse only NUL, CR, LF
        return bool(super().headerReceived(line))

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.factory.malformed.append(bytes(self.raw[-500:]))
        super()._respondToBadRequestAndDisconnect()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.factory.malformed.append(bytes(self.raw[:500]))
        super().lineLengthExceeded(line)


def _upstream_protocol(factory: http.HTTPFactory) -> Any:
    return http._GenericHTTPChannelProtocol(UpstreamChannel())


class Upstream(http.HTTPFactory):
    """An upstream on a loopback port that always answers 200 and records what arrives."""

    protocol = _upstream_protocol

    def __init__(self) -> None:
        super().__init__(reactor=reactor)
        self.seen: list[tuple[bytes, bytes]] = []
        self.malformed: list[bytes] = []
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = UpstreamRequest
        return protocol

    def startFactory(self) -> None:  # no access log, no log-clock timer
        pass

    def stopFactory(self) -> None:
        pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}/"


@pytest.fixture
def upstream() -> Generator[Upstream, None, None]:
    server = Upstream()
    yield server
    pytest_twisted.blockon(server.port.stopListening())


@pytest.fixture
def raw_upstream() -> Generator[RawServer, None, None]:
    server = RawServer()
    yield server
    pytest_twisted.blockon(server.close())


def start_proxy(tmp_path: Any, services: list[Any], base: str, mock: str | None = None) -> Any:
    routes: dict[str, Any] = {"raw": {"pattern": "/raw/", "destination": base + "base/"}}
    if mock is not None:
        routes["mock"] = {"pattern": "/mock/", "destination": f"{mock}/v1/"}
    service = start_service(make_config(tmp_path, routes, server={"max_body_size": 1000}))
    services.append(service)
    return service


async def exchange(port: int, data: bytes) -> RawPeer:
    """Send ``data`` on a new connection; return the peer once the proxy closed it."""
    peer: RawPeer = await connect_raw(port)
    peer.transport.write(data)
    await with_timeout(peer.lost_d, 5.0, "the proxy to close the connection")
    return peer


async def still_serving(proxy: Any) -> None:
    response, body = await raw_request(b"GET", proxy_url(proxy, "/mock/models"))
    assert response.code == 200 and b'"object"' in body


@pytest.mark.parametrize(
    ("data", "status", "text"),
    [c[1:] for c in CASES + PROXY_CASES],
    ids=[c[0] for c in CASES + PROXY_CASES],
)
@pytest_twisted.ensureDeferred
async def test_malformed_request_gets_4xx_and_nothing_reaches_upstream(
    tmp_path: Any,
    raw_upstream: RawServer,
    mock_upstream: str,
    services: list[Any],
    data: bytes,
    status: int,
    text: bytes,
) -> None:
    proxy = start_proxy(tmp_path, services, raw_upstream.url, mock_upstream)
    peer = await exchange(proxy.proxy_port.getHost().port, data)
    assert status_of(peer.received) == status, bytes(peer.received[:200])
    assert text in peer.received
    assert b"\r\nConnection: close\r\n" in peer.received
    await still_serving(proxy)  # on a new connection, after the bad one
    assert not raw_upstream.peers or all(not p.received for p in raw_upstream.peers)


@pytest_twisted.ensureDeferred
async def test_body_that_turns_malformed_midway_never_completes_upstream(
    tmp_path: Any, raw_upstream: RawServer, mock_upstream: str, services: list[Any]
) -> None:
    """Streaming: the upstream has the headers and first chunk before the bad one comes.
    It never sees the client's framing (the Agent re-chunks) nor a request end."""
    proxy = start_proxy(tmp_path, services, raw_upstream.url, mock_upstream)
    client: RawPeer = await connect_raw(proxy.proxy_port.getHost().port)
    client.transport.write(chunked_post(b"5\r\nfirst\r\n"))
    upstream: RawPeer = await with_timeout(raw_upstream.peer_d, 5.0, "the upstream connection")
    await upstream.wait_received(b"first")
    assert upstream.received.startswith(b"POST /base/upload HTTP/1.1\r\n")
    client.transport.write(b"6\r\nsecondXX\r\n0\r\n\r\n")
    await with_timeout(client.lost_d, 5.0, "the proxy to close the client connection")
    assert status_of(client.received) == 400
    assert b"malformed chunked request body" in client.received
    await with_timeout(upstream.lost_d, 5.0, "the upstream request to be aborted")
    assert b"second" not in upstream.received
    assert not upstream.received.endswith(b"0\r\n\r\n")
    await still_serving(proxy)


# (request target, status, what the upstream gets or the Location). Paths with dot
# segments, also percent-encoded, are redirected to the cleaned path; percent-escapes
# of bytes that are not UTF-8 and %2F inside a segment pass through unchanged.
PATHS: list[tuple[bytes, int, bytes]] = [
    (b"/raw/%ff%fe", 200, b"/base/%ff%fe"),
    (b"/raw/caf%C3%A9?q=%ff", 200, b"/base/caf%C3%A9?q=%ff"),
    (b"/raw/a%2fb", 200, b"/base/a%2fb"),
    (b"/raw/a%2F..%2F..%2Fb", 301, b"/b"),  # %2F counts as a separator for cleaning
    (b"/raw/%252e%252e/x", 200, b"/base/%252e%252e/x"),
    (b"/raw/%2e%2e/etc/passwd", 301, b"/etc/passwd"),
    (b"/raw/%2E%2e%2fetc", 301, b"/etc"),
    (b"/raw/..%2fetc", 301, b"/etc"),
    (b"/raw/..%2f..%2f..%2fetc", 301, b"/etc"),
    (b"/raw/x/%2e%2e/%2e%2e/", 301, b"/"),
    (b"/raw/./x", 301, b"/raw/x"),
    (b"/raw//x", 301, b"/raw/x"),
    (b"/raw/../raw/x", 301, b"/raw/x"),
    (b"/raw/%ff/../x?a=1", 301, b"/raw/x?a=1"),
    (b"/raw", 301, b"/raw/"),
    (b"/%ff%fe", 404, b""),
]


@pytest_twisted.ensureDeferred
async def test_paths_never_leave_the_route_prefix(
    tmp_path: Any, upstream: Upstream, services: list[Any]
) -> None:
    proxy = start_proxy(tmp_path, services, upstream.url)
    port = proxy.proxy_port.getHost().port
    for target, status, expected in PATHS:
        before = len(upstream.seen)
        peer = await exchange(port, req(b"GET " + target + b" HTTP/1.1", b"Connection: close"))
        assert status_of(peer.received) == status, (target, bytes(peer.received[:200]))
        if status == 200:
            assert upstream.seen[before:] == [(b"GET", expected)], target
        else:
            assert upstream.seen[before:] == [], target
        if status == 301:
            assert b"\r\nLocation: " + expected + b"\r\n" in peer.received, target
    assert all(uri.startswith(b"/base/") for _, uri in upstream.seen)
    assert upstream.malformed == []


# --------------------------------------------------------------------------- property


# Each part of a request is drawn either valid (if odd: percent-escapes of anything,
# dot segments, obs-text header values, all framings that agree) or broken (junk bytes,
# CR/LF/NUL injection, conflicting framing, oversize); about half the examples are
# broken in one part only, so most faults meet an otherwise good request.

TCHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE"]
token = st.binary(min_size=1, max_size=12).map(
    lambda raw: bytes(TCHARS[byte % len(TCHARS)] for byte in raw)
)
junk = st.binary(max_size=24)
good_method = st.one_of(st.sampled_from(METHODS), token)
bad_method = st.one_of(junk, st.sampled_from([b"", b"G T", b"GET\x00", b"GE\r\nT", b"\xff"]))

SEGMENTS = [
    b"", b".", b"..", b"%2e", b"%2E%2e", b"..%2f", b"%2e%2e%2f", b"%2f", b"%2F..", b"%ff",
    b"%fe%ff", b"%00", b"%0d%0a", b"%", b"%zz", b"%25", b"%252e%252e", b"a", b"v1", b";x=1",
    b"\\..", b"~", b"?", b"#", b"?a=../..", b"%3f", b"%23", b"http:", b"@", b"*",
]  # fmt: skip
visible = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=6)
good_segment = st.one_of(
    st.sampled_from(SEGMENTS),
    st.binary(max_size=6).map(lambda raw: b"".join(b"%%%02x" % byte for byte in raw)),
    visible.map(str.encode),
)
good_target = st.tuples(
    st.sampled_from([b"/raw/", b"/raw/", b"/raw/", b"/raw", b"/", b"/other/", b"//raw/"]),
    st.lists(good_segment, max_size=6),
).map(lambda parts: parts[0] + b"/".join(parts[1]))
bad_target = st.one_of(
    st.tuples(good_target, st.sampled_from([b"\x80", b"\xff", b" ", b"\t", b"\x7f", b"\x00"])).map(
        lambda parts: parts[0] + parts[1]
    ),
    st.sampled_from([b"", b"*", b"http://127.0.0.1/raw/x", b"127.0.0.1:443", b"raw/x"]),
    junk,
    st.integers(MAX - 40, MAX + 40).map(lambda n: b"/raw/" + b"a" * n),
)
good_version = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"])
bad_version = st.sampled_from([b"HTTP/2.0", b"HTTP/1.1 ", b"", b"http/1.1", b"HTTP/1.1\x00", b"x"])

value_byte = st.integers(0x20, 0xFF).filter(lambda byte: byte != 0x7F) | st.just(0x09)
good_header = st.tuples(
    token.map(lambda name: b"X-" + name),
    st.lists(value_byte, max_size=16).map(bytes),
)
INJECTIONS = [
    b"x\r\nContent-Length: 5",
    b"x\r\n\r\nGET /raw/../../etc HTTP/1.1\r\nHost: y",
    b"x\nTransfer-Encoding: chunked",
    b"x\ry",
    b"x\x00y",
    b"x\x1by",
    b"chunked",
    b"5",
    b"-1",
]
bad_header = st.tuples(
    st.one_of(
        st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"Host", b"X Y", b"X:", b""]),
        junk,
    ),
    st.one_of(st.sampled_from(INJECTIONS), junk),
)


@st.composite
def framed_body(draw: Any, good: bool) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Framing headers and body: none, Content-Length or chunked if ``good``; else
    Content-Length twice or junk, chunked broken, or both Content-Length and chunked."""
    body = draw(st.binary(max_size=40))
    size = str(len(body)).encode()
    chunked = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    te, cl = (b"Transfer-Encoding", b"chunked"), (b"Content-Length", size)
    if good:
        return draw(st.sampled_from([([], b""), ([cl], body), ([te], chunked)]))
    junk_length = draw(st.sampled_from([b"abc", b"1,1", b"+1", b"0x10", b"1 2"]))
    return draw(
        st.sampled_from(
            [
                ([te], b"%x\r\n" % (len(body) + 2) + body + b"\r\n0\r\n\r\n"),
                ([te], b"zz\r\n" + body),
                ([cl, te], chunked),
                ([te, cl], chunked),
                ([(b"Transfer-Encoding", b"identity"), cl], body),
                ([cl, (b"Content-Length", size + b"1")], body),
                ([(b"Content-Length", junk_length)], body),
                ([(b"Transfer-Encoding", b"gzip")], body),
            ]
        )
    )


@st.composite
def requests(draw: Any) -> tuple[bytes, bool]:
    """A request (bytes) and whether every part of it was drawn valid."""
    broken = draw(
        st.sets(st.sampled_from(["method", "target", "version", "header", "framing"]), max_size=2)
    )
    method = draw(bad_method if "method" in broken else good_method)
    path = draw(bad_target if "target" in broken else good_target)
    proto = draw(bad_version if "version" in broken else good_version)
    headers = draw(st.lists(good_header, max_size=3))
    if "header" in broken:
        headers.insert(draw(st.integers(0, len(headers))), draw(bad_header))
    framing, body = draw(framed_body("framing" not in broken))
    lines = [method + b" " + path + b" " + proto, b"Host: proxy.test"]
    lines += [name + b": " + value for name, value in [*headers, *framing]]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body, not broken


@pytest_twisted.ensureDeferred
async def test_random_requests_never_crash_5xx_or_escape_the_prefix(
    tmp_path: Any, upstream: Upstream, mock_upstream: str, services: list[Any]
) -> None:
    """Hypothesis throws requests at the running proxy over real sockets.

    The examples run in a thread with blocking sockets while the reactor serves the
    proxy and the upstream here (``@given`` cannot drive pytest-twisted's reactor
    directly). Each example opens a connection, sends, and reads the answer's head or
    the close. The upstream always answers 200, so any 5xx is the proxy's own.
    """
    proxy = start_proxy(tmp_path, services, upstream.url, mock_upstream)
    port = proxy.proxy_port.getHost().port
    errors: list[Any] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    def state() -> tuple[int, int, int]:
        return len(upstream.seen), len(upstream.malformed), len(errors)

    def new_since(before: tuple[int, int, int]) -> tuple[list[Any], list[Any], list[Any]]:
        seen, malformed, logged = before
        return upstream.seen[seen:], upstream.malformed[malformed:], errors[logged:]

    count = [0]

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests())
    def check(example: tuple[bytes, bool]) -> None:
        data, well_formed = example
        before = blockingCallFromThread(reactor, state)
        answer = send_blocking(port, data, well_formed)
        status = status_of(answer)
        if answer:
            assert status is not None, answer[:200]
        if status is not None:
            assert status < 500, answer[:300]
        if well_formed:
            assert status is not None, "no answer to a well-formed request"
        seen, malformed, logged = blockingCallFromThread(reactor, new_since, before)
        assert all(uri.startswith(b"/base/") for _, uri in seen), seen
        assert malformed == []
        assert logged == []
        count[0] += 1
        if count[0] % 10 == 0:
            still_serving_blocking(port)

    globalLogPublisher.addObserver(observe)
    try:
        await deferToThread(check)
        await still_serving(proxy)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert errors == []  # also from examples whose effects came late
    assert all(uri.startswith(b"/base/") for _, uri in upstream.seen)
    assert upstream.malformed == []
    assert upstream.seen  # some examples did reach the upstream


def send_blocking(port: int, data: bytes, well_formed: bool) -> bytes:
    """Send ``data`` on a new connection; return what came back up to the answer's head.

    Malformed input is answered at once. An incomplete request is rightly waited on by
    the proxy, so for those the client half-closes after a moment and reads on.
    """
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        with contextlib.suppress(OSError):  # the proxy may close while we still send
            sock.sendall(data)
        if not _read_head(sock, received, 5.0 if well_formed else 0.3):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            assert _read_head(sock, received, 5.0), "no answer and no close after EOF"
    return bytes(received)


def _read_head(sock: socket.socket, received: bytearray, timeout: float) -> bool:
    """Read until the answer's head is in or the connection closed; False on timeout."""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in received:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:  # reset: the proxy closed with our bytes unread
            return True
        if not data:
            return True
        received += data
    return True


def still_serving_blocking(port: int) -> None:
    answer = send_blocking(port, req(b"GET /mock/models HTTP/1.1", b"Connection: close"), True)
    assert status_of(answer) == 200, answer[:300]
