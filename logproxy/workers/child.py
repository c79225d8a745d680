"""One worker process: ``python -m logproxy.workers.child --config F --port N --worker K``.

Started by :class:`logproxy.workers.pool.WorkerPool` in the main process when
``server.workers`` > 1. It runs the proxy only -- its own reactor, writer thread and
upstream pools -- on its own ``SO_REUSEPORT`` socket bound to the main's proxy port, so
the kernel spreads connections over the processes. The main process keeps the logging
Site, the index and the recovery/retention jobs.

Channels to the main process: stdout carries log lines (the main writes them to its own
log); file descriptor 3 carries JSON lines (metrics snapshots, capture events). A worker
whose main process is gone stops by itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from typing import Any

from twisted.internet import reactor as default_reactor
from twisted.internet.task import LoopingCall
from twisted.logger import formatEvent, globalLogBeginner

from logproxy.config import ConfigError, load_config
from logproxy.service import LogproxyService, StartupError, tune_process
from logproxy.workers.channel import Channel
from logproxy.workers.metrics_merge import snapshot

#: Seconds between two metrics snapshots sent to the main process.
METRICS_EVERY = 2.0


def _watch_parent(parent: int) -> LoopingCall:
    """Stop when the main process is gone (this process was handed to another parent)."""

    def check() -> None:
        if os.getppid() != parent and default_reactor.running:
            default_reactor.stop()

    loop = LoopingCall(check)
    loop.start(1.0, now=False)
    return loop


def _log_to_stdout(worker: int) -> None:
    def observer(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        if text:
            sys.stdout.write(f"[worker {worker}] {text}\n")
            sys.stdout.flush()

    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)  # type: ignore[list-item]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m logproxy.workers.child")
    parser.add_argument("--config", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--index", action="store_true", help="keep the main's index current")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, host=args.host, port=args.port, require_file=True)
    except ConfigError as e:
        sys.stderr.write(f"logproxy worker {args.worker}: {e}\n")
        return 2
    # The proxy only: the main process runs the logging Site and the file maintenance.
    config = replace(config, logging_server=replace(config.logging_server, port=0))
    _log_to_stdout(args.worker)
    channel = Channel()
    service = LogproxyService(
        config, default_reactor, role="worker", channel=channel, index_in_worker=args.index
    )
    try:
        service.privilegedStartService()
    except StartupError as e:
        sys.stderr.write(f"logproxy worker {args.worker}: {e}\n")
        return 1
    service.startService()
    default_reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    _watch_parent(os.getppid())
    metrics = LoopingCall(lambda: channel.send({"metrics": snapshot(service.metrics.registry)}))
    metrics.start(METRICS_EVERY, now=False)
    default_reactor.callWhenRunning(tune_process)
    default_reactor.run()
    channel.send({"metrics": snapshot(service.metrics.registry)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
