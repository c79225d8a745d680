"""A 200 MB response through a real twistd proxy to a client that stalls, then reads:
the proxy's resident memory must stay flat (backpressure, no buffering of the body).

Prints the measured figures (run with ``-s`` to see them).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

SIZE = 200 * 1000 * 1000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_line(path: Path, needle: str, proc: subprocess.Popen[Any], timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if needle in line:
                    return line
        if proc.poll() is not None:
            raise AssertionError(f"process exited: {path.read_text() if path.exists() else ''}")
        time.sleep(0.02)  # polling for the log line
    raise AssertionError(f"no {needle!r} in {path}")


@pytest.fixture(params=["capture on", "capture off"])
def proxy_and_mock(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    capture = request.param == "capture on"
    mock_log = tmp_path / "mock.log"
    mock = subprocess.Popen(
        [sys.executable, "-m", "logproxy.mockllm", "--port", "0"],
        stderr=mock_log.open("w"),
        stdout=subprocess.DEVNULL,
    )
    procs = [mock]
    try:
        line = wait_line(mock_log, "listening on", mock)
        mock_port = int(line.rsplit(":", 1)[1].strip("/ \n"))
        config = tmp_path / "config.yaml"
        config.write_text(
            "server: {port: 0}\n"
            f"logging: {{console: false, log_dir: logs, enabled: {str(capture).lower()}}}\n"
            "logging_server: {port: 0}\n"
            f"routes: {{m: {{pattern: /m/, destination: 'http://127.0.0.1:{mock_port}/mock/'}}}}\n"
        )
        proxy_log = tmp_path / "proxy.log"
        proxy = subprocess.Popen(
            [
                "twistd",
                "-n",
                "--pidfile=",
                f"--logfile={proxy_log}",
                "logproxy",
                "--config",
                str(config),
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        procs.append(proxy)
        line = wait_line(proxy_log, "proxy listening on", proxy)
        port = int(line.rsplit(":", 1)[1].strip("/ \n"))
        yield proxy, port, tmp_path, capture
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_200mb_response_to_a_stalling_client_keeps_memory_flat(proxy_and_mock: Any) -> None:
    proxy, port, tmp_path, capture = proxy_and_mock
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    sock.sendall(f"GET /m/bytes?size={SIZE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    baseline = rss_bytes(proxy.pid)
    received = 0
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    received = len(head.split(b"\r\n\r\n", 1)[1])
    while received < 10_000_000:
        received += len(sock.recv(1 << 20))

    # Stall: stop reading until the proxy's memory stops changing (upstream paused).
    samples: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        samples.append(rss_bytes(proxy.pid))
        window = samples[-20:]
        if len(window) == 20 and max(window) - min(window) < 256 * 1024:
            break
        time.sleep(0.02)  # sampling interval while the client stalls
    stalled = samples[-1]

    peak = max(samples)
    while received < SIZE:
        data = sock.recv(1 << 20)
        assert data, "connection closed early"
        received += len(data)
        if received % (8 << 20) < len(data):
            peak = max(peak, rss_bytes(proxy.pid))
    sock.close()
    peak = max(peak, rss_bytes(proxy.pid))
    mib = 1 << 20
    label = "capture on " if capture else "capture off"
    print(
        f"\n{label}: proxy RSS: baseline {baseline / mib:.1f} MiB, "
        f"stalled {stalled / mib:.1f} MiB, peak {peak / mib:.1f} MiB "
        f"over a {SIZE / 1e6:.0f} MB body (+{(peak - baseline) / mib:.1f} MiB)"
    )
    assert received == SIZE
    if not capture:
        assert peak - baseline < 16 * mib  # nothing but socket buffers
        return
    # bounded by design: socket buffers plus the capture writer's backlog (logging.buffer_size,
    # 64 MiB by default), which fills when the client reads faster than the disk is written
    assert peak - baseline < (64 + 32) * mib
    # and the capture holds the whole body, or says exactly how much it lost
    meta_path = _wait_for_final(tmp_path / "logs")
    meta = __import__("json").loads(meta_path.read_text())
    print(f"capture: truncated={meta['truncated']} bytes_lost={meta['bytes_lost']}")
    assert meta["completed"] is True
    assert meta["truncated"] is (meta["bytes_lost"] > 0)
    assert meta["bytes_written"] + meta["bytes_lost"] > SIZE


def _wait_for_final(log_dir: Path) -> Path:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for path in log_dir.glob("*/*_response_metadata.json"):
            if '"completed_at": null' not in path.read_text():
                return path
        time.sleep(0.05)  # polling for the writer to finish
    raise AssertionError("capture not finalised")
