"""The logging Site (SPEC section 7): receives captures over PUT, serves health and metrics.

Uploads are streamed: :class:`LogRequest` decides at header time (before Twisted would
buffer the body) whether a request is a capture upload and hands its body to an
:class:`~logproxy.logserver.upload.Upload`. Every other request goes through the usual
``Resource`` tree with a small buffered body.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.resource import Resource

from logproxy.http.channel import channel_protocol
from logproxy.http.streaming import BodyReceiver, StreamingRequestMixin
from logproxy.logserver.upload import (
    MAX_METADATA,
    BadUpload,
    LogServerState,
    MetadataUpdate,
    Upload,
    check_id,
    parse_document,
    parse_target,
)

METADATA_HEADER = b"X-Logproxy-Metadata"


def authorized(request: server.Request, token: str) -> bool:
    """``Authorization: Bearer <token>`` or ``?token=<token>`` (for EventSource and links)."""
    if not token:
        return True
    expected = token.encode()
    header = request.getHeader(b"authorization") or b""
    scheme, _, given = header.partition(b" ")
    if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), expected):
        return True
    query_tokens = request.args.get(b"token", []) if request.args else []
    return any(hmac.compare_digest(t, expected) for t in query_tokens)


class _Discard:
    """Body receiver for a rejected upload: drop whatever still arrives."""

    def body_chunk(self, data: bytes) -> None:
        pass

    def body_complete(self) -> None:
        pass


class LogRequest(StreamingRequestMixin, server.Request):
    """A logging-Site request; capture uploads stream, the rest is buffered (bounded)."""

    upload: Upload | None = None
    rejected = False

    @property
    def state(self) -> LogServerState:
        site: LogServerSite = self.channel.site  # type: ignore[attr-defined]
        return site.state

    def bodyStarted(self, length: int | None) -> BodyReceiver | None:
        self.site = self.channel.site  # type: ignore[attr-defined]
        if self.uri.startswith(b"/") and b"?" in self.uri:
            from twisted.web.http import parse_qs

            self.args = parse_qs(self.uri.split(b"?", 1)[1], 1)
        target = parse_target(self.path) if self.method == b"PUT" else None
        try:
            if target is not None and not target[2]:
                return self._start_upload(target[0], target[1])
            if length is not None and length > MAX_METADATA:
                raise BadUpload(413, f"request body larger than {MAX_METADATA} bytes")
        except BadUpload as e:
            self.reject(e.code, str(e))
            return _Discard()
        return None

    def _start_upload(self, capture_id: str, kind: Any) -> Upload:
        state = self.state
        if not authorized(self, state.token):
            raise BadUpload(401, "missing or wrong bearer token")
        check_id(capture_id)
        if (capture_id, kind) in state.active:
            raise BadUpload(409, "this capture stream is already being uploaded")
        header = self.getHeader(METADATA_HEADER)
        if header is None:
            raise BadUpload(400, f"the {METADATA_HEADER.decode()} header is required")
        doc = parse_document(header, capture_id, kind)
        upload = Upload(state, self, capture_id, kind, doc)
        self.upload = upload
        upload.start()
        return upload

    def reject(self, code: int, message: str) -> None:
        """Answer an error now and close: the body (if any) will not be read."""
        self.rejected = True
        self.setHeader(b"Connection", b"close")
        self.respond_json(code, {"error": message})
        self.state.metrics.logserver_streams.labels(f"rejected_{code}").inc()
        self.loseConnection()

    def respond_json(self, code: int, payload: object) -> None:
        """Write a JSON answer; finish once the body is in (finishing earlier is not allowed)."""
        if self.is_disconnected or self.finished or self.startedWriting:
            return
        body = json.dumps(payload).encode()
        self.setResponseCode(code)
        self.setHeader(b"Content-Type", b"application/json")
        self.setHeader(b"Content-Length", b"%d" % len(body))
        self.write(body)
        if self.body_done:
            self.finish()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.upload is not None:
            self.upload.connection_lost()


class JSONResource(Resource):
    isLeaf = True

    def __init__(self, payload: object) -> None:
        super().__init__()
        self._body = json.dumps(payload).encode()

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return self._body


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, state: LogServerState) -> None:
        super().__init__()
        self._state = state

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        return self._state.metrics.render()


class CaptureMetadataResource(Resource):
    """``PUT /{uuid}/{request|response}/metadata``: a sender's (final) document."""

    isLeaf = True

    def __init__(self, state: LogServerState) -> None:
        super().__init__()
        self._state = state

    def render_PUT(self, request: LogRequest) -> bytes | int:
        target = parse_target(request.path)
        if target is None or not target[2]:
            return _json_error(request, 404, "no such resource")
        capture_id, kind, _ = target
        try:
            check_id(capture_id)
            assert request.content is not None
            doc = parse_document(request.content.read(), capture_id, kind)
        except BadUpload as e:
            return _json_error(request, e.code, str(e))
        state = self._state
        upload = state.active.get((capture_id, kind))
        if upload is not None:
            upload.apply_final(doc)
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps({"id": capture_id, "stream": kind, "status": "pending"}).encode()
        job = MetadataUpdate(state, capture_id, kind, doc)
        state.writer.submit(job.run, None)
        state.writer.submit(
            lambda _: state.reactor.callFromThread(self._done, request, job, capture_id, kind),
            None,
        )
        return server.NOT_DONE_YET

    def _done(self, request: LogRequest, job: MetadataUpdate, capture_id: str, kind: str) -> None:
        if job.status == 200:
            request.respond_json(200, {"id": capture_id, "stream": kind, "status": "updated"})
        elif job.status == 404:
            request.respond_json(404, {"error": "no such capture stream"})
        else:
            request.respond_json(500, {"error": "cannot write metadata"})

    def render_GET(self, request: server.Request) -> bytes:
        return _json_error(request, 405, "use PUT")


def _json_error(request: server.Request, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps({"error": message}).encode()


class _Root(Resource):
    def __init__(self, state: LogServerState) -> None:
        super().__init__()
        self._captures = CaptureMetadataResource(state)

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        if request.method == b"PUT":
            return self._captures
        return resource.NoResource("no such resource")

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(
            {"service": "logproxy logging server", "health": "/health", "metrics": "/metrics"}
        ).encode()


class _Unauthorized(Resource):
    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="logproxy"')
        return _json_error(request, 401, "missing or wrong bearer token")


class LogServerSite(server.Site):
    """The logging Site. ``state`` is shared with the requests (``channel.site.state``)."""

    requestFactory = LogRequest
    protocol = channel_protocol  # clear 400/414/431 answers to malformed requests

    def __init__(self, state: LogServerState) -> None:
        root = _Root(state)
        root.putChild(b"health", JSONResource({"status": "ok"}))
        root.putChild(b"metrics", MetricsResource(state))
        super().__init__(root, reactor=state.reactor)
        self.state = state
        self.noisy = False

    def getResourceFor(self, request: server.Request) -> resource.IResource:
        if request.path != b"/health" and not authorized(request, self.state.token):
            return _Unauthorized()
        found: resource.IResource = super().getResourceFor(request)
        return found

    def count_rejection(self, status: int) -> None:
        self.state.metrics.logserver_streams.labels(f"rejected_{status}").inc()

    def startFactory(self) -> None:
        pass  # no access-log clock timer

    def log(self, request: Any) -> None:
        pass
