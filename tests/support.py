"""Shared helpers for the in-process integration tests (real loopback sockets, real files).

Everything here runs on the pytest-twisted reactor. Waiting is always polling for a
condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from logproxy.config import parse_config
from logproxy.service import LogproxyService


@inlineCallbacks
def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``predicate`` on the reactor until it returns something truthy."""
    deadline = reactor.seconds() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        yield deferLater(reactor, 0.005, lambda: None)


def with_timeout(d: Deferred[Any], timeout: float, what: str) -> Deferred[Any]:
    """Fail the test (not hang it) if ``d`` does not fire in time (``d`` is left alone)."""
    out: Deferred[Any] = Deferred()
    timer = reactor.callLater(timeout, lambda: out.called or out.errback(AssertionError(what)))

    def fire(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        if not out.called:
            out.callback(result)
        return result

    d.addBoth(fire)
    return out


def chromium() -> str:
    """Debian's Chromium for the browser tests: skipped where it is not installed, but a
    failure under CI (which installs it) so that it can never be skipped silently there."""
    import shutil

    import pytest

    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def free_port() -> int:
    """A port that was free a moment ago (``logging_server.port: 0`` means "disabled")."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(
    tmp_path: Any,
    routes: dict[str, Any] | None = None,
    *,
    server: dict[str, Any] | None = None,
    logging: dict[str, Any] | None = None,
    logging_server: dict[str, Any] | None = None,
    with_server: bool = True,
) -> Any:
    doc: dict[str, Any] = {
        "logging": {"log_dir": str(tmp_path / "logs"), "console": False, **(logging or {})},
        "logging_server": {"port": 0, **(logging_server or {})},
    }
    if with_server:
        doc["server"] = {"port": 0, **(server or {})}
        doc["routes"] = routes or {}
    return parse_config(doc, env={}, base_dir=str(tmp_path))


def start_service(config: Any) -> LogproxyService:
    service = LogproxyService(config, reactor)
    service.privilegedStartService()
    service.startService()
    return service


def proxy_url(service: LogproxyService, path: str = "/") -> str:
    return f"http://127.0.0.1:{service.proxy_port.getHost().port}{path}"


def logserver_url(service: LogproxyService, path: str = "/") -> str:
    return f"http://127.0.0.1:{service.logserver_port.getHost().port}{path}"


# ---------------------------------------------------------------- capture files


def capture_files(log_dir: str, capture_id: str) -> dict[str, str]:
    """``{"request.bin": path, "request_metadata.json": path, ...}`` for one capture."""
    found: dict[str, str] = {}
    for path in glob.glob(os.path.join(log_dir, "*", f"*_{capture_id}_*")):
        name = os.path.basename(path)
        if name.startswith("."):
            continue
        found[name.split(f"_{capture_id}_", 1)[1]] = path
    return found


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@inlineCallbacks
def finished_capture(log_dir: str, capture_id: str, timeout: float = 5.0) -> Any:
    """Wait until both metadata files are final; return ``{kind: (bin bytes, metadata)}``."""

    def final() -> Any:
        files = capture_files(log_dir, capture_id)
        out = {}
        for kind in ("request", "response"):
            meta_path = files.get(f"{kind}_metadata.json")
            if meta_path is None or f"{kind}.bin" not in files:
                return None
            meta = read_json(meta_path)
            if meta["completed_at"] is None:
                return None
            out[kind] = (read_bytes(files[f"{kind}.bin"]), meta)
        return out

    result = yield wait_for(final, timeout, f"capture {capture_id} to finish")
    return result


def split_bin(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """(start line, headers, body) of a capture ``.bin``."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
    return lines[0], headers, body  # type: ignore[return-value]


@inlineCallbacks
def raw_request(
    method: bytes,
    url: str,
    headers: dict[bytes, list[bytes]] | None = None,
    body: bytes | None = None,
) -> Any:
    """A bare Agent request (treq would decode gzip): returns (response, body bytes)."""
    import treq
    from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
    from twisted.web.http_headers import Headers

    pool = HTTPConnectionPool(reactor, persistent=False)
    producer = FileBodyProducer(__import__("io").BytesIO(body)) if body is not None else None
    response = yield Agent(reactor, pool=pool).request(
        method, url.encode(), Headers(headers or {}), producer
    )
    data = yield treq.content(response)
    return response, data


# ---------------------------------------------------------------- raw peers


class RawPeer(Protocol):
    """A byte-level peer: records what arrives, lets the test write and pause.

    @ivar received: everything received so far.
    @ivar arrived: called (then cleared) whenever data arrives, for tests that wait.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.connected_d: Deferred[RawPeer] = Deferred()
        self.lost_d: Deferred[None] = Deferred()  # fires (with None) on disconnect
        self.lost_reason: Failure | None = None

    def connectionMade(self) -> None:
        self.connected_d.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.lost_reason = reason
        self.lost_d.callback(None)

    def wait_received(self, needle: bytes, timeout: float = 5.0) -> Deferred[Any]:
        return wait_for(lambda: needle in self.received, timeout, f"{needle!r} to arrive")


class RawServer:
    """A listening socket whose connections are RawPeers (an upstream the test drives)."""

    def __init__(self, paused: bool = False) -> None:
        self.paused = paused  # new connections are not read (a peer that reads nothing)
        self.peers: list[RawPeer] = []
        self.peer_d: Deferred[RawPeer] = Deferred()
        factory = Factory.forProtocol(RawPeer)
        factory.buildProtocol = self._build  # type: ignore[method-assign]
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    def _build(self, addr: Any) -> RawPeer:
        peer = RawPeer()
        self.peers.append(peer)
        if self.paused:
            peer.connected_d.addCallback(lambda p: p.transport.pauseProducing() or p)
        if not self.peer_d.called:
            peer.connected_d.addCallback(self.peer_d.callback)
        return peer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}/"

    def close(self) -> Deferred[Any]:
        for peer in self.peers:
            if peer.transport is not None:
                peer.transport.abortConnection()
        return self.port.stopListening()


def connect_raw(url_port: int) -> Deferred[RawPeer]:
    """A raw TCP client connection to the proxy."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    peer = RawPeer()
    d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", url_port), peer)
    return d
