"""The upstreams and the proxies under test, each with its configuration generation.

Every upstream serves a distinct path prefix, so a proxy can forward to all three of them
from one listener without rewriting paths:

- ``static``: nginx returning a fixed 1 KiB JSON (``/static/chat``) and a big file
  (``/static/big``, a sparse file on tmpfs): the "never the bottleneck" upstream.
- ``mock``: the project's mock LLM (``/v1/...``, ``/mock/...``).
- ``sse``: ``bench/sse_upstream.py``, timestamped events (``/sse/stream``, ``/sse/idle``).

Upstreams run on the load core; proxies on the proxy core (see :mod:`bench.procs`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import LOAD_CPU, PROXY_CPU, Proc, dir_stats, free_port

BENCH_DIR = Path(__file__).resolve().parent
MITM_VENV = BENCH_DIR / ".venv-mitm"
PREFIXES = {"static": ["/static/"], "mock": ["/v1/", "/mock/"], "sse": ["/sse/"]}


def static_json(size: int = 1024) -> bytes:
    """A chat-completion-shaped JSON document of exactly ``size`` bytes (no ``$`` or ``'``,
    so that it can sit in an nginx ``return`` string)."""
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 200, "completion_tokens": 150, "total_tokens": 350},
    }
    base = len(json.dumps(doc, separators=(",", ":")).encode())
    words = ("lorem ipsum dolor sit amet " * 64)[: size - base]
    doc["choices"][0]["message"]["content"] = words  # type: ignore[index]
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) == size, len(body)
    return body


def request_json(size: int = 1024, mock: dict[str, object] | None = None) -> bytes:
    """A chat-completion request of exactly ``size`` bytes (``mock`` knobs included)."""
    doc: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": ""}],
    }
    if mock is not None:
        doc["mock"] = mock
    base = len(json.dumps(doc, separators=(",", ":")).encode())
    doc["messages"][0]["content"] = ("please summarise this text " * 64)[: size - base]  # type: ignore[index]
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) == size, len(body)
    return body


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
    )


def _nginx_main(workdir: Path, body: str) -> str:
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"  {kind}_temp_path {workdir}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
worker_rlimit_nofile 65536;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 16384; multi_accept on; }}
http {{
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 10000000;
  keepalive_timeout 600s;
  client_max_body_size 0;
{temp}
{body}
}}
"""


def start_nginx(name: str, workdir: Path, conf_body: str, port: int, cpu: int) -> Proc:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(_nginx_main(workdir, conf_body))
    binary = nginx_binary()
    assert binary, "nginx is not installed"
    proc = Proc(
        name,
        [
            binary,
            "-p",
            str(workdir),
            "-e",
            str(workdir / "error.log"),
            "-c",
            str(conf),
            "-g",
            "daemon off;",
        ],
        cpu=cpu,
        log_path=workdir / "stdout.log",
    )
    proc.wait_port(port)
    return proc


# ----------------------------------------------------------------------------- upstreams


@dataclass
class Upstreams:
    """The three upstreams, started once per run on the load core."""

    workdir: Path
    big_file: Path
    big_size: int
    origins: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.big_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.big_file, "wb") as f:
            f.truncate(self.big_size)  # sparse: reads as zeros, costs no memory
        (self.workdir / "chat.json").write_bytes(static_json())

        port = free_port()
        body = static_json().decode()
        conf = f"""  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /static/big {{ alias {self.big_file}; default_type application/octet-stream; }}
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}"""
        self.procs.append(
            start_nginx("upstream-static", self.workdir / "static", conf, port, LOAD_CPU)
        )
        self.origins["static"] = f"http://127.0.0.1:{port}"

        port = free_port()
        proc = Proc(
            "upstream-mock",
            [sys.executable, "-m", "logproxy.mockllm", "--port", str(port)],
            cpu=LOAD_CPU,
            log_path=self.workdir / "mock.log",
        )
        self.procs.append(proc)
        proc.wait_port(port)
        self.origins["mock"] = f"http://127.0.0.1:{port}"

        port = free_port()
        proc = Proc(
            "upstream-sse",
            [sys.executable, str(BENCH_DIR / "sse_upstream.py"), "--port", str(port)],
            cpu=LOAD_CPU,
            log_path=self.workdir / "sse.log",
        )
        self.procs.append(proc)
        proc.wait_port(port)
        self.origins["sse"] = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs.clear()
        self.big_file.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- proxies


class Proxy:
    """One proxy under test. ``start`` runs it against ``upstreams`` (name -> origin) with
    its working files under ``workdir``; ``url(name)`` is the origin a client uses to reach
    upstream ``name`` through it; ``capture_path`` is what its capture wrote (or None).
    """

    name = ""
    description = ""
    captures = False
    tmpfs = False  # captures go to tmpfs (/dev/shm) rather than the disk
    requires: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.proc: Proc | None = None
        self.workdir: Path | None = None
        self.capture_path: Path | None = None
        self._urls: dict[str, str] = {}

    def available(self) -> str | None:
        """None when it can run here, else why not."""
        for tool in self.requires:
            if not (shutil.which(tool) or Path(tool).exists()):
                return f"{tool} not found"
        return None

    def start(self, upstreams: dict[str, str], workdir: Path, capture_root: Path) -> None:
        raise NotImplementedError

    def url(self, upstream: str) -> str:
        return self._urls[upstream]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=10.0)
            self.proc = None

    def cleanup(self) -> None:
        """Delete what the capture wrote (after it was measured)."""
        if self.capture_path is not None and self.capture_path.exists():
            if self.capture_path.is_dir():
                shutil.rmtree(self.capture_path, ignore_errors=True)
            else:
                self.capture_path.unlink(missing_ok=True)

    def capture_stats(self) -> tuple[int, int]:
        """(bytes, files) the capture holds now."""
        return dir_stats(self.capture_path) if self.capture_path else (0, 0)


class Direct(Proxy):
    name = "direct"
    description = "no proxy: the client talks to the upstream (the limit)"

    def start(self, upstreams: dict[str, str], workdir: Path, capture_root: Path) -> None:
        self._urls = dict(upstreams)


class Nginx(Proxy):
    name = "nginx"
    description = "nginx proxy_pass, buffering off, HTTP/1.1 keepalive upstream (C reference)"
    requires = ("nginx",)

    def available(self) -> str | None:
        return None if nginx_binary() else "nginx not found"

    def start(self, upstreams: dict[str, str], workdir: Path, capture_root: Path) -> None:
        port = free_port()
        blocks = []
        locations = []
        for name, origin in upstreams.items():
            blocks.append(f"  upstream up_{name} {{ server {origin[7:]}; keepalive 512; }}")
            for prefix in PREFIXES[name]:
                locations.append(f"    location {prefix} {{ proxy_pass http://up_{name}; }}")
        conf = (
            "\n".join(blocks)
            + f"""
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_buffer_size 64k;
    proxy_buffers 4 64k;
    proxy_busy_buffers_size 64k;
    proxy_read_timeout 3600s;
    proxy_send_timeout 3600s;
{chr(10).join(locations)}
  }}"""
        )
        self.workdir = workdir
        self.proc = start_nginx("nginx", workdir, conf, port, PROXY_CPU)
        self._urls = dict.fromkeys(upstreams, f"http://127.0.0.1:{port}")


class Mitmdump(Proxy):
    """mitmdump in reverse mode, one listener per upstream, flows saved with ``-w``.

    Bodies above ``stream_large_bodies`` (1 MiB) and SSE responses (``bench/mitm_sse.py``,
    mitmproxy's documented workaround for issue 4469) are streamed, and mitmproxy does not
    keep streamed bodies: their flows are saved without the body.
    """

    description = "mitmdump --mode reverse, -w flows (Python capture peer)"
    captures = True

    def __init__(self, tmpfs: bool = False) -> None:
        super().__init__()
        self.tmpfs = tmpfs
        self.name = "mitmdump-shm" if tmpfs else "mitmdump"
        if tmpfs:
            self.description = "mitmdump as above, flows file on tmpfs"

    def available(self) -> str | None:
        if not (MITM_VENV / "bin" / "mitmdump").exists():
            return f"{MITM_VENV}/bin/mitmdump not found (bench/run.sh installs it)"
        return None

    def start(self, upstreams: dict[str, str], workdir: Path, capture_root: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        capture_root.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.capture_path = capture_root / "flows.mitm"
        argv = [str(MITM_VENV / "bin" / "mitmdump"), "-q", "--listen-host", "127.0.0.1"]
        ports = {}
        for name, origin in upstreams.items():
            ports[name] = free_port()
            argv += ["--mode", f"reverse:{origin}@{ports[name]}"]
        argv += [
            "-w", str(self.capture_path),
            "-s", str(BENCH_DIR / "mitm_sse.py"),
            "--set", "stream_large_bodies=1m",
            "--set", f"confdir={BENCH_DIR / '.venv-mitm' / 'confdir'}",
            "--set", "connection_strategy=lazy",
        ]  # fmt: skip
        self.proc = Proc(self.name, argv, cpu=PROXY_CPU, log_path=workdir / "mitmdump.log")
        for port in ports.values():
            self.proc.wait_port(port, timeout=60)
        self._urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}


class TwistedNaive(Proxy):
    name = "twisted"
    description = "twisted.web.proxy.ReverseProxyResource (naive baseline, no capture)"

    def start(self, upstreams: dict[str, str], workdir: Path, capture_root: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [sys.executable, str(BENCH_DIR / "twisted_naive.py"), "--port", str(port)]
        for name, origin in upstreams.items():
            for prefix in PREFIXES[name]:
                argv += ["--route", f"{prefix.strip('/')}={origin[7:]}"]
        self.workdir = workdir
        self.proc = Proc(self.name, argv, cpu=PROXY_CPU, log_path=workdir / "twisted.log")
        self.proc.wait_port(port)
        self._urls = dict.fromkeys(upstreams, f"http://127.0.0.1:{port}")


class Logproxy(Proxy):
    """logproxy under ``twistd -n``, one route per upstream prefix (``strip_prefix: false``)."""

    def __init__(
        self, capture: bool, tmpfs: bool = False, console: bool = False, workers: int = 1
    ) -> None:
        super().__init__()
        self.captures = capture
        self.tmpfs = tmpfs
        self.console = console
        self.workers = workers
        if workers > 1:
            self.name = f"logproxy-w{workers}"
            self.description = (
                f"logproxy, capture on, server.workers: {workers}, not pinned (all cores, "
                "shared with the load generator and upstream)"
            )
        elif not capture:
            self.name = "logproxy-nocap"
            self.description = "logproxy, capture off (logging: false)"
        elif console:
            self.name = "logproxy-console"
            self.description = "logproxy, capture on, console lines on"
        elif tmpfs:
            self.name = "logproxy-shm"
            self.description = "logproxy, capture on, log_dir on tmpfs"
        else:
            self.name = "logproxy"
            self.description = "logproxy, capture on (defaults), log_dir on disk"

    def start(self, upstreams: dict[str, str], workdir: Path, capture_root: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log_dir = capture_root / "logs"
        if self.captures:
            self.capture_path = log_dir
        cap = "true" if self.captures else "false"
        routes = []
        for name, origin in upstreams.items():
            for prefix in PREFIXES[name]:
                routes.append(
                    f"  {name}{prefix.replace('/', '_')}:\n"
                    f'    pattern: "{prefix}"\n'
                    f'    destination: "{origin}/"\n'
                    f"    strip_prefix: false\n"
                    f"    logging: {cap}\n"
                )
        config = workdir / "logproxy.yaml"
        config.write_text(
            "server:\n"
            f"  host: 127.0.0.1\n  port: {port}\n"
            "  shutdown_timeout: 2\n  idle_timeout: 3600\n"
            f"  workers: {self.workers}\n"
            "logging:\n"
            f"  enabled: {cap}\n  console: {'true' if self.console else 'false'}\n"
            f"  log_dir: {log_dir}\n"
            "logging_server:\n  port: 0\n"
            "routes:\n" + "".join(routes)
        )
        self.workdir = workdir
        twistd = shutil.which("twistd") or str(Path(sys.executable).parent / "twistd")
        self.proc = Proc(
            self.name,
            [twistd, "-n", "--pidfile=", "logproxy", "--config", str(config)],
            cpu=PROXY_CPU if self.workers == 1 else None,
            log_path=workdir / "twistd.log",
        )
        self.proc.wait_port(port)
        self._urls = dict.fromkeys(upstreams, f"http://127.0.0.1:{port}")


def all_proxies() -> list[Proxy]:
    return [
        Direct(),
        Nginx(),
        Mitmdump(),
        Mitmdump(tmpfs=True),
        TwistedNaive(),
        Logproxy(capture=False),
        Logproxy(capture=True),
        Logproxy(capture=True, tmpfs=True),
        Logproxy(capture=True, console=True),
        Logproxy(capture=True, workers=2),
    ]
