"""Long responses of the query API: file bodies, tails of captures in flight, SSE.

All three are push producers registered on the request, so a client that reads slowly
pauses them (Twisted calls ``pauseProducing`` once the socket's send buffer is full)
instead of making this process buffer without limit:

* :class:`FileSender` reads a byte range of a file in the thread pool, one chunk at a
  time, and writes the next chunk only while not paused. With ``follow`` it keeps
  going as the file grows (:meth:`FileSender.grew`) until told the file is complete.
* :class:`Tail` waits for a capture's response file to have its header block, then
  follows its body with a :class:`FileSender` fed by the event bus.
* :class:`SSEClient` writes events as they come; events cannot wait, so while paused it
  counts what the transport buffers and drops the client past a bound.

Teardown: once the client is gone (``notifyFinish`` fires) nothing is written, the
producer is not unregistered, pending reads are ignored when they return, and the
subscription to the bus is cancelled. On success: unregister, then finish.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from zope.interface import implementer

from logproxy.capture.model import read_document
from logproxy.index.events import EventBus

log = Logger()

#: Bytes read from a file per thread-pool round trip.
CHUNK = 256 * 1024
#: Bytes an SSE client may leave unread in this process before it is dropped, once it
#: has been paused for :data:`SSE_GRACE` seconds (a burst of events pauses even a fast
#: reader for a moment); at eight times this it is dropped at once.
SSE_MAX_BACKLOG = 1024 * 1024
SSE_GRACE = 1.0
#: Header blocks are searched for in this many bytes at the start of a ``.bin``.
HEAD_SEARCH = 128 * 1024


def _read_at(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def header_end(path: str) -> tuple[int | None, int, bytes]:
    """(offset of the body or None if the header block is not complete yet, the file's
    size, the header block). Raises OSError if the file does not exist."""
    with open(path, "rb") as f:
        head = f.read(HEAD_SEARCH)
        size = os.fstat(f.fileno()).st_size
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return None, size, b""
    return end + 4, size, head[: end + 4]


def is_gone(request: server.Request) -> bool:
    return bool(getattr(request, "_disconnected", False)) or bool(request.finished)


@implementer(IPushProducer)
class FileSender:
    """Writes ``path[start:end]`` to ``request`` (reads in the thread pool).

    @ivar _end: the offset to stop at; raised by :meth:`grew` when following.
    @ivar _final: ``_end`` will not grow any more: finish on reaching it.
    @ivar _reading: a read is in the thread pool (at most one at a time).
    @ivar _paused: the client's send buffer is full.
    """

    def __init__(
        self,
        reactor: Any,
        request: server.Request,
        path: str,
        start: int,
        end: int,
        final: bool = True,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self._request = request
        self._path = path
        self._offset = start
        self._end = end
        self._final = final
        self._on_done = on_done
        self._reading = False
        self._paused = False
        self._stopped = False
        self.done = False

    def start(self) -> None:
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addBoth(self._gone)
        self._next()

    def grew(self, size: int, final: bool) -> None:
        """The file is now ``size`` bytes (``final``: and complete)."""
        if size > self._end:
            self._end = size
        if final:
            self._final = True
        self._next()

    def _next(self) -> None:
        if self._stopped or self._paused or self._reading or self.done:
            return
        if self._offset >= self._end:
            if self._final:
                self._finish()
            return
        self._reading = True
        size = min(CHUNK, self._end - self._offset)
        pool = self._reactor.getThreadPool()
        d = deferToThreadPool(self._reactor, pool, _read_at, self._path, self._offset, size)
        d.addCallbacks(self._got, self._failed)

    def _got(self, data: bytes) -> None:
        self._reading = False
        if self._stopped:
            return
        if not data:  # the file is shorter than announced (deleted, truncated): stop here
            self._end = self._offset
            self._final = True
            self._finish()
            return
        self._offset += len(data)
        self._request.write(data)
        self._next()

    def _failed(self, failure: Failure) -> None:
        self._reading = False
        if self._stopped:
            return
        log.warn("cannot read {path}: {error}", path=self._path, error=failure.getErrorMessage())
        self._stopped = True
        if not is_gone(self._request):
            self._request.unregisterProducer()
            abort = getattr(self._request, "abort_connection", None)
            if abort is not None:
                abort()  # never a clean end of a truncated body
        self._done()

    def _finish(self) -> None:
        if self.done:
            return
        self._stopped = True
        if not is_gone(self._request):
            self._request.unregisterProducer()
            self._request.finish()
        self._done()

    def _done(self) -> None:
        if not self.done:
            self.done = True
            if self._on_done is not None:
                self._on_done()

    def _gone(self, _: object) -> None:
        self._stopped = True
        self._done()

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._next()

    def stopProducing(self) -> None:
        self._stopped = True
        self._done()


class Tail:
    """``GET /api/requests/{id}/tail``: the response body as it is captured, from byte 0.

    States: waiting for the response file's header block (the upstream has not
    answered yet), then streaming (a following :class:`FileSender`), then done.
    Subscribes to the bus before looking at the file, so no growth is missed.
    """

    def __init__(
        self,
        reactor: Any,
        bus: EventBus,
        request: server.Request,
        capture_id: str,
        bin_path: str,
        meta_path: str,
    ) -> None:
        self._reactor = reactor
        self._bus = bus
        self._request = request
        self._id = capture_id
        self._bin = bin_path
        self._meta = meta_path
        self._sender: FileSender | None = None
        self._probing = False
        self._again = False
        self._final_size: int | None = None
        self._closed = False

    def start(self) -> None:
        self._bus.watch(self._id, self)
        self._request.notifyFinish().addBoth(lambda _: self._stop())
        self._probe()

    def _probe(self) -> None:
        """Look at the file (thread pool): has its header block arrived?"""
        if self._closed or self._sender is not None:
            return
        if self._probing:
            self._again = True
            return
        self._probing = True
        pool = self._reactor.getThreadPool()
        d = deferToThreadPool(self._reactor, pool, _probe_files, self._bin, self._meta)
        d.addCallbacks(self._probed, self._probe_failed)

    def _probed(self, result: tuple[int | None, int, bytes, int | None]) -> None:
        self._probing = False
        if self._closed:
            return
        body_start, size, head, final_size = result
        if final_size is not None:
            self._final_size = final_size
        final = self._final_size is not None
        request = self._request
        if body_start is None:
            if final:  # ended without a response head: an empty body
                self._respond(b"")
                request.finish()
                self._stop()
            elif self._again:
                self._again = False
                self._probe()
            return
        self._respond(head)
        end = max(size, self._final_size or 0)
        self._sender = FileSender(
            self._reactor, request, self._bin, body_start, end, final, on_done=self._stop
        )
        self._sender.start()

    def _probe_failed(self, failure: Failure) -> None:
        self._probing = False
        log.warn("tail {id}: {error}", id=self._id, error=failure.getErrorMessage())
        if not is_gone(self._request):
            self._request.setResponseCode(500)
            self._request.finish()
        self._stop()

    def _respond(self, head: bytes) -> None:
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        status, content_type = _head_fields(head)
        if status is not None:
            request.setHeader(b"X-Logproxy-Status", str(status).encode())
        if content_type:
            request.setHeader(b"X-Logproxy-Content-Type", content_type)
        # send the headers now: a client sees the answer start before the first body byte
        request.write(b"")

    # Watcher

    def grew(self, size: int, final: bool) -> None:
        if final:
            self._final_size = max(size, self._final_size or 0)
        if self._sender is not None:
            self._sender.grew(size, final)
        else:
            self._probe()

    def close(self) -> None:
        """Service shutdown: a body not complete yet is cut (never a clean end of a
        truncated body); a complete one is still sent to its end."""
        request = self._request
        if self._sender is not None and self._final_size is not None:
            self._sender.grew(self._final_size, True)
        elif not is_gone(request):
            if request.startedWriting:
                abort = getattr(request, "abort_connection", None)
                if abort is not None:
                    abort()
            else:
                request.setResponseCode(503)
                request.setHeader(b"Content-Type", b"application/json")
                request.write(b'{"error": "the service is stopping"}')
                request.finish()
        self._stop()

    def _stop(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus.unwatch(self._id, self)


def _head_fields(head: bytes) -> tuple[int | None, bytes | None]:
    lines = head.split(b"\r\n")
    status = None
    parts = lines[0].split(b" ", 2) if lines else []
    if len(parts) >= 2 and parts[1].isdigit():
        status = int(parts[1])
    content_type = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            content_type = value.strip()[:200]
    return status, content_type


def _probe_files(bin_path: str, meta_path: str) -> tuple[int | None, int, bytes, int | None]:
    """(body start or None, file size, header block, final size if the stream ended)."""
    final_size = None
    doc = read_document(meta_path)
    if doc is not None and doc.get("completed_at") is not None:
        size = doc.get("bytes_written")
        final_size = size if isinstance(size, int) else None
        if final_size is None:
            with contextlib.suppress(OSError):
                final_size = os.path.getsize(bin_path)
    try:
        body_start, size, head = header_end(bin_path)
    except OSError:
        return None, 0, b"", final_size
    return body_start, size, head, final_size


@implementer(IPushProducer)
class SSEClient:
    """One ``GET /api/events`` client (a bus subscriber).

    @ivar _paused: the client's send buffer is full; what is written meanwhile stays
        in this process, counted in ``_backlog``.
    @ivar _backlog: bytes written while paused; past ``max_backlog`` (and paused for
        :data:`SSE_GRACE` seconds, or past eight times that) the client is dropped: it
        reconnects, with ``Last-Event-ID``, when it can read again.
    @ivar _paused_at: when the client was paused (reactor time).
    """

    def __init__(
        self,
        bus: EventBus,
        request: server.Request,
        accept: Callable[[str, bytes], bool] | None = None,
        max_backlog: int = SSE_MAX_BACKLOG,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._bus = bus
        self._clock = clock or bus.seconds
        self._paused_at = 0.0
        self._request = request
        self._accept = accept
        self._max_backlog = max_backlog
        self._paused = False
        self._backlog = 0
        self._closed = False
        self.dropped = False

    def start(self, last_event_id: str | None) -> None:
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._gone)
        self._send(b"retry: 3000\n: connected\n\n")
        self._bus.subscribe(self, last_event_id)

    def event(self, event_id: str, kind: str, data: bytes) -> None:
        if self._accept is not None and not self._accept(kind, data):
            return
        self._send(b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), kind.encode(), data))

    def keepalive(self) -> None:
        self._send(b": keep-alive\n\n")

    def _send(self, chunk: bytes) -> None:
        if self._closed or is_gone(self._request):
            return
        if self._paused:
            self._backlog += len(chunk)
            if self._backlog > self._max_backlog and (
                self._backlog > 8 * self._max_backlog
                or self._clock() - self._paused_at >= SSE_GRACE
            ):
                self._drop()
                return
        self._request.write(chunk)

    def _drop(self) -> None:
        log.info("dropping an event stream client that does not read")
        self.dropped = True
        self._closed = True
        self._bus.unsubscribe(self)
        abort = getattr(self._request, "abort_connection", None)
        if abort is not None:
            abort()

    def close(self) -> None:
        """Service shutdown: end the stream cleanly."""
        if self._closed:
            return
        self._closed = True
        self._bus.unsubscribe(self)
        if not is_gone(self._request):
            self._request.unregisterProducer()
            self._request.finish()

    def _gone(self, _: object) -> None:
        self._closed = True
        self._bus.unsubscribe(self)

    # IPushProducer

    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = True
            self._paused_at = self._clock()

    def resumeProducing(self) -> None:
        self._paused = False
        self._backlog = 0

    def stopProducing(self) -> None:
        self._closed = True
        self._bus.unsubscribe(self)
