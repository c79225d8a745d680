"""The logging Site (SPEC section 7): receives captures over PUT, serves health and metrics.

Uploads are streamed: :class:`LogRequest` decides at header time (before Twisted would
buffer the body) whether a request is a capture upload and hands its body to an
:class:`~logproxy.logserver.upload.Upload`. Every other request goes through the usual
``Resource`` tree with a small buffered body.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.resource import Resource

from logproxy.http.channel import channel_protocol
from logproxy.http.streaming import BodyReceiver, StreamingRequestMixin
from logproxy.logserver.api import Api, ApiResource
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


#: Set when a request is authorized with ``?token=``, so that the browser UI's own files,
#: its fetches and its EventSource are authorized too (HttpOnly, SameSite=Strict).
TOKEN_COOKIE = b"logproxy_token"


def authorized(request: server.Request, token: str) -> bool:
    """``Authorization: Bearer <token>``, ``?token=<token>`` (for EventSource and links) or,
    for GET and HEAD, the ``logproxy_token`` cookie that ``?token=`` sets (for the UI).

    A wrong bearer token is refused even when a cookie would do: what the client says
    explicitly wins. Other schemes (Basic auth of a reverse proxy in front) are ignored.
    """
    if not token:
        return True
    expected = token.encode()
    header = request.getHeader(b"authorization") or b""
    scheme, _, given = header.partition(b" ")
    if scheme.lower() == b"bearer":
        return hmac.compare_digest(given.strip(), expected)
    if _query_token_ok(request, expected):
        return True
    if request.method not in (b"GET", b"HEAD"):
        return False
    cookie = request.getCookie(TOKEN_COOKIE)
    return cookie is not None and hmac.compare_digest(cookie, cookie_value(token))


def _query_token_ok(request: server.Request, expected: bytes) -> bool:
    query_tokens = request.args.get(b"token", []) if request.args else []
    return any(hmac.compare_digest(t, expected) for t in query_tokens)


def cookie_value(token: str) -> bytes:
    """The cookie holds a value derived from the token (safe in a cookie whatever the
    token's characters), not the token itself."""
    return hmac.new(token.encode(), b"logproxy-ui-cookie", "sha256").hexdigest().encode()


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


#: The web UI's files (``index.html`` is served at ``/``).
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

#: Headers of the UI page: it shows captured (untrusted) content, so no inline script,
#: no framing, and the token in its URL never leaks through a Referer.
_UI_HEADERS = {
    b"Content-Security-Policy": b"default-src 'self'; script-src 'self'; "
    b"style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
}

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}


class StaticFiles(Resource):
    """``/static/*``: the UI's files, revalidated on every load (``no-cache``). Only
    regular files under the directory; no listings, no dot-files, no ``..``."""

    isLeaf = True

    def __init__(self, directory: str) -> None:
        super().__init__()
        self._dir = os.path.realpath(directory)

    def render_GET(self, request: server.Request) -> bytes:
        parts = [p.decode("utf-8", "replace") for p in request.postpath or []]
        if not parts or any(not p or p.startswith(".") or "/" in p or "\\" in p for p in parts):
            return _json_error(request, 404, "no such file")
        path = os.path.realpath(os.path.join(self._dir, *parts))
        if not path.startswith(self._dir + os.sep) or not os.path.isfile(path):
            return _json_error(request, 404, "no such file")
        try:
            with open(path, "rb") as f:  # small files, in the page cache
                data = f.read()
        except OSError:
            return _json_error(request, 404, "no such file")
        content_type = _CONTENT_TYPES.get(os.path.splitext(path)[1].lower())
        request.setHeader(b"Content-Type", (content_type or "application/octet-stream").encode())
        request.setHeader(b"Cache-Control", b"no-cache")
        for name, value in _UI_HEADERS.items():
            request.setHeader(name, value)
        return data


class _Root(Resource):
    def __init__(self, state: LogServerState, static_dir: str) -> None:
        super().__init__()
        self._captures = CaptureMetadataResource(state)
        self._index_html = os.path.join(static_dir, "index.html")

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        if request.method == b"PUT":
            return self._captures
        if path == b"" and not request.postpath:
            return self  # "/" itself
        return _NotFound()

    def render_GET(self, request: server.Request) -> bytes:
        """The web UI when it is installed, else a JSON description of the service."""
        try:
            with open(self._index_html, "rb") as f:  # small, in the page cache
                page = f.read()
        except OSError:
            page = None
        if page is not None:
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            request.setHeader(b"Cache-Control", b"no-cache")
            for name, value in _UI_HEADERS.items():
                request.setHeader(name, value)
            return page
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(
            {
                "service": "logproxy logging server",
                "health": "/health",
                "metrics": "/metrics",
                "api": "/api/requests",
                "openapi": "/api/openapi.json",
            }
        ).encode()


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        return _json_error(request, 404, "no such resource")


#: The 401 answer to a browser opening ``/`` without the token: a form that reloads
#: the page with ``?token=`` (no script, nothing captured in it).
_TOKEN_FORM = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>logproxy: token needed</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 32em; margin: 4em auto">
<h1>logproxy</h1>
<p>This logging server needs its token (<code>logging_server.token</code>).</p>
<form method="get" action="/">
<label>Token <input name="token" type="password" autofocus required></label>
<button type="submit">Open</button>
</form></body></html>
"""


class _Unauthorized(Resource):
    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="logproxy"')
        accept = request.getHeader(b"accept") or b""
        if request.path == b"/" and b"text/html" in accept:  # a browser opening the UI
            request.setResponseCode(401)
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            for name, value in _UI_HEADERS.items():
                request.setHeader(name, value)
            return _TOKEN_FORM
        return _json_error(request, 401, "missing or wrong bearer token")


class LogServerSite(server.Site):
    """The logging Site. ``state`` is shared with the requests (``channel.site.state``)."""

    requestFactory = LogRequest
    protocol = channel_protocol  # clear 400/414/431 answers to malformed requests

    def __init__(
        self, state: LogServerState, api: Api | None = None, static_dir: str | None = None
    ) -> None:
        static_dir = static_dir or STATIC_DIR
        root = _Root(state, static_dir)
        root.putChild(b"health", JSONResource({"status": "ok"}))
        root.putChild(b"metrics", MetricsResource(state))
        if api is None:
            api = Api(reactor=state.reactor, log_dir=state.log_dir, index=None)
        root.putChild(b"api", ApiResource(api))
        if os.path.isdir(static_dir):
            root.putChild(b"static", StaticFiles(static_dir))
        super().__init__(root, reactor=state.reactor)
        self.state = state
        self.api = api
        self.noisy = False

    def getResourceFor(self, request: server.Request) -> resource.IResource:
        token = self.state.token
        if request.path != b"/health" and not authorized(request, token):
            return _Unauthorized()
        if (
            token
            and request.getCookie(TOKEN_COOKIE) is None
            and _query_token_ok(request, token.encode())
        ):
            request.addCookie(
                TOKEN_COOKIE, cookie_value(token), path=b"/", httpOnly=True, sameSite=b"strict"
            )
        found: resource.IResource = super().getResourceFor(request)
        return found

    def count_rejection(self, status: int) -> None:
        self.state.metrics.logserver_streams.labels(f"rejected_{status}").inc()

    def startFactory(self) -> None:
        pass  # no access-log clock timer

    def log(self, request: Any) -> None:
        pass
