"""Faults in flight and flow control, provoked for real over loopback sockets."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest_twisted
from support import (
    RawPeer,
    RawServer,
    connect_raw,
    finished_capture,
    make_config,
    split_bin,
    start_service,
    wait_for,
    with_timeout,
)
from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


def raw_proxy(tmp_path: Any, services: list[Any], upstream: RawServer, **route: Any) -> Any:
    config = make_config(
        tmp_path, {"raw": {"pattern": "/raw/", "destination": upstream.url, **route}}
    )
    service = start_service(config)
    services.append(service)
    return service


def log_dir(tmp_path: Any) -> str:
    return str(tmp_path / "logs")


def capture_id_of(raw: bytes) -> str:
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"x-logproxy-id: "):
            return line.split(b": ", 1)[1].decode()
    raise AssertionError("no X-Logproxy-Id")


async def request_through(proxy: Any, upstream: RawServer, head: bytes) -> tuple[RawPeer, RawPeer]:
    client = await connect_raw(proxy.proxy_port.getHost().port)
    client.transport.write(head)
    peer = await with_timeout(upstream.peer_d, 5, "upstream connection")
    await peer.wait_received(b"\r\n\r\n")
    return client, peer


@pytest_twisted.ensureDeferred
async def test_client_disconnect_mid_stream_cancels_upstream(
    tmp_path: Any, services: list[Any]
) -> None:
    upstream = RawServer()
    try:
        proxy = raw_proxy(tmp_path, services, upstream)
        client, peer = await request_through(
            proxy, upstream, b"GET /raw/sse HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        peer.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"f\r\ndata: event 1\n\n\r\n"
        )
        await client.wait_received(b"data: event 1\n\n")
        capture_id = capture_id_of(client.received)
        client.transport.abortConnection()
        # the upstream connection is closed promptly
        await with_timeout(peer.lost_d, 1, "upstream connection to close within a second")
        capture = await finished_capture(log_dir(tmp_path), capture_id)
        body, meta = capture["response"]
        assert split_bin(body)[2] == b"data: event 1\n\n"  # every byte seen so far is kept
        assert meta["completed"] is False
        assert meta["error"] == "client disconnected"
    finally:
        await upstream.close()


@pytest_twisted.ensureDeferred
async def test_client_disconnect_during_upload_cancels_upstream(
    tmp_path: Any, services: list[Any]
) -> None:
    upstream = RawServer()
    try:
        proxy = raw_proxy(tmp_path, services, upstream)
        client, peer = await request_through(
            proxy,
            upstream,
            b"POST /raw/up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 40,
        )
        await peer.wait_received(b"a" * 40)
        client.transport.abortConnection()
        await with_timeout(peer.lost_d, 1, "upstream connection to close within a second")
        ids = await wait_for(lambda: list((tmp_path / "logs").glob("*/*_request_metadata.json")))
        capture_id = ids[0].name.split("_")[2]
        capture = await finished_capture(log_dir(tmp_path), capture_id)
        body, meta = capture["request"]
        assert split_bin(body)[2] == b"a" * 40
        assert meta["completed"] is False and meta["error"] == "client disconnected"
        assert capture["response"][1]["error"] == "client disconnected"
    finally:
        await upstream.close()


@pytest_twisted.ensureDeferred
async def test_upstream_dying_mid_response_aborts_the_client(
    tmp_path: Any, services: list[Any]
) -> None:
    upstream = RawServer()
    try:
        proxy = raw_proxy(tmp_path, services, upstream)
        client, peer = await request_through(
            proxy, upstream, b"GET /raw/big HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        peer.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await client.wait_received(b"hello")
        peer.transport.abortConnection()
        await with_timeout(client.lost_d, 2, "client connection to be dropped")
        # never a clean end of a truncated body: no terminating chunk
        assert not client.received.endswith(b"0\r\n\r\n")
        capture = await finished_capture(log_dir(tmp_path), capture_id_of(client.received))
        meta = capture["response"][1]
        assert meta["completed"] is False
        assert meta["error"].startswith("upstream connection lost")
    finally:
        await upstream.close()


@pytest_twisted.ensureDeferred
async def test_response_timeout_gives_504(tmp_path: Any, services: list[Any]) -> None:
    upstream = RawServer()
    try:
        proxy = raw_proxy(tmp_path, services, upstream, response_timeout=0.2)
        client, peer = await request_through(
            proxy, upstream, b"GET /raw/slow HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await client.wait_received(b"proxy_error")
        assert client.received.startswith(b"HTTP/1.1 504 Gateway Time-out\r\n")
        assert b"no response headers within 0.2 s" in client.received
        await with_timeout(peer.lost_d, 1, "upstream connection to close within a second")
        client.transport.loseConnection()
        await client.lost_d
    finally:
        await upstream.close()


@pytest_twisted.ensureDeferred
async def test_idle_timeout_aborts_a_stalled_stream(tmp_path: Any, services: list[Any]) -> None:
    upstream = RawServer()
    try:
        proxy = raw_proxy(tmp_path, services, upstream, idle_timeout=0.3)
        client, peer = await request_through(
            proxy, upstream, b"GET /raw/stall HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        peer.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await client.wait_received(b"abc")
        await with_timeout(client.lost_d, 3, "client connection to be dropped")
        assert not client.received.endswith(b"0\r\n\r\n")
        await with_timeout(peer.lost_d, 1, "upstream connection to close within a second")
        capture = await finished_capture(log_dir(tmp_path), capture_id_of(client.received))
        assert capture["response"][1]["error"] == "idle timeout"
    finally:
        await upstream.close()


@pytest_twisted.ensureDeferred
async def test_slow_but_steady_stream_is_not_cut(tmp_path: Any, services: list[Any]) -> None:
    """Events every 0.1 s under a 0.25 s idle timeout: the stream must not be cut."""
    upstream = RawServer()
    try:
        proxy = raw_proxy(tmp_path, services, upstream, idle_timeout=0.25)
        client, peer = await request_through(
            proxy, upstream, b"GET /raw/steady HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        peer.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for n in range(6):
            done = reactor.seconds() + 0.1
            await wait_for(
                lambda done=done: reactor.seconds() >= done, 2, "0.1 s"
            )  # pace the events
            peer.transport.write(b"2\r\n%02d\r\n" % n)
        peer.transport.write(b"0\r\n\r\n")
        await client.wait_received(b"0\r\n\r\n")
        assert client.lost_reason is None
        client.transport.loseConnection()
        await client.lost_d
    finally:
        await upstream.close()


@implementer(IPushProducer)
class Firehose:
    """Writes ``total`` bytes as fast as the transport takes them, honouring pauses.

    @ivar pauses: how often the consumer said "stop" (backpressure reached us).
    """

    def __init__(self, transport: Any, total: int, chunk: int = 65536) -> None:
        self.transport = transport
        self.left = total
        self.chunk = b"x" * chunk
        self.paused = False
        self.pauses = 0
        self.sent = 0
        transport.registerProducer(self, True)
        reactor.callLater(0, self.resumeProducing)

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left > 0:
            data = self.chunk[: self.left]
            self.left -= len(data)
            self.sent += len(data)
            self.transport.write(data)
        if self.left == 0 and not self.paused:
            self.transport.unregisterProducer()
            self.left = -1

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def stopProducing(self) -> None:
        self.left = -1


@pytest_twisted.ensureDeferred
async def test_slow_client_pauses_the_upstream(tmp_path: Any, services: list[Any]) -> None:
    """A client that stops reading stops the upstream: the bytes in flight stay bounded."""
    total = 64 << 20
    upstream = RawServer()
    try:
        proxy = raw_proxy(tmp_path, services, upstream)
        client, peer = await request_through(
            proxy, upstream, b"GET /raw/huge HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        client.transport.pauseProducing()  # the client stops reading
        peer.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        hose = Firehose(peer.transport, total)
        await wait_for(lambda: hose.paused and hose.sent > 0, 5, "upstream to be paused")
        # stays paused: poll a while and check nothing much more was produced
        sent = hose.sent
        until = reactor.seconds() + 0.3
        await wait_for(lambda: reactor.seconds() > until, 2)
        in_flight = hose.sent - len(client.received)
        print(f"in flight while the client is paused: {in_flight >> 20} MiB")
        assert hose.paused and hose.sent - sent < 8 << 20, (hose.sent, sent)
        assert in_flight < 32 << 20, f"{in_flight} bytes buffered between upstream and client"
        client.transport.resumeProducing()
        await wait_for(lambda: len(client.received) >= total, 20, "the whole body")
        assert hose.pauses >= 1
        client.transport.loseConnection()
        await client.lost_d
    finally:
        await upstream.close()


@pytest_twisted.ensureDeferred
async def test_slow_upstream_pauses_the_client_upload(tmp_path: Any, services: list[Any]) -> None:
    total = 64 << 20
    upstream = RawServer()
    try:
        proxy = raw_proxy(tmp_path, services, upstream, logging=False)
        client = await connect_raw(proxy.proxy_port.getHost().port)
        client.transport.write(
            b"POST /raw/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total
        )
        peer = await with_timeout(upstream.peer_d, 5, "upstream connection")
        peer.transport.pauseProducing()  # the upstream stops reading
        hose = Firehose(client.transport, total)
        await wait_for(lambda: hose.paused and hose.sent > 0, 5, "client upload to be paused")
        sent = hose.sent
        until = reactor.seconds() + 0.3
        await wait_for(lambda: reactor.seconds() > until, 2)
        assert hose.paused and hose.sent - sent < 8 << 20, (hose.sent, sent)
        assert hose.sent < 32 << 20, f"{hose.sent} bytes accepted while upstream read nothing"
        peer.transport.resumeProducing()
        await wait_for(lambda: len(peer.received) >= total, 20, "the whole upload upstream")
        peer.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await client.wait_received(b"HTTP/1.1 200 OK")
        client.transport.loseConnection()
        await client.lost_d
    finally:
        await upstream.close()


@pytest_twisted.ensureDeferred
async def test_graceful_shutdown_lets_streams_finish_then_aborts(
    tmp_path: Any,
) -> None:
    upstream = RawServer()
    try:
        config = make_config(
            tmp_path,
            {"raw": {"pattern": "/raw/", "destination": upstream.url}},
            server={"shutdown_timeout": 0.5},
        )
        proxy = start_service(config)
        port = proxy.proxy_port.getHost().port
        clients = []
        for n in range(3):
            client = await connect_raw(port)
            client.transport.write(b"GET /raw/%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            clients.append(client)
        await wait_for(
            lambda: (
                len(upstream.peers) == 3 and all(b"\r\n\r\n" in p.received for p in upstream.peers)
            ),
            5,
            "3 upstream requests",
        )
        for peer in upstream.peers:
            peer.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        stopped = proxy.stopService()
        # listeners close at once; the first stream finishes within the grace period
        first = next(p for p in upstream.peers if b"GET /0 " in p.received)
        first.transport.write(b"3\r\nend\r\n0\r\n\r\n")
        await clients[0].wait_received(b"end\r\n0\r\n\r\n")
        await with_timeout(stopped, 5, "shutdown")
        for client in clients[1:]:
            await with_timeout(client.lost_d, 2, "aborted client")
            assert not client.received.endswith(b"0\r\n\r\n")
        metas = [
            __import__("json").loads(p.read_text())
            for p in (tmp_path / "logs").glob("*/*_response_metadata.json")
        ]
        errors = sorted(str(m["error"]) for m in metas)
        assert errors == ["None", "shutdown", "shutdown"]
        clients[0].transport.loseConnection()
        await clients[0].lost_d
    finally:
        await upstream.close()


@pytest_twisted.ensureDeferred
async def test_connect_timeout_gives_502(tmp_path: Any, services: list[Any]) -> None:
    """An upstream whose accept queue is full drops the SYN: the connect hangs until
    connect_timeout, then the client gets a 502 (not a hang, not a 504)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):  # fill the accept queue; later SYNs are dropped
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        config = make_config(
            tmp_path,
            {
                "stuck": {
                    "pattern": "/stuck/",
                    "destination": f"http://127.0.0.1:{port}/",
                    "connect_timeout": 0.3,
                }
            },
        )
        service = start_service(config)
        services.append(service)
        client = await connect_raw(service.proxy_port.getHost().port)
        started = reactor.seconds()
        client.transport.write(b"GET /stuck/x HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.wait_received(b"proxy_error", timeout=5)
        assert client.received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
        assert b"timeout" in client.received.lower() or b"timed out" in client.received.lower()
        assert reactor.seconds() - started < 3
        client.transport.loseConnection()
        await client.lost_d
    finally:
        for sock in [*fillers, listener]:
            sock.close()


@pytest_twisted.ensureDeferred
async def test_a_stuck_writer_sheds_new_captures_not_requests(
    tmp_path: Any, mock_upstream: str, services: list[Any]
) -> None:
    """With the writer thread stuck (a slow disk), the backlog is bounded by buffer_size:
    new captures are skipped whole and counted, requests keep flowing, and captures resume
    once the writer drains."""
    import threading

    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    routes = {"helpers": {"pattern": "/helpers/", "destination": f"{mock_upstream}/mock/"}}
    service = start_service(make_config(tmp_path, routes, logging={"buffer_size": "64KiB"}))
    services.append(service)
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = HTTPClient(Agent(reactor, pool=pool))
    url = f"http://127.0.0.1:{service.proxy_port.getHost().port}/helpers/echo"
    release = threading.Event()
    service.writer.submit(lambda _: release.wait(10), None)  # the disk hangs
    for _ in range(40):
        response = await http.get(url)
        assert response.code == 200
        await response.content()
    text = service.metrics.render().decode()
    assert 'logproxy_capture_errors_total{kind="skipped"}' in text
    assert service.writer.backlog <= 64 * 1024
    release.set()
    await wait_for(lambda: service.writer.backlog == 0, 5, "the writer to drain")
    response = await http.get(url)
    capture_id = response.headers.getRawHeaders("X-Logproxy-Id")[0]
    await response.content()
    await finished_capture(str(tmp_path / "logs"), capture_id)  # captured again
    kept = {p.name.split("_")[2] for p in (tmp_path / "logs").glob("*/*_request.bin")}
    assert 1 < len(kept) < 41  # some skipped, some kept, none half-written
    for capture in kept:
        assert len(list((tmp_path / "logs").glob(f"*/*{capture}*"))) == 4


@pytest_twisted.ensureDeferred
async def test_the_writer_thread_does_not_preempt_the_reactor(
    tmp_path: Any, mock_upstream: str, services: list[Any]
) -> None:
    """The capture writer runs as SCHED_BATCH (its wake-ups never preempt the reactor
    thread on a shared core); the reactor thread keeps the normal policy."""
    import os

    routes = {"helpers": {"pattern": "/helpers/", "destination": f"{mock_upstream}/mock/"}}
    service = start_service(make_config(tmp_path, routes))
    services.append(service)
    seen: list[int] = []
    service.writer.submit(lambda _: seen.append(os.sched_getscheduler(0)), None)
    await wait_for(lambda: seen, 5, "the writer to run the item")
    assert seen == [os.SCHED_BATCH]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
