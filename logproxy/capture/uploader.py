"""Remote mode: each capture stream goes to a logging server as a chunked HTTP PUT.

The same :class:`StreamEncoder` that feeds local files produces the PUT body, so the
files the logging server writes are byte-identical to local ones. The upload is fed
as the proxied bytes flow; if the logging server reads slowly, a bounded buffer fills
and further bytes are dropped (``truncated``) -- the proxied request never waits.
"""

from __future__ import annotations

import json
import time
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IConsumer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from zope.interface import implementer

from logproxy.capture.encoder import StreamEncoder
from logproxy.capture.llmtap import LLMTap
from logproxy.capture.model import (
    CaptureName,
    Metadata,
    StreamHead,
    StreamKind,
    now,
    stream_document,
)
from logproxy.capture.sink import CaptureStream
from logproxy.capture.writer import LocalStore
from logproxy.metrics import Metrics
from logproxy.proxy.upstream import QuietPool

log = Logger()

#: Seconds to send captures to the local fallback after the logging server failed.
DOWN_FOR = 10.0
#: Seconds uploads in flight may take to finish at shutdown.
STOP_TIMEOUT = 5.0


@implementer(IBodyProducer)
class StreamBody:
    """A PUT body fed while the request is in flight, buffered up to ``limit`` bytes.

    @ivar _buffer: bytes waiting for the connection (before ``startProducing``, or while
        the server applies backpressure with ``pauseProducing``).
    @ivar dropped: bytes refused because the buffer was full.
    """

    length = UNKNOWN_LENGTH

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._consumer: IConsumer | None = None
        self._paused = False
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._ended = False
        self._stopped = False
        self.dropped = 0
        self._done: Deferred[None] = Deferred()

    def write(self, data: bytes) -> bool:
        """Queue ``data``; ``False`` if it had to be dropped."""
        if self._stopped:
            self.dropped += len(data)
            return False
        if self._consumer is not None and not self._paused and not self._buffer:
            self._consumer.write(data)
            return True
        if self._buffered + len(data) > self._limit:
            self.dropped += len(data)
            return False
        self._buffer.append(data)
        self._buffered += len(data)
        return True

    def end(self) -> None:
        self._ended = True
        self._flush()

    @property
    def never_sent(self) -> bool:
        """No byte went out: the connection was never made."""
        return self._consumer is None and not self._stopped

    def take_buffer(self) -> list[bytes]:
        buffer, self._buffer, self._buffered = self._buffer, [], 0
        return buffer

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._flush()
        return self._done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._flush()

    def stopProducing(self) -> None:
        self._stopped = True
        self._buffer = []
        self._buffered = 0

    def _flush(self) -> None:
        consumer = self._consumer
        if consumer is None or self._stopped:
            return
        while self._buffer and not self._paused:
            data = self._buffer.pop(0)
            self._buffered -= len(data)
            consumer.write(data)
        if self._ended and not self._buffer and not self._done.called:
            self._done.callback(None)


class RemoteStream:
    """One capture stream uploaded to a logging server (implements ``CaptureStream``)."""

    def __init__(self, store: RemoteStore, name: CaptureName, tap: LLMTap | None) -> None:
        self._store = store
        self._name = name
        self._tap = tap
        self._body: StreamBody | None = None
        self._encoder: StreamEncoder | None = None
        self._started_at = 0.0
        self._put: Deferred[Any] | None = None
        self._final: Metadata | None = None
        self._end_args: tuple[Metadata, str | None, Metadata] | None = None
        self._exchange: Metadata = {}
        self._local: CaptureStream | None = None  # the local fallback, once switched to it
        self._bytes = 0

    def _url(self, suffix: str = "") -> str:
        return f"{self._store.base_url}/{self._name.capture_id}/{self._name.kind}{suffix}"

    def begin(self, head: StreamHead | None, exchange: Metadata) -> None:
        store = self._store
        self._started_at = now()
        self._exchange = dict(exchange)
        self._body = StreamBody(store.buffer_size)
        doc = stream_document(
            self._name.kind,
            self._name,
            exchange,
            started_at=self._started_at,
            completed_at=None,
            bytes_written=0,
            completed=False,
            error=None,
        )
        headers = store.headers.copy()
        headers.setRawHeaders(b"X-Logproxy-Metadata", [json.dumps(doc, separators=(",", ":"))])
        if head is not None:
            body_tap = None
            if self._tap is not None:
                if self._name.kind == "request":
                    body_tap = self._tap.request_body
                else:
                    self._tap.response_begin()
                    body_tap = self._tap.response_body
            self._encoder = StreamEncoder(
                head, store.redact, store.max_decoded, self._send, body_tap
            )
        d = store.client.put(self._url(), data=self._body, headers=headers)
        store.pending.add(d)
        d.addCallbacks(self._uploaded, self._failed)
        d.addBoth(self._settled, d)
        self._put = d

    def _send(self, data: bytes) -> None:
        if self._local is not None:
            self._local.write(data)
            return
        assert self._body is not None
        self._bytes += len(data)
        self._body.write(data)

    def write(self, data: bytes) -> None:
        if self._encoder is not None:
            if self._tap is not None:
                self._tap.chunk_at = time.time()
            self._encoder.feed(data)

    def end(self, exchange: Metadata, error: str | None, extra: Metadata | None = None) -> None:
        if self._body is None:
            return
        info: Metadata = dict(extra or {})
        encoder = self._encoder
        if encoder is not None:
            if error is None:
                encoder.finish()
            else:
                encoder.abandon()
            info["decode_error"] = encoder.decode_error
        tap = self._tap
        if tap is not None:
            if self._name.kind == "request":
                tap.request_end()
            else:
                result, line = tap.response_end(complete=error is None)
                info["llm"] = result
                tap.on_result(result, line)
        self._end_args = (dict(exchange), error, info)
        if self._local is not None:
            self._local.end(exchange, error, info)
            return
        body = self._body
        info = {**info, "truncated": body.dropped > 0, "bytes_lost": body.dropped}
        if body.dropped:
            self._store.metrics.capture_bytes_lost.inc(body.dropped)
            self._store.metrics.capture_errors.labels("upload_dropped").inc()
        self._final = stream_document(
            self._name.kind,
            self._name,
            exchange,
            started_at=self._started_at,
            completed_at=now(),
            bytes_written=self._bytes - body.dropped,
            completed=error is None,
            error=error,
            extra=info,
        )
        body.end()

    def _uploaded(self, response: IResponse) -> Deferred[Any] | None:
        if response.code != 201:
            self._store.report(self._name.capture_id, f"logging server answered {response.code}")
            return treq.content(response)
        d = treq.content(response)  # read the small answer so the connection is reused
        final = self._final
        if final is None:
            return d
        headers = self._store.headers.copy()
        headers.setRawHeaders(b"Content-Type", [b"application/json"])
        put = self._store.client.put(
            self._url("/metadata"), data=json.dumps(final).encode(), headers=headers
        )
        put.addCallback(self._metadata_sent)
        return put

    def _metadata_sent(self, response: IResponse) -> Deferred[bytes]:
        if response.code != 200:
            self._store.report(
                self._name.capture_id, f"logging server answered {response.code} to metadata"
            )
        return treq.content(response)

    def _failed(self, failure: Failure) -> None:
        store = self._store
        store.server_failed(failure.getErrorMessage())
        body = self._body
        if body is None:
            return
        if body.never_sent and store.fallback is not None:
            self._fall_back(body)
        else:
            store.report(self._name.capture_id, failure.getErrorMessage())
        body.stopProducing()

    def _fall_back(self, body: StreamBody) -> None:
        """The logging server was never reached: everything is still in ``body``'s buffer,
        so the stream goes to the local ``log_dir`` whole."""
        store = self._store
        assert store.fallback is not None
        store.metrics.capture_fallbacks.inc()
        name = self._name
        local = store.fallback.open_stream(name.capture_id, name.started, name.kind, encoded=True)
        local.begin(None, self._exchange)
        for data in body.take_buffer():
            local.write(data)
        self._local = local
        if self._end_args is not None:
            exchange, error, extra = self._end_args
            local.end(
                exchange,
                error,
                {**extra, "truncated": body.dropped > 0, "bytes_lost": body.dropped},
            )

    def _settled(self, result: object, d: Deferred[Any]) -> None:
        self._store.pending.discard(d)
        if isinstance(result, Failure):
            self._store.report(self._name.capture_id, result.getErrorMessage())


class RemoteStore:
    """Captures sent to ``logging.server_url`` (implements ``CaptureStore``)."""

    def __init__(
        self,
        reactor: Any,
        base_url: str,
        token: str,
        redact: frozenset[bytes],
        max_decoded: int,
        buffer_size: int,
        metrics: Metrics,
        fallback: LocalStore | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.stop_timeout = stop_timeout
        self.fallback = fallback
        self.base_url = base_url.rstrip("/")
        self.redact = redact
        self.max_decoded = max_decoded
        self.buffer_size = buffer_size
        self.metrics = metrics
        self.pool = QuietPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 64
        self.client = HTTPClient(Agent(reactor, pool=self.pool))
        self.headers = Headers()
        if token:
            self.headers.setRawHeaders(b"Authorization", [b"Bearer " + token.encode()])
        self.pending: set[Deferred[Any]] = set()
        self._down_until = 0.0
        self._next_report = 0.0

    def open_stream(
        self, capture_id: str, started: float, kind: StreamKind, tap: LLMTap | None = None
    ) -> CaptureStream:
        if self.fallback is not None and self.reactor.seconds() < self._down_until:
            self.metrics.capture_fallbacks.inc()
            return self.fallback.open_stream(capture_id, started, kind, tap)
        return RemoteStream(self, CaptureName(capture_id, started, kind), tap)

    def server_failed(self, reason: str) -> None:
        """Could not reach the logging server: write locally for a while before retrying."""
        now_ = self.reactor.seconds()
        if now_ >= self._down_until and self.fallback is not None:
            log.warn(
                "logging server {url} unreachable ({reason}); writing captures to {dir} "
                "for {s:.0f} s",
                url=self.base_url,
                reason=reason,
                dir=self.fallback.log_dir,
                s=DOWN_FOR,
            )
        self._down_until = now_ + DOWN_FOR

    def report(self, capture_id: str, message: str) -> None:
        """An upload failed or was refused: counted always, logged at most every DOWN_FOR s."""
        self.metrics.capture_errors.labels("upload").inc()
        now_ = self.reactor.seconds()
        if now_ >= self._next_report:
            self._next_report = now_ + DOWN_FOR
            log.warn("capture {id}: upload failed: {message}", id=capture_id, message=message)

    def stop(self) -> Deferred[None]:
        """Let uploads in flight finish (up to ``stop_timeout`` seconds: a stuck log host must
        not hold up shutdown), then close the connections."""
        pending = list(self.pending)
        timeout = self.stop_timeout
        d: Deferred[Any] = DeferredList(pending, consumeErrors=True) if pending else succeed(None)

        def give_up() -> None:
            for upload in pending:
                upload.cancel()

        timer = self.reactor.callLater(timeout, give_up)
        d.addBoth(lambda _: timer.cancel() if timer.active() else None)
        d.addBoth(lambda _: self.pool.closeCachedConnections())
        d.addBoth(lambda _: None)
        return d
