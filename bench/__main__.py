"""``python -m bench``: measure logproxy against its peers in one run.

    python -m bench [--quick] [--only rps,sse,...] [--proxies logproxy,mitmdump]
                    [--out bench/results] [--keep] [--readme README.md]

Scenarios: rps (wrk, 1 KiB JSON, c=1/16/64), rps-mock (the mock LLM at c=16), sse
(timestamped events, 20 streams), llm (mock LLM streamed completions), big (one 1 GiB
response; 256 MiB with --quick), idle (1,000 idle SSE streams; 200 with --quick).
``direct`` and ``nginx`` always run: every ratio is taken against them. ``bench/run.sh``
installs nginx, wrk and mitmproxy first; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench import procs, report
from bench.proxies import MITM_VENV, Upstreams, all_proxies, nginx_binary
from bench.scenarios import ALL, SESSIONS, Runner, Settings

ROOT = Path(__file__).resolve().parent.parent
NO_MEMORY_RUNS = {"logproxy-console"}  # not in big/idle: its console lines are per request
QUICK_SKIP = {"logproxy-console"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 3 minutes)")
    parser.add_argument("--only", default="", help=f"scenarios, comma-separated: {','.join(ALL)}")
    parser.add_argument("--proxies", default="", help="proxies (direct and nginx always run)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="override a setting, e.g. --set idle_streams=500 --set repeats=5 "
        "(see bench/scenarios.py Settings)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep process logs and configs")
    parser.add_argument("--readme", type=Path, help="update this README's bench section")
    return parser.parse_args(argv)


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout + out.stderr).strip()


def machine_info(command: str) -> dict[str, object]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    nginx = _run([nginx_binary() or "nginx", "-v"]).replace("nginx version: ", "")
    wrk = _run(["wrk", "-v"]).splitlines()[0].split(" [")[0] if shutil.which("wrk") else "?"
    mitm = _run([str(MITM_VENV / "bin" / "mitmdump"), "--version"]).splitlines()[0]
    import twisted

    commit = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if _run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "logproxy"]):
        commit += "+dirty"
    return {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": f"{mem_kb / (1 << 20):.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": f"{nginx}, {wrk}, {mitm}, Twisted {twisted.__version__}",
        "proxy_cpu": procs.PROXY_CPU,
        "load_cpu": procs.LOAD_CPU,
        "disk": str(ROOT / "bench" / "results"),
    }


NOTES = [
    "mitmdump streams bodies over 1 MiB (`stream_large_bodies=1m`) and SSE responses "
    "(`bench/mitm_sse.py`, its documented workaround), and keeps no body of a streamed "
    "response: its SSE and big-body captures hold headers only.",
    "twisted = `twisted.web.proxy.ReverseProxyResource`: HTTP/1.0 and a new connection "
    "upstream per request, no backpressure, no capture.",
    '"-shm" variants write their capture to tmpfs (/dev/shm); the others to the disk '
    "under bench/results/tmp.",
    "nginx and the static upstream are nginx with `worker_processes 1`; the static upstream "
    "answers `return 200` with 1 KiB of JSON and serves the big body from a sparse file on "
    "tmpfs.",
]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = os.environ.get("BENCH_COMMAND") or "python -m bench " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    settings = Settings.make(args.quick)
    for item in args.set:
        name, _, value = item.partition("=")
        current = getattr(settings, name, None)
        if current is None or name == "quick":
            print(f"--set {item}: unknown setting")
            return 2
        if isinstance(current, tuple):
            setattr(settings, name, tuple(int(v) for v in value.split(",")))
        else:
            setattr(settings, name, type(current)(value))
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(ALL)
    unknown = set(only) - set(ALL)
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {', '.join(ALL)}")
        return 2
    missing = [tool for tool in ("wrk",) if not shutil.which(tool)]
    if not nginx_binary():
        missing.append("nginx")
    if missing:
        print(f"missing: {', '.join(missing)} (bench/run.sh installs them)")
        return 2

    proxies = all_proxies()
    wanted = {p.strip() for p in args.proxies.split(",") if p.strip()}
    known = {p.name for p in proxies}
    if wanted - known:
        print(f"unknown proxies: {', '.join(sorted(wanted - known))}; known: {', '.join(known)}")
        return 2
    if wanted:
        proxies = [p for p in proxies if p.name in wanted | {"direct", "nginx"}]
    elif args.quick:
        proxies = [p for p in proxies if p.name not in QUICK_SKIP]
    problems: list[str] = []
    runnable = []
    for proxy in proxies:
        why = proxy.available()
        if why:
            problems.append(f"{proxy.name} skipped: {why}")
        else:
            runnable.append(proxy)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    disk = args.out / "tmp" / f"run-{stamp}"
    shm_root = Path("/dev/shm") if Path("/dev/shm").is_dir() else args.out / "tmp"
    shm = shm_root / f"logproxy-bench-{os.getpid()}"
    log_file = args.out / "bench.log"
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()

    def log(message: str) -> None:
        line = f"[{time.monotonic() - t_start:6.1f}s] {message}"
        print(line, flush=True)
        with open(log_file, "a") as f:
            f.write(line + "\n")

    procs.install_cleanup()
    log(f"{command}: proxies {', '.join(p.name for p in runnable)}; scenarios {', '.join(only)}")
    upstreams = Upstreams(disk / "upstreams", shm / "big.bin", settings.big_bytes)
    try:
        upstreams.start()
        log(f"upstreams: {upstreams.origins}")
        runner = Runner(settings, upstreams.origins, disk, shm, log)
        # A fresh proxy process per group, so that one group's after-effects (a capture
        # backlog, a grown heap) do not colour the next one's numbers.
        for group in SESSIONS:
            scenarios = [s for s in group if s in only]
            if scenarios:
                for proxy in runnable:
                    runner.run_session(proxy, scenarios)
        for scenario in ("big", "idle"):
            if scenario in only:
                # Memory readings want a fresh process: one session per repeat.
                for _ in range(settings.repeats):
                    for proxy in runnable:
                        if proxy.name not in NO_MEMORY_RUNS:
                            runner.run_session(proxy, [scenario])
        results = runner.results
        for scenario, rows in results.items():
            for proxy_name, row in rows.items():
                for key in ("error", "problem"):
                    if key in row:
                        problems.append(f"{scenario} / {proxy_name}: {row[key]}")
        data = report.build(
            machine_info(command),
            asdict(settings),
            {p.name: p.description for p in runnable},
            results,
            NOTES,
            problems,
        )
        paths = report.write(data, args.out, args.readme)
        log(f"done in {time.monotonic() - t_start:.0f}s: " + ", ".join(map(str, paths.values())))
        print()
        print(paths["markdown"].read_text())
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        upstreams.stop()
        procs.stop_all()
        shutil.rmtree(shm, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(disk, ignore_errors=True)
            with contextlib.suppress(OSError):
                disk.parent.rmdir()  # bench/results/tmp, if nothing else is in it


if __name__ == "__main__":
    raise SystemExit(main())
