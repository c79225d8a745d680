"""The request body on its way upstream: an ``IBodyProducer`` fed by the client request."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

#: Bytes held while the upstream connection is being set up before the client is paused.
PENDING_LIMIT = 64 * 1024


@implementer(IBodyProducer)
class RequestBodyProducer:
    """Passes body chunks upstream as they arrive from the client.

    Backpressure runs both ways through the client's socket: when the upstream
    connection cannot take more (``pauseProducing``), the client socket stops being
    read; ``resumeProducing`` reads it again.

    @ivar length: the client's ``Content-Length``, or ``UNKNOWN_LENGTH`` (chunked upstream).
    @ivar _consumer: the upstream connection, once the Agent called ``startProducing``.
    @ivar _pending: chunks received before ``startProducing``; the client is paused
        once they pass ``PENDING_LIMIT``, so this stays bounded.
    @ivar _paused: upstream asked for a pause. HTTPChannel may resume the client socket
        on its own (when the client's send buffer drains), so every chunk arriving while
        paused pauses the client again: at most one socket read more is held.
    @ivar _done: the client's body is complete (``finish`` was called).
    @ivar _stopped: the upstream request is gone (``stopProducing``); later chunks
        are dropped, the client is read on so its body can still be captured.
    """

    def __init__(
        self,
        length: int | None,
        pause_client: Callable[[], None],
        resume_client: Callable[[], None],
    ) -> None:
        self.length: int | object = UNKNOWN_LENGTH if length is None else length
        self._pause_client = pause_client
        self._resume_client = resume_client
        self._consumer: IConsumer | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._paused = False
        self._client_paused = False
        self._done = False
        self._stopped = False
        self._failed: Failure | None = None
        self._finished: Deferred[None] = Deferred()

    # IBodyProducer, called by the Agent

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        pending, self._pending = self._pending, []
        self._pending_size = 0
        for chunk in pending:
            consumer.write(chunk)
        if not self._paused:
            self._set_client_paused(False)
        finished = self._finished
        if self._failed is not None:
            self._consumer = None
            finished.errback(self._failed)
        elif self._done:
            self._consumer = None
            finished.callback(None)
        return finished

    def pauseProducing(self) -> None:
        self._paused = True
        self._set_client_paused(True)

    def resumeProducing(self) -> None:
        self._paused = False
        self._set_client_paused(False)

    def stopProducing(self) -> None:
        self._stopped = True
        self._consumer = None
        self._pending = []
        self._set_client_paused(False)

    # fed by the exchange

    def feed(self, data: bytes) -> None:
        if self._stopped:
            return
        consumer = self._consumer
        if consumer is None:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size >= PENDING_LIMIT:
                self._set_client_paused(True)
            return
        consumer.write(data)
        if self._paused:
            self._client_paused = False  # the channel may have resumed it behind our back
            self._set_client_paused(True)

    def finish(self) -> None:
        """The client's body is complete."""
        self._done = True
        if self._consumer is not None and not self._stopped and not self._finished.called:
            self._consumer = None  # it refers back to us: let reference counting free both
            self._finished.callback(None)

    def fail(self, reason: Failure) -> None:
        """The client's body will never be complete: make the Agent abort the request."""
        if self._stopped or self._finished.called:
            return
        if self._consumer is None:
            self._failed = reason
            return
        self._consumer = None
        self._finished.errback(reason)

    def _set_client_paused(self, paused: bool) -> None:
        if paused and not self._client_paused:
            self._client_paused = True
            self._pause_client()
        elif not paused and self._client_paused:
            self._client_paused = False
            self._resume_client()
