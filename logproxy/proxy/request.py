"""The reverse proxy's Twisted face: a streaming request class and its HTTP factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure
from twisted.web import http

from logproxy.http.channel import channel_protocol
from logproxy.http.streaming import BodyReceiver, StreamingRequestMixin
from logproxy.proxy.exchange import Exchange

if TYPE_CHECKING:
    from logproxy.proxy.context import ProxyContext


class ProxyRequest(StreamingRequestMixin):
    """Hands each request to an :class:`Exchange` as soon as its headers are in (or, while
    the capture writer is far behind, as soon as the :class:`CaptureGate` lets it)."""

    exchange: Exchange | None = None
    held: HeldStart | None = None

    def bodyStarted(self, length: int | None) -> BodyReceiver:
        ctx: ProxyContext = self.channel.factory.context
        exchange = Exchange(self, ctx, length)
        gate = ctx.gate
        if gate is not None and not gate.admit():
            held = self.held = HeldStart(self, exchange)
            gate.hold(held.release)
            return held
        self.exchange = exchange
        exchange.start()
        return exchange

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.held is not None:  # never started: nothing to record
            self.held.cancelled = True
            self.held = None
        if self.exchange is not None:
            self.exchange.client_gone(reason)
        self.exchange = self.body_receiver = None  # nothing more comes; see finish()

    def finish(self) -> None:
        super().finish()
        self.exchange = None


class HeldStart:
    """Stands in for an exchange the gate holds: stops reading the client, keeps what
    was already read of the body (at most one socket read), and replays it in order."""

    def __init__(self, request: ProxyRequest, exchange: Exchange) -> None:
        self.request = request
        self.exchange = exchange
        self.cancelled = False
        self._chunks: list[bytes] = []
        self._complete = False
        request.pause_reading()

    def body_chunk(self, data: bytes) -> None:
        self._chunks.append(data)
        self.request.pause_reading()  # the channel may have resumed it meanwhile

    def body_complete(self) -> None:
        self._complete = True

    def release(self) -> None:
        if self.cancelled:
            return
        request, exchange = self.request, self.exchange
        request.held = None
        request.exchange = exchange
        request.body_receiver = exchange
        request.resume_reading()  # before start: the exchange may pause it again
        exchange.start()
        chunks, self._chunks = self._chunks, []
        for chunk in chunks:
            exchange.body_chunk(chunk)
        if self._complete:
            exchange.body_complete()


class ProxyFactory(http.HTTPFactory):
    """HTTP/1.1 server for the proxy: no resource tree, no access log (the console
    lines and captures are the log), no 1-second log-clock timer. Connections are
    ``ProxyChannel``s, which answer malformed requests with 400/414/431 and a reason."""

    protocol = channel_protocol

    def __init__(self, context: ProxyContext, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout or http._REQUEST_TIMEOUT, reactor=context.reactor)
        self.context = context
        self.noisy = False

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            protocol.requestFactory = ProxyRequest
        return protocol

    def count_rejection(self, status: int) -> None:
        """A malformed request answered by the channel (no exchange exists for it)."""
        self.context.metrics.requests.labels("-", str(status)).inc()

    def startFactory(self) -> None:
        pass

    def stopFactory(self) -> None:
        pass

    def log(self, request: http.Request) -> None:
        pass
