"""Soak: many concurrent SSE streams through logproxy, capture on, checked byte for byte.

    python -m bench.soak                         # 1,000 streams for 60 s (the issue's soak)
    python -m bench.soak --streams 100 --seconds 10

Every stream reads ``/mock/sse`` from the project's mock upstream through a real twistd
logproxy. The mock's events are deterministic, so the expected body is known: the check
is that every client received exactly it, and that every capture's response body (the
``.bin`` after its header block) is exactly it too (sha256), with zero errors. The proxy's
RSS is sampled throughout; memory per stream = (peak - idle baseline) / streams.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import Proc, StartError, free_port, install_cleanup, raise_nofile


def expected_body(events: int, size: int) -> bytes:
    """What ``/mock/sse?events=N&size=B`` sends (see logproxy/mockllm/_helpers.py)."""
    pattern = b"0123456789abcdef"
    payload = (pattern * (size // len(pattern) + 1))[:size]
    return b"".join(b"id: %d\nevent: message\ndata: %s\n\n" % (i, payload) for i in range(events))


async def one_stream(port: int, path: str) -> tuple[bytes, str | None]:
    """A raw HTTP/1.1 client: returns (de-chunked body, error or None)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        return b"", f"connect: {e}"
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status:
            return b"", f"status {status!r}"
        if b"transfer-encoding: chunked" not in head.lower():
            return await reader.read(), None
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return bytes(body), None
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        return b"", f"read: {type(e).__name__}: {e}"
    finally:
        writer.close()


async def run_streams(
    port: int, path: str, streams: int, ramp: float
) -> list[tuple[bytes, str | None]]:
    tasks = []
    for _ in range(streams):
        tasks.append(asyncio.create_task(one_stream(port, path)))
        await asyncio.sleep(ramp / streams)  # spread the connects over the ramp
    return await asyncio.gather(*tasks)


def capture_bodies(log_dir: Path) -> dict[str, bytes]:
    bodies = {}
    for meta_path in log_dir.glob("*/*_response_metadata.json"):
        meta = json.loads(meta_path.read_text())
        if not meta.get("completed_at"):
            continue
        bin_path = meta_path.with_name(meta["filename"])
        bodies[meta["metadata"]["id"]] = bin_path.read_bytes().split(b"\r\n\r\n", 1)[1]
    return bodies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each stream")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between events")
    parser.add_argument("--size", type=int, default=64, help="bytes of data per event")
    args = parser.parse_args(argv)
    install_cleanup()
    raise_nofile(4 * args.streams + 1024)
    events = max(1, int(args.seconds / args.interval) + 1)
    path = f"/m/sse?events={events}&interval={args.interval}&size={args.size}"
    want = hashlib.sha256(expected_body(events, args.size)).hexdigest()
    work = Path(tempfile.mkdtemp(prefix="logproxy-soak-"))
    mock_port, proxy_port = free_port(), free_port()
    mock = Proc(
        "mock",
        [sys.executable, "-m", "logproxy.mockllm", "--port", str(mock_port)],
        cpu=None,
        log_path=work / "mock.log",
    )
    config = work / "config.yaml"
    config.write_text(
        f"server: {{port: {proxy_port}, idle_timeout: 600}}\n"
        f"logging: {{console: false, log_dir: {work / 'logs'}}}\n"
        "logging_server: {port: 0}\n"
        f"routes: {{m: {{pattern: /m/, destination: 'http://127.0.0.1:{mock_port}/mock/'}}}}\n"
    )
    proxy = Proc(
        "logproxy",
        ["twistd", "-n", "--pidfile=", "logproxy", "--config", str(config)],
        cpu=None,
        log_path=work / "proxy.log",
        cwd=work,
    )
    try:
        mock.wait_port(mock_port)
        proxy.wait_port(proxy_port)
    except StartError as e:
        print(e, file=sys.stderr)
        return 1
    baseline = proxy.rss_kb()
    peak = baseline
    started = time.monotonic()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, proxy.rss_kb())
            await asyncio.sleep(0.5)

    async def soak() -> list[tuple[bytes, str | None]]:
        sampler = asyncio.create_task(sample())
        try:
            return await run_streams(
                proxy_port, path, args.streams, ramp=min(5.0, args.seconds / 4)
            )
        finally:
            sampler.cancel()

    results = asyncio.run(soak())
    took = time.monotonic() - started
    errors = [e for _, e in results if e]
    wrong = sum(1 for body, e in results if not e and hashlib.sha256(body).hexdigest() != want)
    deadline = time.monotonic() + 60
    bodies: dict[str, bytes] = {}
    while time.monotonic() < deadline:  # the writer finishes the last captures
        bodies = capture_bodies(work / "logs")
        if len(bodies) >= args.streams:
            break
        time.sleep(0.5)
    bad_captures = sum(1 for body in bodies.values() if hashlib.sha256(body).hexdigest() != want)
    proxy.stop()
    mock.stop()
    per_stream = (peak - baseline) / args.streams
    print(
        f"streams {args.streams} x {events} events over {took:.1f} s (each ~{args.seconds:.0f} s)"
    )
    print(f"client errors: {len(errors)}  wrong bodies at the client: {wrong}")
    print(f"captures finished: {len(bodies)}/{args.streams}  wrong capture bodies: {bad_captures}")
    print(
        f"proxy RSS: idle {baseline / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
        f"{per_stream:.1f} KiB per stream"
    )
    if errors:
        print("first errors:", errors[:5])
    ok = not errors and not wrong and not bad_captures and len(bodies) == args.streams
    print("RESULT:", "OK" if ok else "FAILED", f"(work dir {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
