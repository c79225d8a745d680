"""Streaming request bodies for ``twisted.web``: the one module touching its private hooks.

``twisted.web.http.Request`` buffers the whole body (in memory or a temp file) and only
then calls ``process()``. A proxy must start the upstream request as soon as the headers
are in and pass each body chunk on as it arrives, so :class:`StreamingRequestMixin`
overrides the channel-facing hooks:

* ``gotLength(length)`` -- called by ``HTTPChannel.allHeadersReceived`` once the request
  line and headers are parsed. ``method``/``uri``/``clientproto`` are not set on the
  request yet, so they are read from the channel's private ``_command``/``_path``/
  ``_version`` attributes, then :meth:`StreamingRequestMixin.bodyStarted` is called.
* ``handleContentChunk(data)`` -- each de-chunked body chunk, handed to the receiver.
* ``requestReceived(command, path, version)`` -- the body is complete; instead of
  Twisted's form parsing and ``process()``, :meth:`BodyReceiver.body_complete` is called.

Checked against Twisted 24.7 to 26.10 (``twisted/web/http.py``: ``HTTPChannel.lineReceived``,
``allHeadersReceived``, ``_maybeChooseTransferDecoder``, ``allContentReceived``).
``tests/test_streaming_hooks.py`` pins this behaviour: if a Twisted upgrade changes the
hooks, those tests fail first.

Writing a response before the body is complete is allowed (a 502 while a client is
still uploading), but ``finish()`` is not: it would make the channel parse the rest of
the body as a new request. Subclasses finish only after ``body_complete``.
"""

from __future__ import annotations

from io import BytesIO
from typing import TYPE_CHECKING, Any, Protocol

from twisted.web import http

if TYPE_CHECKING:
    from twisted.internet.interfaces import IPushProducer


class BodyReceiver(Protocol):
    """Consumes a request body as it arrives.

    Contract: ``body_chunk`` is called zero or more times, then exactly one of
    ``body_complete`` (the body ended whole) or -- through the request's
    ``connectionLost`` -- nothing more (the subclass handles the disconnect).
    Neither method may raise.
    """

    def body_chunk(self, data: bytes) -> None: ...

    def body_complete(self) -> None: ...


class StreamingRequestMixin(http.Request):
    """A request that hands its body to a :class:`BodyReceiver` as it arrives.

    Subclasses implement :meth:`bodyStarted`, which returns the receiver, or ``None``
    to fall back to Twisted's buffered behaviour (``process()`` once the body is in).

    @ivar body_receiver: where body chunks go, or ``None`` when buffering.
    @ivar body_done: ``True`` once the whole body has been received.
    """

    body_receiver: BodyReceiver | None = None
    body_done: bool = False

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        self.method = channel._command
        self.uri = channel._path
        self.clientproto = channel._version
        self.path, _, _query = self.uri.partition(b"?")
        self.args = {}
        self.body_receiver = self.bodyStarted(length)
        if self.body_receiver is None:
            super().gotLength(length)
        else:
            # Twisted's _cleanup() and connectionLost() close self.content.
            self.content = BytesIO()

    def bodyStarted(self, length: int | None) -> BodyReceiver | None:
        """Headers are in; return the receiver for the body (or ``None`` to buffer)."""
        raise NotImplementedError

    def handleContentChunk(self, data: bytes) -> None:
        receiver = self.body_receiver
        if receiver is None:
            super().handleContentChunk(data)
        else:
            receiver.body_chunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.body_done = True
        receiver = self.body_receiver
        if receiver is None:
            super().requestReceived(command, path, version)
        else:
            receiver.body_complete()

    def finish(self) -> None:
        super().finish()
        # Finished only after the body ended: nothing more comes. The receiver usually
        # refers back to this request; dropping it lets reference counting free both.
        self.body_receiver = None

    @property
    def is_disconnected(self) -> bool:
        """The client connection is gone: write/finish/unregisterProducer must not be called."""
        return bool(self._disconnected)

    def _client_transport(self) -> Any:
        """The client's TCP (or TLS) transport, or ``None`` once disconnected."""
        return self.channel.transport if self.channel is not None else None

    def pause_reading(self) -> None:
        """Stop reading the client's socket (upload backpressure)."""
        transport = self._client_transport()
        if transport is not None:
            transport.pauseProducing()

    def resume_reading(self) -> None:
        """Resume reading the client's socket."""
        transport = self._client_transport()
        if transport is not None:
            transport.resumeProducing()

    def register_push_producer(self, producer: IPushProducer) -> None:
        """``registerProducer(producer, True)``, honouring a pause already in force.

        ``HTTPChannel.registerProducer`` does not pause a producer registered while
        the client's send buffer is still full from an earlier response on the same
        keep-alive connection; without this the first chunks would pile up unbounded.
        """
        self.registerProducer(producer, True)
        if getattr(self.channel, "_waitingForTransport", False):
            producer.pauseProducing()

    def abort_connection(self) -> None:
        """Drop the client connection without a clean end of the response."""
        transport = self._client_transport()
        if transport is not None:
            transport.abortConnection()
