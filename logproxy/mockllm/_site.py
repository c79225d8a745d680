"""Routing and response plumbing: one leaf resource with a dict of routes, a silent Site."""

from __future__ import annotations

import gzip as gzip_module
from collections.abc import Callable, Iterator
from itertools import chain, islice
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from . import _anthropic, _helpers, _openai
from ._common import (
    ApiError,
    Builder,
    Flavor,
    JsonPlan,
    Knobs,
    Plan,
    decode_body,
    error_body,
    new_id,
    parse_json_body,
    parse_knobs,
)
from ._stream import Emitter, truncate

Handler = Callable[[Request], "bytes | int"]

_REQUEST_ID = {"openai": b"x-request-id", "anthropic": b"request-id"}
_JSON = [b"application/json"]
_SSE = [b"text/event-stream; charset=utf-8"]


class MockResource(Resource):
    """The whole API as a single leaf resource: a dict lookup per request, no traversal."""

    isLeaf = True

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.clock = clock
        post, get, anything = {b"POST"}, {b"GET"}, None
        llm = self._llm
        self.routes: dict[bytes, tuple[set[bytes] | None, Handler]] = {
            b"/v1/chat/completions": (post, llm("openai", _openai.chat_completions)),
            b"/v1/completions": (post, llm("openai", _openai.completions)),
            b"/v1/embeddings": (post, llm("openai", _openai.embeddings)),
            b"/v1/responses": (post, llm("openai", _openai.responses)),
            b"/v1/messages": (post, llm("anthropic", _anthropic.messages)),
            b"/v1/models": (get, self._models),
            b"/mock/bytes": (get, lambda r: _helpers.mock_bytes(r, clock)),
            b"/mock/echo": (anything, _helpers.mock_echo),
            b"/mock/slow-headers": (get, lambda r: _helpers.mock_slow_headers(r, clock)),
            b"/mock/drop": (get, lambda r: _helpers.mock_drop(r, clock)),
            b"/mock/sse": (get, lambda r: _helpers.mock_sse(r, clock)),
        }

    def render(self, request: Request) -> bytes | int:
        path = request.path or b""
        route = self.routes.get(path)
        flavor: Flavor = "anthropic" if path == b"/v1/messages" else "openai"
        try:
            if route is None:
                if path.startswith(b"/mock/status/"):
                    return _helpers.mock_status(request, path[13:].decode("latin-1"))
                raise ApiError(404, f"Unknown path: {path.decode('latin-1')}", "not_found")
            methods, handler = route
            if methods is not None and request.method not in methods:
                raise ApiError(405, f"Method {request.method!r} not allowed")
            return handler(request)
        except ApiError as err:
            return self._error(request, flavor, err)

    @staticmethod
    def _error(request: Request, flavor: Flavor, err: ApiError) -> bytes:
        request.setResponseCode(err.status)
        request.responseHeaders.setRawHeaders(b"content-type", _JSON)
        request.responseHeaders.setRawHeaders(_REQUEST_ID[flavor], [new_id("req_").encode()])
        return error_body(flavor, err)

    def _models(self, request: Request) -> bytes:
        request.responseHeaders.setRawHeaders(b"content-type", _JSON)
        if request.requestHeaders.hasHeader(b"anthropic-version"):
            return _anthropic.models_anthropic()
        return _openai.models_openai()

    def _llm(self, flavor: Flavor, builder: Builder) -> Handler:
        """Wrap an API builder: decode and parse the body, read knobs, serve the plan."""

        def handle(request: Request) -> bytes | int:
            headers = request.requestHeaders
            try:
                raw = _read_body(request)
                data = decode_body(raw, headers.getRawHeaders(b"content-encoding"))
                body = parse_json_body(data)
                knobs = parse_knobs(lambda name: headers.getRawHeaders(name), body)
                if knobs.status is not None and knobs.status >= 400:
                    raise ApiError(knobs.status, f"mock: forced status {knobs.status}")
                plan = builder(body, knobs, int(self.clock.seconds()))
            except ApiError as err:
                return self._error(request, flavor, err)
            request.responseHeaders.setRawHeaders(_REQUEST_ID[flavor], [new_id("req_").encode()])
            if knobs.status is not None:
                request.setResponseCode(knobs.status)
            return self._serve(request, plan, knobs)

        return handle

    def _serve(self, request: Request, plan: Plan, knobs: Knobs) -> bytes | int:
        headers = request.responseHeaders
        if knobs.gzip:
            headers.setRawHeaders(b"content-encoding", [b"gzip"])
        if isinstance(plan, JsonPlan):
            headers.setRawHeaders(b"content-type", _JSON)
            return self._serve_json(request, plan, knobs)
        headers.setRawHeaders(b"content-type", _SSE)
        headers.setRawHeaders(b"cache-control", [b"no-cache"])
        events: Iterator[tuple[float, bytes]] = plan.events
        if knobs.drop_after is not None:
            events = islice(events, knobs.drop_after)
        abort = knobs.drop_after is not None
        Emitter(request, self.clock, events, gzip=knobs.gzip, abort=abort).start(send_headers=True)
        return NOT_DONE_YET

    def _serve_json(self, request: Request, plan: JsonPlan, knobs: Knobs) -> bytes | int:
        """Small bodies go out in one piece with Content-Length; huge ones are streamed."""
        blocks, drop = plan.blocks, knobs.drop_after
        first = next(blocks, b"")
        second = next(blocks, None)
        if second is None:
            body = gzip_module.compress(first, 5, mtime=0) if knobs.gzip else first
            if drop is None and plan.delay <= 0:
                return body  # Twisted sets Content-Length
            request.setHeader(b"content-length", b"%d" % len(body))
            step = (plan.delay, body if drop is None else body[:drop])
            Emitter(request, self.clock, [step], abort=drop is not None).start()
            return NOT_DONE_YET
        stream: Iterator[bytes] = chain((first, second), blocks)
        if drop is not None:
            stream = truncate(stream, drop)
        steps = ((plan.delay if i == 0 else 0.0, b) for i, b in enumerate(stream))
        Emitter(request, self.clock, steps, gzip=knobs.gzip, abort=drop is not None).start()
        return NOT_DONE_YET


def _read_body(request: Request) -> bytes:
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read()
    return data


class MockSite(Site):
    """A Site without per-request logging (nor its once-a-second log clock) unless asked."""

    noisy = False
    displayTracebacks = False

    def __init__(self, resource: Resource, *, access_log: bool = False, **kwargs: Any) -> None:
        # No form parsing: it costs more per request than the mock's own work.
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, **kwargs)  # type: ignore[no-untyped-call]
        self.access_log = access_log

    def startFactory(self) -> None:
        if self.access_log:
            super().startFactory()

    def stopFactory(self) -> None:
        if self.access_log:
            super().stopFactory()

    def log(self, request: Any) -> None:
        if self.access_log:
            super().log(request)


def build_site(reactor: Any = None, *, access_log: bool = False) -> Site:
    """The mock as a ``Site`` for ``listenTCP``; ``reactor`` also drives all delays."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    return MockSite(MockResource(reactor), access_log=access_log, reactor=reactor)
