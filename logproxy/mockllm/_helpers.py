"""Test helpers under ``/mock/``: raw bytes, echo, statuses, slow headers, drops, generic SSE."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from http import HTTPStatus

from twisted.internet.interfaces import IReactorTime
from twisted.web.server import NOT_DONE_YET, Request

from ._common import ApiError, dumps
from ._stream import Emitter

#: ``/mock/bytes`` and ``/mock/drop`` send this, repeated; byte ``i`` is ``BYTE_PATTERN[i % 16]``.
BYTE_PATTERN = b"0123456789abcdef"
#: ``/mock/echo`` includes the body as text up to this size.
ECHO_BODY_LIMIT = 64 * 1024


def pattern_chunks(size: int, chunk: int) -> Iterator[bytes]:
    """``size`` pattern bytes in ``chunk``-sized pieces; full pieces are cached, not rebuilt."""
    period = len(BYTE_PATTERN)
    ring = BYTE_PATTERN * (chunk // period + 2)
    cache: dict[int, bytes] = {}
    sent = 0
    while sent < size:
        count = min(chunk, size - sent)
        offset = sent % period
        if count == chunk:
            block = cache.get(offset)
            if block is None:
                block = cache[offset] = ring[offset : offset + count]
        else:
            block = ring[offset : offset + count]
        yield block
        sent += count


def _arg(request: Request, name: str) -> str | None:
    values = request.args.get(name.encode()) if request.args else None
    return values[-1].decode("latin-1") if values else None


def _int_arg(request: Request, name: str, default: int, high: int = 1 << 50) -> int:
    raw = _arg(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}: not an integer: {raw!r}") from None
    if not 0 <= value <= high:
        raise ApiError(400, f"{name}: out of range [0, {high}]")
    return value


def _seconds_arg(request: Request, name: str, default: float) -> float:
    raw = _arg(request, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name}: not a number: {raw!r}") from None
    if not 0.0 <= value <= 3600.0:
        raise ApiError(400, f"{name}: out of range [0, 3600]")
    return value


def mock_bytes(request: Request, clock: IReactorTime) -> int:
    """``GET /mock/bytes?size=N&chunk=M[&chunked=1]``: N pattern bytes, pushed with backpressure."""
    size = _int_arg(request, "size", 1024 * 1024)
    chunk = max(1, _int_arg(request, "chunk", 65536, 64 * 1024 * 1024))
    request.setHeader(b"content-type", b"application/octet-stream")
    if _arg(request, "chunked") not in ("1", "true", "yes"):
        request.setHeader(b"content-length", b"%d" % size)
    steps = ((0.0, block) for block in pattern_chunks(size, chunk))
    Emitter(request, clock, steps).start(send_headers=True)
    return NOT_DONE_YET


def mock_echo(request: Request) -> bytes:
    """``/mock/echo``: what arrived (method, path, query, headers in order, body digest)."""
    digest = hashlib.sha256()
    length = 0
    head = bytearray()
    content = request.content
    if content is not None:
        content.seek(0)
        while block := content.read(65536):
            digest.update(block)
            length += len(block)
            if len(head) <= ECHO_BODY_LIMIT:
                head += block
    headers = [
        [name.decode("latin-1").lower(), value.decode("latin-1")]
        for name, values in request.requestHeaders.getAllRawHeaders()
        for value in values
    ]
    result: dict[str, object] = {
        "method": (request.method or b"").decode("latin-1"),
        "path": (request.path or b"").decode("latin-1"),
        "query": (request.uri or b"").partition(b"?")[2].decode("latin-1"),
        "headers": headers,
        "body_sha256": digest.hexdigest(),
        "body_len": length,
    }
    if length <= ECHO_BODY_LIMIT:
        with contextlib.suppress(UnicodeDecodeError):
            result["body"] = bytes(head).decode("utf-8")
    request.setHeader(b"content-type", b"application/json")
    return dumps(result)


def mock_status(request: Request, code_text: str) -> bytes:
    """``/mock/status/<code>``: that status with a small JSON body."""
    try:
        code = int(code_text)
    except ValueError:
        raise ApiError(400, f"not a status code: {code_text!r}") from None
    if not 200 <= code <= 599:
        raise ApiError(400, "status must be in [200, 599]")
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = "Mock Status"
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return dumps({"status": code, "message": reason})


def mock_slow_headers(request: Request, clock: IReactorTime) -> int:
    """``/mock/slow-headers?delay=S``: nothing at all for S seconds, then a small JSON body."""
    delay = _seconds_arg(request, "delay", 1.0)
    body = dumps({"delay": delay})
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", b"%d" % len(body))
    Emitter(request, clock, [(delay, body)]).start()
    return NOT_DONE_YET


def mock_drop(request: Request, clock: IReactorTime) -> int:
    """``/mock/drop?after=N``: promise far more than N bytes, send N, then reset the connection."""
    after = _int_arg(request, "after", 1024)
    request.setHeader(b"content-type", b"application/octet-stream")
    request.setHeader(b"content-length", b"%d" % (after + max(after, 1024 * 1024)))
    steps = ((0.0, block) for block in pattern_chunks(after, 65536))
    Emitter(request, clock, steps, abort=True).start(send_headers=True)
    return NOT_DONE_YET


def mock_sse(request: Request, clock: IReactorTime) -> int:
    """``/mock/sse?events=N&interval=S&size=B``: N ``message`` events of B data bytes each."""
    events = _int_arg(request, "events", 10)
    interval = _seconds_arg(request, "interval", 0.0)
    size = _int_arg(request, "size", 32, 64 * 1024 * 1024)
    payload = b"".join(pattern_chunks(size, max(size, 1)))
    request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
    request.setHeader(b"cache-control", b"no-cache")

    def steps() -> Iterator[tuple[float, bytes]]:
        for index in range(events):
            event = b"id: %d\nevent: message\ndata: %s\n\n" % (index, payload)
            yield (interval if index else 0.0), event

    Emitter(request, clock, steps()).start(send_headers=True)
    return NOT_DONE_YET
