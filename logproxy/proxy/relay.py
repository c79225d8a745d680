"""The response body on its way to the client: the ``deliverBody`` protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

if TYPE_CHECKING:
    from logproxy.proxy.exchange import Exchange


class ResponseRelay(Protocol):
    """Hands each upstream body chunk to the exchange the moment it arrives.

    ``self.transport`` (set by ``deliverBody``) is the upstream connection as a push
    producer; ``connectionMade`` registers it with the client request, so a client
    that reads slowly pauses the upstream socket, and one that disconnects stops it.
    """

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    def connectionMade(self) -> None:
        self._exchange.relay_started(self.transport)  # type: ignore[arg-type]

    def dataReceived(self, data: bytes) -> None:
        self._exchange.response_chunk(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        # PotentialDataLoss: a body without Content-Length or chunking, ended by the
        # server closing the connection (HTTP/1.0 style) -- that is its normal end.
        if reason.check(ResponseDone, PotentialDataLoss):
            self._exchange.response_ended(None)
        else:
            self._exchange.response_ended(reason)
