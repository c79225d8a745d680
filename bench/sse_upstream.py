"""A tiny SSE upstream that timestamps every event, for measuring the delay a proxy adds.

``python bench/sse_upstream.py --port N`` (plain asyncio, no dependencies). Endpoints:

- ``GET /sse/stream?events=N&interval=MS&pad=B``: ``N`` events ``data: <t> <pad>\\n\\n``,
  ``MS`` milliseconds apart (the first at once), where ``<t>`` is ``time.monotonic_ns()``
  taken just before the event is written. The client, on the same machine, records its own
  ``monotonic_ns()`` on receipt: the difference is the event's delivery delay. Each stream
  gets a random phase within the interval so that concurrent streams do not tick together.
- ``GET /sse/idle``: the headers and one event, then nothing until the client goes away
  (at most ``--idle-max`` seconds): an idle LLM stream.

HTTP/1.1 requests get a chunked body and keep-alive; HTTP/1.0 requests (Twisted's
``ReverseProxyResource`` sends those) get an unframed body ended by closing the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from urllib.parse import parse_qs, urlsplit

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"X-Accel-Buffering: no\r\n"
)


class Stream:
    def __init__(self, writer: asyncio.StreamWriter, chunked: bool) -> None:
        self.writer = writer
        self.chunked = chunked

    async def start(self) -> None:
        if self.chunked:
            self.writer.write(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        else:
            self.writer.write(HEAD + b"Connection: close\r\n\r\n")

    async def event(self, pad: bytes) -> None:
        data = b"data: %d %s\n\n" % (time.monotonic_ns(), pad)
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.writer.write(data)
        await self.writer.drain()

    async def end(self) -> None:
        if self.chunked:
            self.writer.write(b"0\r\n\r\n")
            await self.writer.drain()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = ([*lines[0].split(" ", 2), "", ""])[:3]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length:
        await reader.readexactly(length)
    return method, target, {**headers, ":version": version}


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle_max: float):
    try:
        while True:
            request = await read_request(reader)
            if request is None:
                return
            _method, target, headers = request
            http11 = headers[":version"] == "HTTP/1.1"
            keep = http11 and headers.get("connection", "").lower() != "close"
            url = urlsplit(target)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path == "/sse/stream":
                await stream(writer, http11, query)
            elif url.path == "/sse/idle":
                await idle(reader, writer, http11, idle_max)
                return
            else:
                body = b"not found\n"
                writer.write(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            if not keep:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def stream(writer: asyncio.StreamWriter, chunked: bool, query: dict[str, str]) -> None:
    events = int(query.get("events", "10"))
    interval = float(query.get("interval", "10")) / 1000.0
    pad = b"x" * int(query.get("pad", "64"))
    s = Stream(writer, chunked)
    await s.start()
    loop = asyncio.get_running_loop()
    start = loop.time() + random.uniform(0.0, interval)
    await s.event(pad)
    for index in range(1, events):
        delay = start + index * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await s.event(pad)
    await s.end()


async def idle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunked: bool, idle_max: float
) -> None:
    s = Stream(writer, chunked)
    await s.start()
    await s.event(b"idle")
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
        # Returns when the client (the proxy) closes or resets the connection.
        await asyncio.wait_for(reader.read(), idle_max)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--idle-max", type=float, default=900.0)
    args = parser.parse_args()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.idle_max), args.host, args.port, backlog=4096
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
