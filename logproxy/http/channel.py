"""The HTTP/1.1 front: ``HTTPChannel`` with clear answers to malformed requests.

Twisted's ``HTTPChannel`` already refuses what must be refused -- a malformed request
line, bad header names or values, an invalid or repeated ``Content-Length``,
``Content-Length`` together with ``Transfer-Encoding: chunked``, broken chunked framing,
too many or too large headers -- but it answers every case with a bare
``400 Bad Request`` and no reason, and drops a request line over ``MAX_LENGTH`` without
any answer at all. :class:`ProxyChannel` keeps Twisted as the judge of what is
malformed and only changes the answer:

* 414 URI Too Long for a request line over :attr:`ProxyChannel.MAX_LENGTH`;
* 431 Request Header Fields Too Large for a header line over ``MAX_LENGTH``, more than
  ``totalHeadersSize`` bytes of request line plus headers, or more than ``maxHeaders``
  header fields;
* 400 Bad Request for everything else, with a one-line plain-text reason.

Each answer carries ``Connection: close`` and the connection is closed after it (the
rest of the input cannot be trusted to be framed correctly). Two checks are stricter
than Twisted's, so that nothing malformed is passed on: a request target may only hold
visible ASCII (Twisted 26.10 lets bytes 0x7F-0xB0 through), a header value no control
character but HTAB (Twisted refuses only NUL, CR and LF), and ``Content-Length`` with
any ``Transfer-Encoding`` (not only ``chunked``) is refused.

Every touch of Twisted internals is here. Checked against Twisted 26.10
(``twisted/web/http.py``: ``HTTPChannel.lineReceived``, ``headerReceived``,
``_maybeChooseTransferDecoder``, ``rawDataReceived``,
``_respondToBadRequestAndDisconnect``, ``_genericHTTPChannelProtocolFactory``;
``twisted/protocols/basic.py``: ``LineReceiver.dataReceived``, ``lineLengthExceeded``).
``tests/test_bad_input.py`` pins the behaviour (``test_channel_*`` drive the channel
over a ``StringTransport``, the others a running proxy over loopback sockets): if a
Twisted upgrade changes a hook, those tests fail first.

Overridden, and why each is safe:

* ``lineLengthExceeded`` -- the public ``LineReceiver`` hook (Twisted's default drops
  the connection silently). It answers 414 or 431 instead.
* ``lineReceived`` / ``headerReceived`` / ``rawDataReceived`` -- each calls Twisted's
  own method, after naming the reason Twisted would have if it rejected the input now
  (:meth:`ProxyChannel._describing`). They never accept anything Twisted refuses.
* ``_respondToBadRequestAndDisconnect`` -- private; the one place Twisted sends its bare
  400 from. It writes our answer for the reason named above (a generic 400 if none was).

Twisted state read (all private, all on the channel):

* ``_command`` -- set once the request line parsed, deleted when the request's body is
  complete: its absence means the next line is a request line. ``StreamingRequestMixin``
  relies on the same attribute.
* ``_receivedHeaderSize`` / ``_receivedHeaderCount`` -- bytes and header fields of the
  current request so far, compared with ``totalHeadersSize`` / ``maxHeaders``.
* ``_transferDecoder`` -- ``None`` until ``Content-Length`` or chunked chose a decoder.
* ``_handlingRequest`` -- ``True`` while raw data is only buffered (a later, pipelined
  request) rather than decoded as the current request's body.
* ``requests`` -- the queue of requests; the last one is the request being read.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http

__all__ = ["MalformedRequest", "ProxyChannel", "channel_protocol"]

log = Logger()

#: RFC 9110 ``tchar``: what a method or a header name may consist of.
_TOKEN = frozenset(("!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters).encode())
#: Control characters, invalid in a header value (RFC 9110 section 5.5); HTAB is allowed.
_CTL = bytes(byte for byte in range(0x20) if byte != 0x09) + b"\x7f"
_BAD_CHUNKED = (400, "malformed chunked request body")
_PHRASES = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class MalformedRequest(Exception):
    """The client's request turned out malformed after it was handed to the application
    (broken chunked framing in the body): the reason the request's ``connectionLost`` gets."""


def _is_token(value: bytes) -> bool:
    return bool(value) and all(byte in _TOKEN for byte in value)


def _request_target_ok(target: bytes) -> bool:
    """RFC 9112 section 3.2: a request target is visible ASCII only (no space, no DEL)."""
    return bool(target) and all(0x21 <= byte <= 0x7E for byte in target)


def _request_line_problem(line: bytes) -> str:
    """Why ``_parseRequestLine`` would refuse ``line`` (for the message only)."""
    parts = line.split(b" ")
    if len(parts) != 3:
        return "malformed request line (expected METHOD TARGET HTTP/1.1)"
    method, target, version = parts
    if not _is_token(method):
        return "invalid method"
    if not target:
        return "empty request target"
    if not _request_target_ok(target):
        return "invalid character in request target"
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        return "unsupported HTTP version (expected HTTP/1.0 or HTTP/1.1)"
    return "malformed request line"


class ProxyChannel(http.HTTPChannel):
    """``HTTPChannel`` answering malformed requests with 400, 414 or 431 and a reason.

    @cvar MAX_LENGTH: longest request line (and header line) accepted; a longer request
        line gets 414, a longer header line 431. Twisted's 16 KiB, restated here.
    @ivar _reason: ``(status, message)`` to answer with if Twisted rejects the input
        being processed now; set by :meth:`_describing` around each call into Twisted.
    @ivar _rejection: ``(status, message)`` once an answer was sent; everything after it
        is ignored.
    """

    MAX_LENGTH = 16384

    _reason: tuple[int, str] | None = None
    _rejection: tuple[int, str] | None = None

    # ------------------------------------------------------------------ the hooks

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._reading_request_line():
            self._reject(414, f"request line longer than {self.MAX_LENGTH} bytes")
        else:
            self._reject(431, f"header line longer than {self.MAX_LENGTH} bytes")

    def lineReceived(self, line: bytes) -> None:
        if self._rejection is not None:
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            reason = (431, f"request line and headers larger than {self.totalHeadersSize} bytes")
        elif self._reading_request_line():
            parts = line.split(b" ")
            if self.persistent and len(parts) == 3 and not _request_target_ok(parts[1] or b"-"):
                # Twisted 26.10 accepts bytes 0x7F-0xB0 in the target; nothing else would.
                self._reject(400, "invalid character in request target")
                return
            reason = (400, _request_line_problem(line))
        else:
            reason = (400, "malformed header section")
        with self._describing(*reason):
            super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        if self._rejection is not None:
            return False
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        key = name.lower()
        request = self.requests[-1]
        if key in (b"content-length", b"transfer-encoding") and request.requestHeaders.hasHeader(
            b"transfer-encoding" if key == b"content-length" else b"content-length"
        ):
            # Twisted lets "Transfer-Encoding: identity" pass next to a Content-Length.
            self._reject(400, "conflicting Content-Length and Transfer-Encoding")
            return False
        if colon and _is_token(name) and len(value.translate(None, _CTL)) != len(value):
            # Twisted refuses only NUL, CR and LF; other control characters are as
            # invalid, and an upstream may well refuse them.
            self._reject(400, "control character in header value")
            return False
        with self._describing(*self._header_problem(key, colon, name, value)):
            return bool(super().headerReceived(line))

    def rawDataReceived(self, data: bytes) -> None:
        if self._rejection is not None:
            return
        if self._handlingRequest or not self.requests:
            super().rawDataReceived(data)  # pipelined data, only buffered
            return
        request = self.requests[-1]
        # _describing() inlined: this runs for every body chunk.
        outer, self._reason = self._reason, _BAD_CHUNKED
        try:
            super().rawDataReceived(data)
        finally:
            self._reason = outer
        if self._rejection is not None and request in self.requests:
            # The application has had this request since its headers (streaming): tell it
            # now, so it stops feeding upstream before another byte goes out. It is taken
            # off the queue so that the channel's connectionLost does not tell it twice.
            self.requests.remove(request)
            request.connectionLost(Failure(MalformedRequest(self._rejection[1])))

    def _respondToBadRequestAndDisconnect(self) -> None:
        status, message = self._reason or (400, "malformed request")
        self._reject(status, message)

    # ------------------------------------------------------------------ helpers

    def _reading_request_line(self) -> bool:
        """The next line is a request line (no request line parsed for this request)."""
        return "_command" not in vars(self)

    def _header_problem(
        self, key: bytes, colon: bytes, name: bytes, value: bytes
    ) -> tuple[int, str]:
        """The answer if Twisted refuses this header line (``headerReceived`` order)."""
        if not colon:
            return 400, "header line without a colon"
        if not _is_token(name):
            return 400, "invalid header name"
        if len(value.translate(None, b"\x00\r\n")) != len(value):
            return 400, "control character in header value"
        if key == b"content-length":
            if not value.isdigit():
                return 400, "invalid Content-Length"
            if self._transferDecoder is not None:
                return 400, "more than one Content-Length"
        elif key == b"transfer-encoding":
            if value.lower() not in (b"chunked", b"identity"):
                return 400, "unsupported Transfer-Encoding (only chunked is accepted)"
            if self._transferDecoder is not None:
                return 400, "more than one Transfer-Encoding: chunked"
        if self._receivedHeaderCount + 1 > self.maxHeaders:
            return 431, f"more than {self.maxHeaders} header fields"
        return 400, "invalid header"

    @contextmanager
    def _describing(self, status: int, message: str) -> Iterator[None]:
        """Name the answer for a rejection by Twisted inside the block (nests)."""
        outer, self._reason = self._reason, (status, message)
        try:
            yield
        finally:
            self._reason = outer

    def _reject(self, status: int, message: str) -> None:
        """Answer ``status`` with ``message`` and close the connection (once)."""
        if self._rejection is not None:
            return
        self._rejection = (status, message)
        transport: Any = self.transport
        if transport is None:
            return
        peer = transport.getPeer()
        log.info(
            "rejected a request from {peer}: {status} {message}",
            peer=f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}",
            status=status,
            message=message,
        )
        if self.requests and self.requests[-1].startedWriting:
            # The application is already answering (e.g. a 404 while the body arrived):
            # a second status line would be garbage, and a cut response must not look whole.
            transport.abortConnection()
            return
        count = getattr(self.factory, "count_rejection", None)
        if count is not None:
            count(status)
        phrase = _PHRASES.get(status, http.RESPONSES.get(status, b"Error"))
        body = phrase + b": " + message.encode("utf-8", "replace") + b"\n"
        transport.write(
            b"HTTP/1.1 %d %s\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n"
            b"X-Logproxy-Id: %s\r\n"  # SPEC section 4: on every answer (no capture exists)
            b"Connection: close\r\n"
            b"\r\n%s" % (status, phrase, len(body), str(uuid.uuid4()).encode(), body)
        )
        self.loseConnection()


def channel_protocol(factory: http.HTTPFactory) -> Any:
    """``HTTPFactory.protocol`` for a :class:`ProxyChannel`.

    Twisted's ``_genericHTTPChannelProtocolFactory`` wraps a plain ``HTTPChannel`` in
    ``_GenericHTTPChannelProtocol`` (which would switch to HTTP/2 after ALPN); this does
    the same with a :class:`ProxyChannel`. ``HTTPFactory.buildProtocol`` then sets the
    factory, timeout and ``callLater`` on the wrapper, which passes them on to the
    channel, exactly as for Twisted's own channel.
    """
    return http._GenericHTTPChannelProtocol(ProxyChannel())
