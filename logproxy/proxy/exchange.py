"""One proxied request/response exchange: routing, upstream call, relay, capture, timeouts.

Data flows one way: client request hooks -> router -> upstream Agent -> relay ->
client, with every chunk also handed to the capture streams. The exchange owns the
lifecycle; see :class:`Phase`.
"""

from __future__ import annotations

import json
import uuid
from enum import Enum, auto
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived
from twisted.web.http import NO_BODY_CODES, RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from logproxy import console
from logproxy.capture.llmtap import LLMTap
from logproxy.capture.model import StreamHead, now, rfc3339
from logproxy.http.channel import MalformedRequest
from logproxy.llm import observe
from logproxy.proxy.body import RequestBodyProducer
from logproxy.proxy.headers import REQUEST_SET_BY_PROXY, forwardable, header_value
from logproxy.proxy.relay import ResponseRelay
from logproxy.proxy.routing import Matched, MethodNotAllowed, Redirect

if TYPE_CHECKING:
    from logproxy.capture.sink import CaptureStream
    from logproxy.config import RouteConfig
    from logproxy.proxy.context import ProxyContext
    from logproxy.proxy.request import ProxyRequest

log = Logger()

ID_HEADER = b"X-Logproxy-Id"


class Phase(Enum):
    """Where the response side of an exchange is. The request body runs alongside
    (``body_done``); an exchange is over only when both sides are.

    RECEIVING -> RELAYING -> RESPONDED -> DONE, and any phase -> DONE on an abort.
    """

    RECEIVING = auto()  # headers in; waiting for upstream response headers (or routing)
    RELAYING = auto()  # response headers sent; body streaming to the client
    RESPONDED = auto()  # response complete; waiting for the client's body to end
    DONE = auto()  # finished or aborted; everything recorded


_NEXT: dict[Phase, frozenset[Phase]] = {
    Phase.RECEIVING: frozenset({Phase.RELAYING, Phase.RESPONDED, Phase.DONE}),
    Phase.RELAYING: frozenset({Phase.RESPONDED, Phase.DONE}),
    Phase.RESPONDED: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}


class Exchange:
    """The state of one request through the proxy.

    @ivar phase: see :class:`Phase`; changed only through :meth:`_enter`.
    @ivar body_done: the client's request body has been fully received.
    @ivar meta: the capture's shared metadata (SPEC section 5 ``metadata``).
    @ivar _upstream: the Agent's pending ``Deferred[IResponse]`` until headers arrive;
        cancelled when the client goes away or the response timeout fires.
    @ivar _relay_producer: the upstream body transport while relaying, registered as the
        client request's push producer (client backpressure pauses it).
    @ivar _producer: the request body producer feeding upstream, if there is a body.
    @ivar _last_activity: reactor time of the last body byte either way (idle timeout).
    @ivar _timeout_kind: which timeout cancelled the upstream call, if one did.
    """

    def __init__(self, request: ProxyRequest, ctx: ProxyContext, length: int | None) -> None:
        self.request = request
        self.ctx = ctx
        self.phase = Phase.RECEIVING
        self.body_done = False
        self.id = str(uuid.uuid4())
        self.short_id = self.id[:8]
        self.started = now()
        self._t0 = ctx.reactor.seconds()
        self._last_activity = self._t0
        self.length = length
        self.route: RouteConfig | None = None
        self.route_label = "-"
        self.method = request.method.decode("ascii", "replace")
        self.error: str | None = None
        self.request_bytes = 0
        self.response_bytes = 0
        self.status = 0
        self.meta: dict[str, Any] = {}
        self.req_capture: CaptureStream | None = None
        self.resp_capture: CaptureStream | None = None
        self._resp_capture_begun = False
        self._producer: RequestBodyProducer | None = None
        self._upstream: Any = None
        self._relay_producer: IPushProducer | None = None
        self._response_timer: IDelayedCall | None = None
        self._idle_timer: IDelayedCall | None = None
        self._timeout_kind: str | None = None
        self._close_after_response = False
        self._capture_failed = False
        self._llm_tap: LLMTap | None = None
        self._duration_ms = 0.0

    # ---------------------------------------------------------------- lifecycle

    def _enter(self, phase: Phase) -> None:
        assert phase in _NEXT[self.phase], f"{self.phase.name} -> {phase.name}"
        self.phase = phase

    def start(self) -> None:
        """The request line and headers are in: route and start the upstream call."""
        request = self.request
        ctx = self.ctx
        ctx.exchanges.add(self)
        ctx.metrics.in_flight.inc()
        request.responseHeaders.setRawHeaders(ID_HEADER, [self.id.encode()])
        uri = request.uri
        host = request.getHeader(b"host")
        self.source_url = self._source_url(host, uri)
        self.meta = {
            "id": self.id,
            "route": None,
            "pattern": None,
            "method": self.method,
            "source_url": self.source_url,
            "target_url": None,
            "request_started_at": rfc3339(self.started),
            "client_address": _client_address(request),
            "request_content_encoding": _text(request.getHeader(b"content-encoding")),
        }
        hosts = request.requestHeaders.getRawHeaders(b"host") or []
        if len(hosts) > 1 or (not hosts and request.clientproto == b"HTTP/1.1"):
            # RFC 9112 section 3.2; and which Host would a host pattern route on?
            self._open_capture(ctx.capture_unmatched, None)
            problem = "more than one Host header" if hosts else "HTTP/1.1 request without Host"
            self._local_response(400, b"Bad Request", f"{problem}\n".encode(), close=True)
            return
        if not uri.startswith(b"/") or request.method == b"CONNECT":
            self._open_capture(ctx.capture_unmatched, None)
            self._local_response(
                400,
                b"Bad Request",
                b"Absolute-form and CONNECT requests are not served: this is a reverse proxy.\n",
                close=True,
            )
            return
        raw_path, _, query = uri.partition(b"?")
        result = ctx.router.match(
            self.method,
            host.decode("latin-1") if host is not None else None,
            raw_path.decode("utf-8", "surrogateescape"),
            query.decode("utf-8", "surrogateescape") if b"?" in uri else None,
        )
        if isinstance(result, Matched) and result.route is not None:
            self._proxy(result, query if b"?" in uri else None)
            return
        self._open_capture(ctx.capture_unmatched, None)
        path_text = raw_path.decode("utf-8", "replace")
        if isinstance(result, Redirect):
            location = result.location.encode("utf-8", "surrogateescape")
            self._local_response(
                301,
                b"Moved Permanently",
                b"Moved Permanently: " + location + b"\n",
                extra=[(b"Location", location)],
            )
        elif isinstance(result, MethodNotAllowed):
            self._local_response(
                405,
                b"Method Not Allowed",
                b"Method Not Allowed\n",
                extra=[(b"Allow", ", ".join(result.allow).encode())],
            )
        else:  # NotFound, or the not_found subtree
            self._local_response(
                404,
                b"Not Found",
                f"No route found for {path_text}\n".encode(),
            )

    def _source_url(self, host: bytes | None, uri: bytes) -> str:
        local = self.request.getHost()
        scheme = "https" if self.request.isSecure() else "http"
        if host:
            name = host.decode("latin-1")
            if ":" not in name.rsplit("]", 1)[-1]:
                name = f"{name}:{local.port}"
        else:
            name = f"{local.host}:{local.port}"
        return f"{scheme}://{name}{uri.decode('utf-8', 'replace')}"

    # ---------------------------------------------------------------- proxying

    def _proxy(self, match: Matched[Any], query: bytes | None) -> None:
        route: RouteConfig = match.route
        self.route = route
        self.route_label = route.name
        target = _target_url(route, match, query)
        self.target_url = target
        self.meta.update(route=route.name, pattern=route.pattern, target_url=target)
        request = self.request
        ctx = self.ctx
        if ctx.console:
            console.emit(
                console.start_line(
                    self.short_id,
                    self.method,
                    request.uri.decode("utf-8", "replace"),
                    target,
                    route.name,
                )
            )
        pairs = forwardable(request.requestHeaders.getAllRawHeaders(), drop=REQUEST_SET_BY_PROXY)
        limit = ctx.max_body_size
        if limit is not None and self.length is not None and self.length > limit:
            self._open_capture(route.logging, self._request_head(pairs, route))
            self._body_too_large(limit)
            return
        headers = Headers()
        for name, value in pairs:
            headers.addRawHeader(name, value)
        if self.length is None or self.length > 0:
            self._producer = RequestBodyProducer(
                self.length, request.pause_reading, request.resume_reading
            )
        agent = ctx.upstreams.agents[route.name]
        try:
            d = agent.request(
                request.method, target.encode("utf-8", "surrogateescape"), headers, self._producer
            )
        except Exception as e:  # a method or URL the HTTP client refuses: the client's doing
            d, refused = None, e
        # The request is on its way upstream (on a pooled connection it is written by
        # now); the capture's set-up no longer delays it. No body chunk and no answer can
        # arrive before this method returns, and ``d`` keeps a failure until it is read.
        self._open_capture(route.logging, self._request_head(pairs, route))
        if d is None:
            self._producer = None
            self.error = f"cannot forward this request: {refused}"
            self._json_error(400, self.error, close=not self.body_done)
            return
        self._upstream = d
        d.addCallbacks(self._got_response, self._upstream_failed)
        d.addErrback(self._bug)
        if self._producer is not None:
            self._arm_idle()

    def _request_head(self, pairs: list[tuple[bytes, bytes]], route: RouteConfig) -> StreamHead:
        dest = route.destination
        host = dest.host if ":" not in dest.host else f"[{dest.host}]"
        default_port = 443 if dest.scheme == "https" else 80
        host_line = host if dest.port == default_port else f"{host}:{dest.port}"
        headers = [(b"Host", host_line.encode()), *pairs]
        if self.length is not None:
            headers.append((b"Content-Length", str(self.length).encode()))
        return StreamHead(
            start_line=self.request.method
            + b" "
            + self.target_url.encode("utf-8", "replace")
            + b" HTTP/1.1",
            headers=headers,
            content_encoding=self.meta["request_content_encoding"],
            extra=[(b"X-Proxy-Path", self.source_url.encode("utf-8", "replace"))],
        )

    def _got_response(self, response: IResponse) -> None:
        if self._upstream is None:  # detached: we answered already (e.g. 413); drop it
            response.deliverBody(_Discard())
            return
        self._upstream = None
        self._cancel_response_timer()
        request = self.request
        took = self.ctx.reactor.seconds() - self._t0
        code = response.code
        phrase = response.phrase or RESPONSES.get(code, b"")
        self.status = code
        self.meta.update(
            upstream_response_at=rfc3339(now()),
            upstream_header_duration_ms=round(took * 1000, 3),
            response_status=f"{code} {phrase.decode('latin-1')}",
            response_status_code=code,
        )
        metrics = self.ctx.metrics
        metrics.child(metrics.upstream_headers, self.route_label).observe(took)
        pairs = forwardable(response.headers.getAllRawHeaders())
        self.meta["response_content_encoding"] = _text(header_value(pairs, b"content-encoding"))
        headers = Headers()
        for name, value in pairs:
            headers.addRawHeader(name, value)
        headers.setRawHeaders(ID_HEADER, [self.id.encode()])
        length = response.length
        if length is not UNKNOWN_LENGTH and request.method != b"HEAD" and code not in NO_BODY_CODES:
            headers.setRawHeaders(b"Content-Length", [b"%d" % length])
        self._set_response_head(
            Phase.RELAYING, code, phrase, headers, self.meta["response_content_encoding"]
        )
        self._arm_idle()
        response.deliverBody(ResponseRelay(self))

    def _set_response_head(
        self, phase: Phase, code: int, phrase: bytes, headers: Headers, encoding: str | None
    ) -> None:
        """The client's status and headers are decided: enter ``phase``, capture them."""
        self.request.responseHeaders = headers
        self.request.setResponseCode(code, phrase)
        self._enter(phase)
        self._begin_response_capture(
            StreamHead(
                start_line=b"HTTP/1.1 %d %s" % (code, phrase),
                headers=list(_all_pairs(headers)),
                content_encoding=encoding,
                extra=[],
            )
        )

    # called by ResponseRelay

    def relay_started(self, producer: IPushProducer) -> None:
        if self.phase is not Phase.RELAYING:
            producer.stopProducing()
            return
        self._relay_producer = producer
        self.request.register_push_producer(producer)

    def response_chunk(self, data: bytes) -> None:
        if self.phase is not Phase.RELAYING:
            return
        self._last_activity = self.ctx.reactor.seconds()
        self.response_bytes += len(data)
        self.request.write(data)
        capture = self.resp_capture
        if capture is not None:
            self._capture(capture.write, data)

    def response_ended(self, reason: Failure | None) -> None:
        if self.phase is not Phase.RELAYING:
            return
        if self._relay_producer is not None:
            self.request.unregisterProducer()
            self._relay_producer = None
        if reason is not None:
            # Upstream died mid-body: never end the client's response as if it were whole.
            self._end_response_capture(f"upstream connection lost: {_describe(reason)}")
            self.ctx.metrics.upstream_errors.labels(self.route_label, "response_lost").inc()
            self.request.abort_connection()
            self._finalize(f"upstream connection lost: {_describe(reason)}")
            return
        self._end_response_capture(None)
        self._enter(Phase.RESPONDED)
        self._maybe_finish()

    def _upstream_failed(self, failure: Failure) -> None:
        if self._upstream is None:
            return  # detached: the client went away or we answered already
        self._upstream = None
        self._cancel_response_timer()
        if self._producer is not None:
            self._producer.stopProducing()  # let the client's body drain (and be captured)
        kind = self._timeout_kind
        if kind == "response":
            code, message = (
                504,
                (f"upstream sent no response headers within {self.route_timeout('response')} s"),
            )
        elif kind == "idle":
            code, message = 408, "request body stalled: idle timeout"
        else:
            code, message = 502, f"upstream unreachable: {_describe(failure)}"
            kind = "connect" if failure.check(ConnectError, DNSLookupError) else "upstream"
        self.ctx.metrics.upstream_errors.labels(self.route_label, kind or "upstream").inc()
        self.error = message
        self._json_error(code, message, close=kind == "idle")

    def _detach_upstream(self) -> None:
        """Cancel the upstream call and ignore whatever it reports afterwards."""
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.cancel()

    def route_timeout(self, which: str) -> float:
        assert self.route is not None
        return float(getattr(self.route, f"{which}_timeout"))

    # ---------------------------------------------------------------- request body

    def body_chunk(self, data: bytes) -> None:
        self.request_bytes += len(data)
        self._last_activity = self.ctx.reactor.seconds()
        limit = self.ctx.max_body_size
        if limit is not None and self.request_bytes > limit and self.phase is not Phase.DONE:
            self._body_too_large(limit)
            return
        if self.req_capture is not None:
            self._capture(self.req_capture.write, data)
        if self._producer is not None:
            self._producer.feed(data)

    def body_complete(self) -> None:
        self.body_done = True
        if self.req_capture is not None:
            self._capture(self.req_capture.end, self.meta, None)
            self.req_capture = None
        if self._producer is not None:
            self._producer.finish()
        if self.phase is Phase.RECEIVING and self._upstream is not None:
            self._arm_response_timer()
        self._maybe_finish()

    def _body_too_large(self, limit: int) -> None:
        message = f"request body larger than server.max_body_size ({limit} bytes)"
        if self._producer is not None:
            self._producer.fail(Failure(ValueError(message)))
        self._detach_upstream()
        if self.phase is Phase.RECEIVING:
            self.error = message
            self._json_error(413, message, close=True)
        elif self.phase is Phase.RELAYING:
            self.request.abort_connection()
            self._finalize(message)
        elif self.phase is Phase.RESPONDED:  # answered already (e.g. 502); stop draining
            self.request.loseConnection()
            self._finalize(message)

    # ---------------------------------------------------------------- the client

    def client_gone(self, reason: Failure) -> None:
        """The client connection closed (``Request.connectionLost``)."""
        if self.phase is Phase.DONE:
            return
        self._detach_upstream()
        if self._producer is not None:
            self._producer.fail(reason)
        if self._relay_producer is not None:
            self._relay_producer.stopProducing()
            self._relay_producer = None
        if reason.check(MalformedRequest):
            self._finalize(f"malformed request: {reason.getErrorMessage()}", client_gone=True)
        else:
            self._finalize("client disconnected", client_gone=True)

    def abort(self, reason: str) -> None:
        """Stop now (shutdown): answer 503 if nothing was sent yet, else drop the client."""
        if self.phase is Phase.DONE:
            return
        self._detach_upstream()
        if self.phase is Phase.RECEIVING:
            self.error = reason
            self._json_error(503, f"proxy is shutting down ({reason})", close=True)
            return  # answered with Connection: close, which ends the exchange
        if self._relay_producer is not None:
            self._relay_producer.stopProducing()
            self._relay_producer = None
        self.request.abort_connection()
        self._finalize(reason)

    # ---------------------------------------------------------------- local responses

    def _json_error(self, code: int, message: str, close: bool = False) -> None:
        body = json.dumps(
            {"error": {"message": message, "type": "proxy_error", "request_id": self.id}}
        ).encode()
        self._local_response(
            code,
            RESPONSES.get(code, b"Error"),
            body,
            content_type=b"application/json",
            close=close,
        )

    def _local_response(
        self,
        code: int,
        phrase: bytes,
        body: bytes,
        *,
        extra: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes = b"text/plain; charset=utf-8",
        close: bool = False,
    ) -> None:
        """Answer from the proxy itself (301/400/404/405/408/413/502/503/504)."""
        request = self.request
        self.status = code
        self.meta.update(response_status=f"{code} {phrase.decode()}", response_status_code=code)
        if self.route is None and self.ctx.console:
            console.emit(
                console.start_line(
                    self.short_id, self.method, request.uri.decode("utf-8", "replace"), None, None
                )
            )
        if not self.body_done and request.requestHeaders.hasHeader(b"expect"):
            # The client waits for "100 Continue" before sending its body; HTTPChannel
            # would send it right after our answer. Answer instead and close.
            request.requestHeaders.removeHeader(b"expect")
            close = True
        headers = Headers()
        headers.setRawHeaders(b"Content-Type", [content_type])
        headers.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
        headers.setRawHeaders(ID_HEADER, [self.id.encode()])
        for name, value in extra or []:
            headers.addRawHeader(name, value)
        if close:
            headers.setRawHeaders(b"Connection", [b"close"])
        self._set_response_head(Phase.RESPONDED, code, phrase, headers, None)
        request.write(body)
        self.response_bytes += len(body) if request.method != b"HEAD" else 0
        if self.resp_capture is not None:
            self._capture(self.resp_capture.write, body)
        self._end_response_capture(self.error)
        if close:
            self._close_after_response = True
            if not self.body_done:
                # The body will not be read: close once the answer is flushed.
                request.loseConnection()
                self._finalize(self.error or "request body not read")
                return
        self._maybe_finish()

    # ---------------------------------------------------------------- the end

    def _maybe_finish(self) -> None:
        if self.phase is not Phase.RESPONDED or not self.body_done:
            return
        request = self.request
        if not request.is_disconnected:
            if request.producer is not None:
                request.unregisterProducer()
            request.finish()
            if self._close_after_response:
                request.loseConnection()
        self._finalize(self.error)

    def _finalize(self, error: str | None, client_gone: bool = False) -> None:
        """Record the outcome once: captures, metrics, console. Phase becomes DONE."""
        if self.phase is Phase.DONE:
            return
        responded = self.phase is Phase.RESPONDED
        self._enter(Phase.DONE)
        self.error = error
        self._cancel_response_timer()
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None
        if self.req_capture is not None:
            self._capture(self.req_capture.end, self.meta, error or "request body incomplete")
            self.req_capture = None
        if self.resp_capture is not None:
            if not self._resp_capture_begun:
                self._begin_response_capture(None)
            self._end_response_capture(None if responded and error is None else error)
        ctx = self.ctx
        ctx.exchange_done(self)
        m = ctx.metrics
        m.in_flight.dec()
        status = str(self.status) if self.status else ("client_gone" if client_gone else "aborted")
        m.child(m.requests, self.route_label, status).inc()
        m.child(m.body_bytes, self.route_label, "request").inc(self.request_bytes)
        m.child(m.body_bytes, self.route_label, "response").inc(self.response_bytes)
        self._duration_ms = (ctx.reactor.seconds() - self._t0) * 1000
        if self._llm_tap is None:  # else the end line waits for the usage (_llm_done)
            self._end_line(None)

    def _end_line(self, usage: str | None) -> None:
        if self.ctx.console:
            console.emit(
                console.end_line(
                    self.short_id,
                    self.status,
                    RESPONSES.get(self.status, b"").decode() if self.status else "-",
                    self.request_bytes,
                    self.response_bytes,
                    self._duration_ms,
                    self.error,
                    usage,
                )
            )

    def _llm_done(self, llm: dict[str, Any] | None, usage_line: str | None) -> None:
        """The capture understood the call (reactor thread, after the exchange ended)."""
        self._llm_tap = None  # it refers back to this exchange
        if llm is not None:
            self.ctx.metrics.count_llm(self.route_label, llm)
            if usage_line and self.ctx.console:
                console.emit(f"[{self.short_id}] {usage_line}")
        if self.ctx.console:
            self._end_line(console.usage_summary(llm))

    # ---------------------------------------------------------------- timeouts

    def _arm_response_timer(self) -> None:
        if self.route is None or self._response_timer is not None:
            return
        self._response_timer = self.ctx.reactor.callLater(
            self.route.response_timeout, self._timeout, "response"
        )

    def _cancel_response_timer(self) -> None:
        timer, self._response_timer = self._response_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _arm_idle(self) -> None:
        if self.route is None or self._idle_timer is not None:
            return
        self._idle_timer = self.ctx.reactor.callLater(self.route.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        """Fires at most once per ``idle_timeout``; body chunks only stamp a time."""
        self._idle_timer = None
        if self.phase is Phase.DONE or self.route is None:
            return
        waiting_for_headers = self.phase is Phase.RECEIVING and self.body_done
        quiet = self.ctx.reactor.seconds() - self._last_activity
        if waiting_for_headers or quiet < self.route.idle_timeout:
            rest = self.route.idle_timeout - (0 if waiting_for_headers else quiet)
            self._idle_timer = self.ctx.reactor.callLater(rest, self._idle_check)
            return
        self._timeout("idle")

    def _timeout(self, kind: str) -> None:
        if kind == "response":
            self._response_timer = None
        if self.phase is Phase.DONE:
            return
        self._timeout_kind = kind
        message = f"{kind} timeout"
        if self._upstream is not None:
            self._upstream.cancel()  # -> _upstream_failed answers 504/408
            return
        if self.phase is Phase.RECEIVING:
            # a local answer is pending only while the body drains (e.g. after a 502)
            self.error = message
            self.request.abort_connection()
            self._finalize(message)
            return
        self.ctx.metrics.upstream_errors.labels(self.route_label, "idle").inc()
        if self._relay_producer is not None:
            self._relay_producer.stopProducing()
            self._relay_producer = None
        if self._resp_capture_begun:
            self._end_response_capture(message)
        if self._producer is not None:
            self._producer.fail(Failure(TimeoutError(message)))
        self.request.abort_connection()
        self._finalize(message)

    # ---------------------------------------------------------------- capture plumbing

    def _open_capture(self, enabled: bool, head: StreamHead | None) -> None:
        store = self.ctx.store
        if not enabled or store is None:
            return
        tap = None
        if head is not None:  # proxied: maybe an LLM call worth understanding
            observer = self._capture(
                observe,
                self.method,
                urlsplit(self.target_url).path,
                _text(self.request.getHeader(b"content-type")),
            )
            if observer is not None:
                tap = self._llm_tap = LLMTap(observer, self.started, self._llm_done)
        open_stream = store.open_stream
        self.req_capture = self._capture(open_stream, self.id, self.started, "request", tap)
        self.resp_capture = self._capture(open_stream, self.id, self.started, "response", tap)
        if self.req_capture is not None:
            if head is None:
                head = StreamHead(
                    start_line=self.request.method
                    + b" "
                    + self.source_url.encode("utf-8", "replace")
                    + b" HTTP/1.1",
                    headers=forwardable(self.request.requestHeaders.getAllRawHeaders()),
                    content_encoding=self.meta["request_content_encoding"],
                    extra=[(b"X-Proxy-Path", self.source_url.encode("utf-8", "replace"))],
                )
            self._capture(self.req_capture.begin, head, self.meta)
            if self.body_done:
                self._capture(self.req_capture.end, self.meta, None)
                self.req_capture = None

    def _begin_response_capture(self, head: StreamHead | None) -> None:
        tap = self._llm_tap
        if tap is not None:  # read by the capture's thread once the stream opens
            tap.status = self.status
            tap.content_type = _text(
                self.request.responseHeaders.getRawHeaders(b"content-type", [None])[-1]
            )
            tap.headers_at = now()
        if self.resp_capture is not None and not self._resp_capture_begun:
            self._resp_capture_begun = True
            self._capture(self.resp_capture.begin, head, self.meta)

    def _end_response_capture(self, error: str | None) -> None:
        capture, self.resp_capture = self.resp_capture, None
        if capture is not None:
            self._capture(capture.end, self.meta, error)

    def _capture(self, fn: Any, *args: Any) -> Any:
        """Call a capture hook; a failure never reaches the relay (logged once)."""
        try:
            return fn(*args)
        except Exception:
            if not self._capture_failed:
                self._capture_failed = True
                self.ctx.metrics.capture_errors.labels("hook").inc()
                log.failure("capture failed for {id}", id=self.id)
            return None

    def _bug(self, failure: Failure) -> None:
        log.failure("proxy bug in exchange {id}", failure=failure, id=self.id)
        if self.phase is not Phase.DONE:
            self.request.abort_connection()
            self._finalize("internal error")


class _Discard(Protocol):
    """Reads and drops a response nobody wants any more."""

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]
        pass


def _target_url(route: RouteConfig, match: Matched[Any], query: bytes | None) -> str:
    dest = route.destination
    if not route.strip_prefix:
        url = dest.origin + match.prefix_raw + match.remainder_raw
    elif match.pattern.subtree:
        url = dest.url + match.remainder_raw
    else:
        url = dest.exact_url
    if query is not None:
        url += "?" + query.decode("utf-8", "surrogateescape")
    return url


def _all_pairs(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, values in headers.getAllRawHeaders() for value in values]


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _client_address(request: ProxyRequest) -> str | None:
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    return f"{host}:{peer.port}" if host is not None else None


def _describe(failure: Failure) -> str:
    """A one-line reason for an upstream failure."""
    if failure.check(CancelledError):
        return "cancelled"
    reasons = getattr(failure.value, "reasons", None)
    if failure.check(ResponseNeverReceived) and not reasons:
        return "connection closed before a response"
    if reasons:
        return _describe(reasons[0])
    value = failure.value
    text = str(value).strip() or type(value).__name__
    return " ".join(text.split())
