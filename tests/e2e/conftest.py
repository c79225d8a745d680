"""End-to-end helpers: real ``twistd logproxy`` and mock-LLM processes, capture-file lookup.

Every process runs in its own temporary directory, listens on an OS-picked port (parsed
from its log) and is stopped with SIGTERM (then SIGKILL) in teardown. Waiting is always a
bounded poll (:func:`wait_for`), never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import openai
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd") if (BIN / "twistd").exists() else (shutil.which("twistd") or "twistd")

#: The API keys the SDKs send; they must never appear in a capture file or a log.
OPENAI_KEY = "sk-e2e-openai-0123456789abcdefghijklmnopqrstuv"
ANTHROPIC_KEY = "sk-ant-e2e-9876543210zyxwvutsrqponmlkjihgf"

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CAPTURE_NAME = re.compile(
    rf"(?P<stamp>(?P<day>\d{{4}}-\d{{2}}-\d{{2}})_\d{{2}}-\d{{2}}-\d{{2}}\.\d{{3}})"
    rf"_(?P<id>{UUID})_(?P<kind>request|response)(?P<suffix>\.bin|_metadata\.json)"
)
PROXY_LISTENING = re.compile(r"proxy listening on http://[^:/]+:(\d+)/")
LOGSERVER_LISTENING = re.compile(r"logging server listening on http://[^:/]+:(\d+)/")
MOCK_LISTENING = re.compile(r"mockllm listening on http://127\.0\.0\.1:(\d+)")

T = TypeVar("T")


# --------------------------------------------------------------------------- polling


def wait_for(probe: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    """A port nobody listens on right now (for settings that cannot take port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- processes


_RUNNING: list[Proc] = []


@dataclass(eq=False)
class Proc:
    """A child process with a bounded, escalating stop."""

    popen: subprocess.Popen[bytes]
    name: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        with contextlib.suppress(ValueError):
            _RUNNING.remove(self)
        return self.popen.returncode


def spawn(
    args: list[str], cwd: Path, name: str, env: dict[str, str] | None = None, **kw: Any
) -> Proc:
    full_env = {**os.environ, **(env or {})}
    proc = Proc(subprocess.Popen(args, cwd=cwd, env=full_env, **kw), name)
    _RUNNING.append(proc)
    return proc


@pytest.fixture(autouse=True, scope="session")
def _stop_leftover_processes() -> Iterator[None]:
    yield
    for proc in reversed(_RUNNING):
        proc.stop()


@pytest.fixture(autouse=True)
def _stop_processes_of_the_test() -> Iterator[None]:
    """Processes a test starts itself end with it (session/module fixtures start theirs first)."""
    before = list(_RUNNING)
    yield
    for proc in reversed([p for p in _RUNNING if p not in before]):
        proc.stop()


def run_twistd(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 15.0
) -> subprocess.CompletedProcess[str]:
    """A twistd command that is expected to return by itself (errors, daemon start)."""
    return subprocess.run(
        [TWISTD, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------- the mock upstream


@dataclass
class Mock:
    proc: Proc
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_mock(workdir: Path) -> Mock:
    workdir.mkdir(parents=True, exist_ok=True)
    err = workdir / "mock.err"
    with err.open("wb") as f:
        proc = spawn(
            [sys.executable, "-m", "logproxy.mockllm", "--port", "0"],
            workdir,
            "mock",
            stdout=subprocess.DEVNULL,
            stderr=f,
        )

    def port() -> int | None:
        if not proc.alive():
            pytest.fail(f"mock exited early: {err.read_text()}")
        m = MOCK_LISTENING.search(err.read_text())
        return int(m.group(1)) if m else None

    return Mock(proc, wait_for(port, what="the mock to listen"))


@pytest.fixture(scope="session")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    m = start_mock(tmp_path_factory.mktemp("mock"))
    yield m
    m.proc.stop()


# --------------------------------------------------------------------------- logproxy


@dataclass
class Logproxy:
    """A running ``twistd -n logproxy`` in ``workdir`` (config, log file and log_dir there)."""

    proc: Proc
    workdir: Path
    log_file: Path
    log_dir: Path
    port: int | None
    logserver_port: int | None

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def logserver_url(self) -> str:
        return f"http://localhost:{self.logserver_port}"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first match of regex ``pattern`` in the process log, once it appears."""
        rx = re.compile(pattern)
        return wait_for(lambda: rx.search(self.log()), timeout, f"{pattern!r} in {self.log_file}")

    def capture(self, capture_id: str, timeout: float = 10.0) -> Capture:
        return wait_capture(self.log_dir, capture_id, timeout)

    def stop(self) -> int | None:
        return self.proc.stop()


def write_config(workdir: Path, config: dict[str, Any], name: str = "config.yaml") -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def proxy_config(
    log_dir: Path, routes: dict[str, dict[str, Any]], **sections: Any
) -> dict[str, Any]:
    """A proxy config on port 0 with the logging Site off (``logging_server.port: 0``)."""
    config: dict[str, Any] = {
        "server": {"port": 0},
        "logging": {"log_dir": str(log_dir)},
        "logging_server": {"port": 0},
        "routes": routes,
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def start_logproxy(
    workdir: Path,
    config: dict[str, Any],
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Logproxy:
    """Start ``twistd -n logproxy`` and wait until every configured listener is up."""
    config_path = write_config(workdir, config)
    log_file = workdir / "proxy.log"
    log_file.unlink(missing_ok=True)
    console = workdir / "proxy.out"  # stdout + stderr: errors before logging starts
    with console.open("wb") as out:
        proc = spawn(
            [
                TWISTD,
                "-n",
                "--pidfile=",
                f"--logfile={log_file}",
                "logproxy",
                "--config",
                str(config_path),
                *args,
            ],
            workdir,
            "logproxy",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wants_proxy = "server" in config or "--port" in args or "LOGPROXY_PORT" in (env or {})
    wants_logserver = config.get("logging_server", {}).get("port", 5602) != 0

    def ports() -> tuple[int | None, int | None] | None:
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        if not proc.alive():
            early = console.read_text(errors="replace")
            pytest.fail(f"logproxy exited with {proc.popen.returncode}:\n{early}{text}")
        proxy = PROXY_LISTENING.search(text)
        logserver = LOGSERVER_LISTENING.search(text)
        if (wants_proxy and not proxy) or (wants_logserver and not logserver):
            return None
        return (
            int(proxy.group(1)) if proxy else None,
            int(logserver.group(1)) if logserver else None,
        )

    port, logserver_port = wait_for(ports, what="logproxy to listen")
    log_dir = Path(config.get("logging", {}).get("log_dir", workdir / "logs"))
    return Logproxy(proc, workdir, log_file, log_dir, port, logserver_port)


def start_log_host(workdir: Path, token: str = "") -> Logproxy:
    """A central log host: no ``server:`` section, only the logging Site.

    ``logging_server.port: 0`` disables the Site (SPEC section 2), so a free port is
    picked here; a lost race for it is retried.
    """
    for attempt in range(3):
        config = {
            "logging": {"log_dir": str(workdir / "host-logs")},
            "logging_server": {"port": free_port(), "token": token},
        }
        try:
            return start_logproxy(workdir, config)
        except pytest.fail.Exception:
            if attempt == 2 or "cannot listen" not in (workdir / "proxy.log").read_text():
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- capture files


@dataclass
class Capture:
    """The four files of one capture, read once both streams are finalised."""

    capture_id: str
    files: dict[str, Path]  # request.bin, request_metadata.json, response.bin, ...
    request_meta: dict[str, Any] = field(default_factory=dict)
    response_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def request(self) -> bytes:
        return self.files["request.bin"].read_bytes()

    @property
    def response(self) -> bytes:
        return self.files["response.bin"].read_bytes()

    def all_bytes(self) -> bytes:
        return b"".join(path.read_bytes() for path in self.files.values())


def capture_files(log_dir: Path, capture_id: str) -> dict[str, Path]:
    """``{"request.bin": path, ...}`` for the files of ``capture_id`` found so far."""
    found: dict[str, Path] = {}
    for path in log_dir.glob(f"*/*_{capture_id}_*"):
        if path.name.startswith("."):
            continue  # a metadata document being replaced atomically
        m = CAPTURE_NAME.fullmatch(path.name)
        assert m, f"unexpected capture file name {path.name}"
        assert path.parent.name == m["day"], f"{path} is not in its day folder"
        suffix = m["suffix"].lstrip("_").lstrip(".")
        found[f"{m['kind']}{'.bin' if suffix == 'bin' else '_metadata.json'}"] = path
    return found


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # not there yet, or (should not happen: atomic replace) half-written
    return doc


def wait_capture(log_dir: Path, capture_id: str, timeout: float = 10.0) -> Capture:
    """Poll until the four files exist and both metadata documents are final."""

    def ready() -> Capture | None:
        files = capture_files(log_dir, capture_id)
        if len(files) < 4:
            return None
        req = _read_json(files["request_metadata.json"])
        resp = _read_json(files["response_metadata.json"])
        if not req or not resp or req.get("completed_at") is None:
            return None
        if resp.get("completed_at") is None:
            return None
        return Capture(capture_id, files, req, resp)

    capture = wait_for(ready, timeout, f"the capture {capture_id} in {log_dir}")
    stems = {CAPTURE_NAME.fullmatch(p.name)["stamp"] for p in capture.files.values()}  # type: ignore[index]
    assert len(stems) == 1, f"the four files must share one timestamp: {stems}"
    return capture


def assert_complete(capture: Capture, route: str | None, status: int) -> None:
    """Both metadata documents say the capture ended whole, with the right sizes."""
    for kind, doc in (("request", capture.request_meta), ("response", capture.response_meta)):
        assert doc["format_version"], doc
        assert doc["stream_type"] == kind
        assert doc["completed"] is True, doc
        assert doc["error"] is None, doc
        assert doc["metadata"]["id"] == capture.capture_id
        assert doc["metadata"]["route"] == route
        assert doc["filename"] == capture.files[f"{kind}.bin"].name
        assert doc["bytes_written"] == capture.files[f"{kind}.bin"].stat().st_size
    assert capture.response_meta["metadata"]["response_status_code"] == status
    # the shared timestamp in the names is the request's start time (UTC, milliseconds)
    started = capture.request_meta["metadata"]["request_started_at"]  # 2025-09-13T02:11:09.123456Z
    stamp = CAPTURE_NAME.fullmatch(capture.files["request.bin"].name)["stamp"]  # type: ignore[index]
    assert stamp == started[:23].replace("T", "_").replace(":", "-")


def split_http(blob: bytes) -> tuple[str, dict[str, str], bytes]:
    """``(start line, {lower-case name: value}, body)`` of a stored .bin stream."""
    head, sep, body = blob.partition(b"\r\n\r\n")
    assert sep, "no header block"
    start, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return start, headers, body


# --------------------------------------------------------------------------- the shared proxy


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A port with no listener: a route to it is "upstream down"."""
    return free_port()


@pytest.fixture(scope="session")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, mock: Mock, closed_port: int
) -> Iterator[Logproxy]:
    """One local-mode proxy shared by the tests that do not need their own config."""
    workdir = tmp_path_factory.mktemp("proxy")
    routes = {
        "mock": {"pattern": "/mock/", "destination": f"{mock.origin}/v1/"},
        "anthropic": {"pattern": "/anthropic/", "destination": f"{mock.origin}/"},
        "helpers": {"pattern": "/helpers/", "destination": f"{mock.origin}/mock/"},
        "down": {"pattern": "/down/", "destination": f"http://127.0.0.1:{closed_port}/v1/"},
    }
    lp = start_logproxy(workdir, proxy_config(workdir / "logs", routes))
    yield lp
    lp.stop()


def openai_client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=OPENAI_KEY, max_retries=0, timeout=20)


def anthropic_client(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key=ANTHROPIC_KEY, max_retries=0, timeout=20)


@pytest.fixture
def oai(proxy: Logproxy) -> openai.OpenAI:
    return openai_client(f"{proxy.url}/mock")


@pytest.fixture
def claude(proxy: Logproxy) -> anthropic.Anthropic:
    return anthropic_client(f"{proxy.url}/anthropic")
