"""Process lifecycle: graceful SIGTERM in the foreground, daemon start/stop with a pidfile."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    PROXY_LISTENING,
    TWISTD,
    Mock,
    assert_complete,
    proxy_config,
    start_logproxy,
    wait_capture,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.e2e


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_lets_a_stream_in_flight_finish(tmp_path: Path, mock: Mock) -> None:
    routes = {"helpers": {"pattern": "/helpers/", "destination": f"{mock.origin}/mock/"}}
    config = proxy_config(tmp_path / "logs", routes, server={"shutdown_timeout": 10})
    lp = start_logproxy(tmp_path, config)
    conn = http.client.HTTPConnection("localhost", lp.port, timeout=10)
    conn.request("GET", "/helpers/sse?events=10&interval=0.1")
    response = conn.getresponse()
    first = response.readline()
    assert first == b"id: 0\n"

    lp.proc.popen.send_signal(signal.SIGTERM)
    lp.wait_log(r"waiting up to 10(\.0)?s for 1 requests in flight")
    with pytest.raises(ConnectionRefusedError):  # the listener is closed at once
        http.client.HTTPConnection("localhost", lp.port, timeout=5).connect()
    rest = response.read()  # ...but the stream in flight runs to its end
    conn.close()
    assert (first + rest).count(b"event: message\n") == 10

    assert lp.proc.popen.wait(10) in (0, -signal.SIGTERM)  # twistd re-raises the signal
    assert "Server Shut Down." in lp.log()
    assert "Traceback" not in lp.log()
    capture = wait_capture(lp.log_dir, response.headers["X-Logproxy-Id"])
    assert_complete(capture, "helpers", 200)
    assert capture.response.endswith(first + rest)


@pytest.fixture
def daemon_pidfile(tmp_path: Path) -> Iterator[Path]:
    """The pidfile path; whatever it names is killed in teardown if the test left it running."""
    pidfile = tmp_path / "logproxy.pid"
    yield pidfile
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text())
        # a stale pidfile may name a recycled pid: only kill our own daemon
        if str(tmp_path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)


def test_daemon_start_request_stop(tmp_path: Path, mock: Mock, daemon_pidfile: Path) -> None:
    routes = {"mock": {"pattern": "/mock/", "destination": f"{mock.origin}/v1/"}}
    config = write_config(tmp_path, proxy_config(tmp_path / "logs", routes))
    log = tmp_path / "logproxy.log"
    result = subprocess.run(
        [
            TWISTD,
            "--pidfile",
            str(daemon_pidfile),
            "--logfile",
            str(log),
            "logproxy",
            "--config",
            str(config),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    pid = wait_for(
        lambda: daemon_pidfile.exists() and int(daemon_pidfile.read_text() or 0), what="pidfile"
    )
    assert pid_alive(pid)
    match = wait_for(lambda: PROXY_LISTENING.search(log.read_text()), what="the daemon to listen")
    url = f"http://localhost:{match.group(1)}/mock/models"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert b"gpt-4o-mini" in response.read()
        capture_id = response.headers["X-Logproxy-Id"]
    assert_complete(wait_capture(tmp_path / "logs", capture_id), "mock", 200)

    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not daemon_pidfile.exists(), what="the pidfile to be removed")
    wait_for(lambda: not pid_alive(pid), what="the daemon to exit")


def test_daemon_port_in_use_fails_fast(tmp_path: Path, daemon_pidfile: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, {"server": {"port": port}, "logging_server": {"port": 0}})
        proc = subprocess.Popen(
            [
                TWISTD,
                "--pidfile",
                str(daemon_pidfile),
                "--logfile",
                str(tmp_path / "x.log"),
                "logproxy",
                "--config",
                str(config),
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            output, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("twistd (daemon mode) did not return within 5 s")
    assert proc.returncode != 0
    assert "Traceback" not in output and len(output.splitlines()) <= 3
    assert "in use" in output or "in use" in (tmp_path / "x.log").read_text()
    assert not daemon_pidfile.exists()
