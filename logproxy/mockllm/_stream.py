"""Writing paced, possibly huge responses without buffering them, and dropping connections."""

from __future__ import annotations

import fcntl
import struct
import termios
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from ._common import Step

_FLUSH_POLL = 0.002
_FLUSH_TIMEOUT = 10.0


def gzip_encoder() -> Any:
    """A gzip stream (``wbits=31``) whose output can be flushed per event."""
    return zlib.compressobj(5, zlib.DEFLATED, 31)


def truncate(blocks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """At most ``limit`` bytes of ``blocks`` (for ``drop_after`` on non-streamed bodies)."""
    left = limit
    for block in blocks:
        if left <= 0:
            return
        if len(block) > left:
            yield block[:left]
            return
        left -= len(block)
        yield block


def _unsent_bytes(transport: Any) -> int:
    """Bytes still queued in Twisted's and the kernel's send buffers (best effort)."""
    tcp = transport
    while not hasattr(tcp, "dataBuffer") and getattr(tcp, "transport", None) is not None:
        tcp = tcp.transport  # unwrap TLS
    pending = len(getattr(tcp, "dataBuffer", b"")) - getattr(tcp, "offset", 0)
    pending += getattr(tcp, "_tempDataLen", 0)
    try:
        raw = fcntl.ioctl(tcp.getHandle().fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        pending += struct.unpack("i", raw)[0]
    except (AttributeError, OSError, ValueError):
        pass
    return pending


def abort_when_flushed(request: Request, clock: IReactorTime) -> None:
    """Reset the connection once what was written has left the host.

    ``abortConnection()`` throws away buffered data, so aborting right after ``write()``
    would drop the headers too; the client must see the partial body, then an RST.
    """
    channel = request.channel
    transport = getattr(channel, "transport", None)
    if transport is None:
        return
    deadline = clock.seconds() + _FLUSH_TIMEOUT

    def check() -> None:
        if request._disconnected or getattr(transport, "disconnected", False):
            return
        if _unsent_bytes(transport) > 0 and clock.seconds() < deadline:
            clock.callLater(_FLUSH_POLL, check)
            return
        transport.abortConnection()

    check()


@implementer(IPushProducer)
class Emitter:
    """Feed ``steps`` into ``request``: waits via ``callLater``, honours backpressure.

    It is registered as the request's push producer, so a slow reader pauses it and
    memory stays flat however long the response is. A client disconnect cancels the
    pending timer: nothing is written to a dead request and no delayed call lingers.
    At the end it finishes the request, or resets the connection if ``abort`` is set.
    """

    def __init__(
        self,
        request: Request,
        clock: IReactorTime,
        steps: Iterable[Step],
        *,
        gzip: bool = False,
        abort: bool = False,
    ) -> None:
        self._request = request
        self._clock = clock
        self._steps = iter(steps)
        self._encoder = gzip_encoder() if gzip else None
        self._abort = abort
        self._pending: bytes | None = None
        self._call: DelayedCall | None = None
        self._paused = False
        self._done = False
        self._pumping = False

    def start(self, send_headers: bool = False) -> None:
        """Begin; with ``send_headers`` the status line goes out now (SSE), not with the body."""
        self._request.notifyFinish().addErrback(self._lost)
        self._request.registerProducer(self, True)
        if send_headers:
            self._request.write(b"")
        self._pump()

    # IPushProducer
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._call is None and not self._done:
            self._pump()

    def stopProducing(self) -> None:
        self._stop()

    # internals
    def _lost(self, reason: Failure) -> None:
        self._stop()

    def _stop(self) -> None:
        self._done = True
        self._pending = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self) -> None:
        self._call = None
        self._pump()

    def _pump(self) -> None:
        if self._pumping:  # a write() re-entered us via pause/resume
            return
        self._pumping = True
        try:
            while not self._paused and not self._done:
                if self._pending is not None:
                    data, self._pending = self._pending, None
                    self._write(data)
                    continue
                step = next(self._steps, None)
                if step is None:
                    self._finish()
                    return
                delay, data = step
                if delay > 0:
                    self._pending = data
                    self._call = self._clock.callLater(delay, self._fire)  # type: ignore[assignment]
                    return
                self._write(data)
        finally:
            self._pumping = False

    def _write(self, data: bytes) -> None:
        if self._encoder is not None:
            data = self._encoder.compress(data) + self._encoder.flush(zlib.Z_SYNC_FLUSH)
        self._request.write(data)

    def _finish(self) -> None:
        self._done = True
        request = self._request
        request.unregisterProducer()
        if self._abort:
            abort_when_flushed(request, self._clock)
            return
        if self._encoder is not None:
            request.write(self._encoder.flush(zlib.Z_FINISH))
        if not request._disconnected:
            request.finish()
