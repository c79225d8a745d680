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
    """Hands each request to an :class:`Exchange` as soon as its headers are in."""

    exchange: Exchange | None = None

    def bodyStarted(self, length: int | None) -> BodyReceiver:
        ctx: ProxyContext = self.channel.factory.context
        exchange = Exchange(self, ctx, length)
        self.exchange = exchange
        exchange.start()
        return exchange

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.exchange is not None:
            self.exchange.client_gone(reason)


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
