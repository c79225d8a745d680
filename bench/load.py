"""Load generation: ``wrk`` for request rate and latency, and small Python clients for SSE
timing, idle streams and one big download.

All of them run on the load core (this harness is pinned there and its children inherit
the affinity). Every run is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# ----------------------------------------------------------------------------- wrk

WRK_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"bytes\\": %%d, " ..
    "\\"connect\\": %%d, \\"read\\": %%d, \\"write\\": %%d, \\"status\\": %%d, " ..
    "\\"timeout\\": %%d, \\"p50_us\\": %%d, \\"p90_us\\": %%d, \\"p99_us\\": %%d, " ..
    "\\"mean_us\\": %%.1f, \\"max_us\\": %%d}\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def wrk_script(path: Path, body: bytes) -> Path:
    text = body.decode()
    assert "]==]" not in text
    path.write_text(WRK_LUA % text)
    return path


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, float]:
    """One wrk run (one thread: the load core is shared with the upstream). Returns
    req/s, latency percentiles in microseconds and error counts."""
    wrk = shutil.which("wrk")
    assert wrk, "wrk is not installed"
    cmd = [
        wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
        "-s", str(script), url,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    match = re.search(r"^BENCHJSON (\{.*\})$", out.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr}")
    data = json.loads(match.group(1))
    seconds = data["duration_us"] / 1e6
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": data["requests"] / seconds if seconds else 0.0,
        "requests": data["requests"],
        "errors": errors,
        "status_errors": data["status"],
        "p50_us": data["p50_us"],
        "p90_us": data["p90_us"],
        "p99_us": data["p99_us"],
        "mean_us": data["mean_us"],
    }


# ----------------------------------------------------------------------------- HTTP streams


class StreamClient(asyncio.Protocol):
    """One HTTP/1.1 request whose response body is read incrementally and split into SSE
    events (``\\n\\n``-terminated). ``on_event(recv_ns, event)`` is called for each event,
    with the ``monotonic_ns`` of the ``data_received`` call that completed it.

    Handles chunked, Content-Length and close-delimited bodies. ``done`` resolves to the
    status code when the body ends (or with an exception on a reset / early close).
    """

    def __init__(self, request: bytes, on_event: Callable[[int, bytes], None]) -> None:
        self.request = request
        self.on_event = on_event
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.sent_ns = 0
        self.status = 0
        self._head = b""
        self._in_body = False
        self._mode = "close"
        self._remaining = 0  # content-length left, or bytes left in the current chunk
        self._chunk_state = "size"  # size | data | crlf | trailer
        self._raw = b""
        self._events = b""
        self.body_bytes = 0
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sent_ns = time.monotonic_ns()
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            self._in_body = True
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip().lower()
            if "chunked" in headers.get("transfer-encoding", ""):
                self._mode = "chunked"
            elif "content-length" in headers:
                self._mode = "length"
                self._remaining = int(headers["content-length"])
                if self._remaining == 0:
                    self._finish()
                    return
        if self._mode == "chunked":
            self._feed_chunked(data, now)
        elif self._mode == "length":
            data = data[: self._remaining]
            self._remaining -= len(data)
            self._body(data, now)
            if self._remaining == 0:
                self._finish()
        else:
            self._body(data, now)

    def _feed_chunked(self, data: bytes, now: int) -> None:
        self._raw += data
        while self._raw and not self.done.done():
            if self._chunk_state == "size":
                end = self._raw.find(b"\r\n")
                if end < 0:
                    return
                size = int(self._raw[:end].split(b";")[0], 16)
                self._raw = self._raw[end + 2 :]
                self._remaining = size
                self._chunk_state = "data" if size else "trailer"
            elif self._chunk_state == "data":
                piece = self._raw[: self._remaining]
                self._raw = self._raw[len(piece) :]
                self._remaining -= len(piece)
                self._body(piece, now)
                if self._remaining == 0:
                    self._chunk_state = "crlf"
            elif self._chunk_state == "crlf":
                if len(self._raw) < 2:
                    return
                self._raw = self._raw[2:]
                self._chunk_state = "size"
            else:  # trailer: ends with an empty line
                if self._raw.startswith(b"\r\n"):
                    self._finish()
                    return
                end = self._raw.find(b"\r\n")
                if end < 0:
                    return
                self._raw = self._raw[end + 2 :]

    def _body(self, data: bytes, now: int) -> None:
        self.body_bytes += len(data)
        self._events += data
        while True:
            end = self._events.find(b"\n\n")
            if end < 0:
                return
            event, self._events = self._events[:end], self._events[end + 2 :]
            self.on_event(now, event)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self._closing:
            self.done.cancel()
            return
        if self._in_body and self._mode == "close":
            self.done.set_result(self.status)
        else:
            self.done.set_exception(ConnectionError(f"connection lost early: {exc}"))

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()


def http_request(url: str, method: str = "GET", body: bytes = b"", close: bool = False) -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: */*"]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _open(url: str, request: bytes, on_event: Callable[[int, bytes], None]) -> StreamClient:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: StreamClient(request, on_event), parts.hostname, parts.port
    )
    return client


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(q / 100.0 * (len(values) - 1))))
    return values[index]


# ----------------------------------------------------------------------------- SSE timing


@dataclass
class SseResult:
    streams: int
    ok: int
    events: int
    delay_p50_us: float
    delay_p99_us: float
    ttfe_p50_us: float
    ttfe_p99_us: float
    errors: list[str] = field(default_factory=list)


async def _sse_timing(url: str, streams: int, timeout: float, stagger: float) -> SseResult:
    delays: list[float] = []
    ttfes: list[float] = []
    errors: list[str] = []

    async def one(index: int) -> int:
        await asyncio.sleep(stagger * index / streams)
        first: list[int] = []
        client_box: list[StreamClient] = []

        def on_event(now: int, event: bytes) -> None:
            if not first:
                first.append(now)
                ttfes.append((now - client_box[0].sent_ns) / 1000.0)
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    sent = int(line[6:].split(b" ", 1)[0])
                    delays.append((now - sent) / 1000.0)

        client = await _open(url, http_request(url), on_event)
        client_box.append(client)
        try:
            return await client.done
        finally:
            client.close()

    tasks = [asyncio.ensure_future(one(i)) for i in range(streams)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
        errors.append("timeout")
    ok = 0
    for task in done:
        exc = task.exception()
        if exc is not None:
            errors.append(repr(exc))
        elif task.result() == 200:
            ok += 1
        else:
            errors.append(f"status {task.result()}")
    return SseResult(
        streams=streams,
        ok=ok,
        events=len(delays),
        delay_p50_us=_pct(delays, 50),
        delay_p99_us=_pct(delays, 99),
        ttfe_p50_us=_pct(ttfes, 50),
        ttfe_p99_us=_pct(ttfes, 99),
        errors=errors[:5],
    )


def sse_timing(url: str, streams: int, timeout: float, stagger: float = 0.1) -> SseResult:
    """``streams`` concurrent GETs of a timestamped SSE stream, started evenly over
    ``stagger`` seconds (not all in the same millisecond: that would measure a burst of
    connection setups): per-event delivery delay (receive time minus the upstream's send
    time) and time to first event (from sending the request)."""
    return asyncio.run(_sse_timing(url, streams, timeout, stagger))


# ----------------------------------------------------------------------------- LLM streams


async def _llm_streams(
    url: str, body: bytes, streams: int, timeout: float, stagger: float
) -> dict[str, float]:
    ttfes: list[float] = []
    totals: list[float] = []
    gaps: list[float] = []
    errors: list[str] = []

    async def one(index: int) -> None:
        await asyncio.sleep(stagger * index / streams)
        times: list[int] = []
        client = await _open(url, http_request(url, "POST", body), lambda t, e: times.append(t))
        try:
            status = await client.done
        finally:
            client.close()
        if status != 200 or not times:
            errors.append(f"status {status}, {len(times)} events")
            return
        ttfes.append((times[0] - client.sent_ns) / 1000.0)
        totals.append((times[-1] - client.sent_ns) / 1000.0)
        gaps.extend((b - a) / 1000.0 for a, b in itertools.pairwise(times))

    tasks = [asyncio.ensure_future(one(i)) for i in range(streams)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
        errors.append("timeout")
    for task in done:
        if task.exception() is not None:
            errors.append(repr(task.exception()))
    return {
        "ok": float(len(totals)),
        "ttfe_p50_us": _pct(ttfes, 50),
        "ttfe_p99_us": _pct(ttfes, 99),
        "total_p50_us": _pct(totals, 50),
        "gap_p99_us": _pct(gaps, 99),
        "errors": float(len(errors)),
    }


def llm_streams(
    url: str, body: bytes, streams: int, timeout: float, stagger: float = 0.1
) -> dict[str, float]:
    """``streams`` concurrent streamed chat completions from the mock LLM (started evenly
    over ``stagger`` seconds): time to first event, to last event, and the p99 gap between
    events."""
    return asyncio.run(_llm_streams(url, body, streams, timeout, stagger))


# ----------------------------------------------------------------------------- idle streams


async def _idle_streams(
    url: str, count: int, hold: Callable[[], dict[str, float]], timeout: float, batch: int
) -> dict[str, float]:
    clients: list[StreamClient] = []
    got_event: list[asyncio.Future[None]] = []
    errors = 0
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()

    async def one() -> None:
        nonlocal errors
        fut: asyncio.Future[None] = loop.create_future()

        def on_event(now: int, event: bytes) -> None:
            if not fut.done():
                fut.set_result(None)

        try:
            client = await asyncio.wait_for(_open(url, http_request(url), on_event), 10)
        except (TimeoutError, OSError):
            errors += 1
            return
        clients.append(client)
        try:
            await asyncio.wait_for(asyncio.shield(fut), 15)
        except TimeoutError:
            errors += 1
            return
        got_event.append(fut)

    try:
        for start in range(0, count, batch):
            if time.monotonic() - t0 > timeout:
                break
            await asyncio.gather(*(one() for _ in range(min(batch, count - start))))
        open_time = time.monotonic() - t0
        await asyncio.sleep(0.5)
        alive = sum(1 for c in clients if not c.done.done())
        result = hold()
        result.update(
            {
                "opened": float(len(got_event)),
                "alive": float(alive),
                "errors": float(errors),
                "open_seconds": open_time,
            }
        )
        return result
    finally:
        for client in clients:
            client.close()
        await asyncio.sleep(0.2)


def idle_streams(
    url: str,
    count: int,
    hold: Callable[[], dict[str, float]],
    timeout: float = 60.0,
    batch: int = 50,
) -> dict[str, float]:
    """Open ``count`` SSE streams (in batches) that each get one event and then idle; once
    all are open, call ``hold()`` (which measures the proxy) while they are held."""
    return asyncio.run(_idle_streams(url, count, hold, timeout, batch))


# ----------------------------------------------------------------------------- one big body


def big_download(url: str, size: int, timeout: float) -> dict[str, float]:
    """GET ``url`` (``size`` bytes) as fast as possible with ``Connection: close`` and count
    what arrives until the connection closes. MB/s is ``size`` over the time from sending
    the request to the last byte."""
    parts = urlsplit(url)
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    total = 0
    head_len = -1
    head = b""
    deadline = time.monotonic() + timeout
    timed_out = False
    status = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        t0 = time.monotonic()
        s.sendall(http_request(url, close=True))
        while True:
            if time.monotonic() > deadline:
                timed_out = True
                break
            n = s.recv_into(view)
            if n == 0:
                break
            if head_len < 0:
                head += bytes(view[:n])
                end = head.find(b"\r\n\r\n")
                if end >= 0:
                    head_len = end + 4
                    total = len(head) - head_len
                    status = int(head.split(b" ", 2)[1])
            else:
                total += n
        elapsed = time.monotonic() - t0
    chunked = b"chunked" in head.lower()
    body = total if not chunked else min(total, size)
    return {
        "status": float(status),
        "bytes": float(body),
        "complete": float(body >= size and not timed_out),
        "seconds": elapsed,
        "mb_s": body / elapsed / 1e6 if elapsed > 0 else 0.0,
    }


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaN
    return statistics.median(clean) if clean else float("nan")


def warm(url: str, count: int = 20, body: bytes = b"") -> None:
    """A few sequential requests: fills connection pools and lazy imports."""
    parts = urlsplit(url)
    for _ in range(count):
        with (
            contextlib.suppress(OSError),
            socket.create_connection((parts.hostname, parts.port), timeout=5) as s,
        ):
            s.sendall(http_request(url, "POST" if body else "GET", body, close=True))
            while s.recv(65536):
                pass
