"""Processes under test: start them pinned to a core, wait for their port, always stop them,
and read their memory and CPU time from ``/proc``.

Every process the suite starts goes through :class:`Proc`, which registers it so that
:func:`stop_all` (called on normal exit, on errors, on Ctrl-C and on SIGTERM) ends it and its
process group. Processes are started in a new session so that a proxy's helpers (nginx's
worker) die with it; they are stopped by that group id, never by name.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def pick_cpus() -> tuple[int, int]:
    """(proxy core, load core): the proxy under test gets one core to itself; upstreams,
    load generators and this harness share the other. On a single-core machine both are
    the same core (numbers are then only indicative)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        return cpus[0], cpus[1]
    return cpus[0], cpus[0]


PROXY_CPU, LOAD_CPU = pick_cpus()

_live: dict[int, Proc] = {}


class StartError(RuntimeError):
    """A process exited or did not listen in time; the message carries its log's tail."""


class Proc:
    """One started process (and its process group), pinned to ``cpu`` with ``taskset``.

    Output goes to ``log_path``. ``stop()`` sends SIGTERM to the group, then SIGKILL after
    ``grace`` seconds; it is idempotent.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int | None,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        cmd = list(argv)
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.argv = cmd
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
        self.pid = self.popen.pid
        _live[self.pid] = self

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_port(self, port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
        """Until ``host:port`` accepts a connection; StartError if the process dies first."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise StartError(
                    f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}"
                )
            with socket.socket() as s:
                s.settimeout(0.5)
                try:
                    s.connect((host, port))
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise StartError(f"{self.name} not listening on {port} after {timeout}s")
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> None:
        if self.pid not in _live:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(5)
        # Helpers left in the group (an nginx worker whose master died first).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        _live.pop(self.pid, None)

    # -- /proc readings, summed over the process and its descendants

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def rss_kb(self) -> int:
        return sum(_status_kb(pid, "VmRSS") for pid in self.tree())

    def hwm_kb(self) -> int:
        """Peak resident set (VmHWM) since each process started, summed over the tree."""
        return sum(_status_kb(pid, "VmHWM") for pid in self.tree())

    def cpu_seconds(self) -> float:
        return sum(_cpu_ticks(pid) for pid in self.tree()) / CLK_TCK


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc/*/stat parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    result, todo = [], [root]
    while todo:
        pid = todo.pop()
        result.append(pid)
        todo.extend(parents.get(pid, []))
    # taskset execs in place, so the root is the program itself.
    return result


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_all() -> None:
    for proc in list(_live.values())[::-1]:
        with contextlib.suppress(Exception):
            proc.stop(grace=3.0)


def _on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_cleanup() -> None:
    """Stop every started process at exit, on SIGTERM/SIGHUP too; pin this harness to the
    load core; raise the open-files limit for the idle-streams scenario (children inherit)."""
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    os.sched_setaffinity(0, {LOAD_CPU})
    raise_nofile(65536)


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    target = want if hard == resource.RLIM_INFINITY or hard >= want else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, soft), max(hard, target)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def dir_stats(path: Path) -> tuple[int, int]:
    """(apparent bytes, files) under ``path``, or of the file ``path``: what a capture wrote."""
    if path.is_file():
        return path.stat().st_size, 1
    total = count = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
                count += 1
    return total, count
