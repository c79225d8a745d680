"""``server.workers``: extra proxy processes sharing the proxy port with the main one.

The main process is worker 0; :class:`WorkerPool` starts workers 1..N-1
(:mod:`logproxy.workers.child`), relays their log lines into the main log, keeps their
latest metrics snapshot for ``/metrics``, hands their capture events to a callback,
restarts a worker that dies (with a growing delay), and on stop sends SIGTERM and waits
for their graceful shutdown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from logproxy.workers.channel import CHANNEL_FD
from logproxy.workers.metrics_merge import Snapshot

log = Logger()

#: Longest wait before restarting a worker that keeps dying.
MAX_RESTART_DELAY = 30.0


class _Worker(ProcessProtocol):
    """One child: its output, its channel, its end."""

    def __init__(self, pool: WorkerPool, number: int) -> None:
        self.pool = pool
        self.number = number
        self.metrics: Snapshot = []
        self.ended: Deferred[None] = Deferred()
        self._buffers: dict[int, bytes] = {}

    def childDataReceived(self, fd: int, data: bytes) -> None:
        buffered = self._buffers.get(fd, b"") + data
        *lines, rest = buffered.split(b"\n")
        self._buffers[fd] = rest[-(1 << 20) :]  # a runaway line cannot grow without limit
        for line in lines:
            if fd == CHANNEL_FD:
                self._message(line)
            elif line.strip():
                log.info("{line}", line=line.decode("utf-8", "replace"), log_system="logproxy")

    def _message(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        if "metrics" in message:
            self.metrics = message["metrics"]
        if "events" in message and self.pool.on_event is not None:
            self.pool.on_event(message)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.pool.ended(self, reason)


class WorkerPool(Service):
    """Workers 1..count-1 for the proxy listening on ``host:port`` (SO_REUSEPORT)."""

    def __init__(
        self,
        reactor: Any,
        config_path: str,
        host: str,
        port: int,
        count: int,
        stop_timeout: float,
        index: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self._argv = [
            sys.executable,
            "-m",
            "logproxy.workers.child",
            "--config",
            config_path,
            "--host",
            host,
            "--port",
            str(port),
            *(["--index"] if index else []),
        ]
        self.count = count
        self.stop_timeout = stop_timeout
        self.on_event = on_event
        self.workers: dict[int, _Worker] = {}
        self._delays: dict[int, float] = {}
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        for number in range(1, self.count):
            self._spawn(number)

    def _spawn(self, number: int) -> None:
        if self._stopping:
            return
        worker = _Worker(self, number)
        self.workers[number] = worker
        self.reactor.spawnProcess(
            worker,
            sys.executable,
            [*self._argv, "--worker", str(number)],
            env=os.environ.copy(),
            childFDs={0: "w", 1: "r", 2: "r", CHANNEL_FD: "r"},
        )

    def ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.number) is worker:
            del self.workers[worker.number]
        if self._stopping:
            return
        delay = self._delays.get(worker.number, 0.5)
        self._delays[worker.number] = min(delay * 2, MAX_RESTART_DELAY)
        log.warn(
            "worker {n} ended ({reason}); restarting in {delay:.1f} s",
            n=worker.number,
            reason=reason.getErrorMessage(),
            delay=delay,
        )
        self.reactor.callLater(delay, self._spawn, worker.number)

    def snapshots(self) -> list[Snapshot]:
        return [w.metrics for w in self.workers.values() if w.metrics]

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._stopping = True
        workers = list(self.workers.values())
        if not workers:
            return succeed(None)
        for worker in workers:
            _signal(worker, signal.SIGTERM)

        def kill_all() -> None:
            for worker in workers:
                _signal(worker, signal.SIGKILL)

        kill = self.reactor.callLater(self.stop_timeout + 5, kill_all)
        done = DeferredList([w.ended for w in workers], consumeErrors=True)
        done.addBoth(lambda _: kill.cancel() if kill.active() else None)
        return done


def _signal(worker: _Worker, signum: int) -> None:
    transport = worker.transport
    if transport is not None and getattr(transport, "pid", None):
        with contextlib.suppress(Exception):  # already gone
            transport.signalProcess(signum)
