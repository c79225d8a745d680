"""Where logproxy's CPU goes, per thread, in a sustained run: the profile behind the
Performance notes in the README.

    python -m bench.cpu_split rps --capture shm --seconds 20   # 1 KiB POSTs, wrk c=16
    python -m bench.cpu_split big --capture disk               # one 1 GiB response

``--capture``: ``off`` (logging off), ``shm`` (log_dir on tmpfs) or ``disk``. The proxy runs
under twistd pinned to core 0; nginx (the upstream) and the load on core 1, as in
``bench/run.sh``. Prints the rate, each thread's user and system CPU per request (or per
GiB), the peak RSS, and for ``rps`` whether every request was captured once the writer
settled (a proxy that keeps up only by dropping captures would show it here).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import load
from bench.procs import LOAD_CPU
from bench.proxies import Logproxy, Upstreams, request_json

BIG = 1 << 30


def thread_cpu(pid: int) -> dict[str, tuple[int, int]]:
    """{thread name:tid: (user ticks, system ticks)}."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        found[f"{name}:{tid}"] = (int(fields[11]), int(fields[12]))
    return found


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def captures(log_dir: Path) -> int:
    return len(list(log_dir.glob("*/*_response_metadata.json")))


def settled(log_dir: Path, quiet: float = 1.0, limit: float = 60.0) -> int:
    """The capture count once it stopped growing for ``quiet`` seconds."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        count = captures(log_dir)
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.1)  # polling the capture directory
    return last


def wrk(url: str, script: Path, seconds: int, connections: int = 16) -> int:
    out = subprocess.run(
        ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["rps", "big"])
    parser.add_argument("--capture", choices=["off", "shm", "disk"], default="disk")
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="logproxy-cpu-", dir=Path(__file__).parent))
    shm = Path(tempfile.mkdtemp(prefix="logproxy-cpu-", dir="/dev/shm"))
    upstreams = Upstreams(work / "up", shm / "big.bin", BIG)
    proxy = Logproxy(capture=args.capture != "off", tmpfs=args.capture == "shm")
    capture_root = (shm if args.capture == "shm" else work) / "capture"
    try:
        upstreams.start()
        proxy.start(upstreams.origins, work / "proc", capture_root)
        assert proxy.proc is not None
        pid = proxy.proc.pid
        log_dir = capture_root / "logs"
        if args.scenario == "rps":
            url = proxy.url("static") + "/static/chat"
            script = load.wrk_script(work / "static.lua", request_json())
            warm = wrk(url, script, 2)
            before, t0 = thread_cpu(pid), time.monotonic()
            done = wrk(url, script, args.seconds)
            elapsed, after = time.monotonic() - t0, thread_cpu(pid)
            units, unit = done, "request"
            print(f"{done / elapsed:,.0f} req/s over {elapsed:.0f} s (wrk c=16, 1 KiB POST)")
        else:
            url = proxy.url("static") + "/static/big"
            before, t0 = thread_cpu(pid), time.monotonic()
            subprocess.run(
                ["taskset", "-c", str(LOAD_CPU), "curl", "-sS", "-o", "/dev/null", url], check=True
            )
            elapsed, after = time.monotonic() - t0, thread_cpu(pid)
            units, unit = 1, "GiB"
            print(f"{BIG / elapsed / 1e6:,.0f} MB/s streaming 1 GiB")
        scale = 1e6 / 100 if unit == "request" else 1 / 100  # ticks -> µs/request or s/GiB
        suffix = "µs/request" if unit == "request" else "s/GiB"
        for name, (user, system) in after.items():
            u0, s0 = before.get(name, (0, 0))
            if (user, system) != (u0, s0):
                print(
                    f"  thread {name:24} user {(user - u0) * scale / units:8.2f}"
                    f"  system {(system - s0) * scale / units:8.2f} {suffix}"
                )
        print(f"  peak RSS {peak_rss_mib(pid):.1f} MiB")
        if args.capture != "off" and args.scenario == "rps":
            kept = settled(log_dir)
            print(f"  captures {kept:,} for {warm + done:,} requests (+ in flight at the end)")
    finally:
        proxy.stop()
        upstreams.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
