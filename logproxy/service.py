"""The running process: proxy Site, logging Site and capture writer, as one service."""

from __future__ import annotations

import gc
import socket
import time
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from logproxy.capture.recovery import recover
from logproxy.capture.retention import RetentionService
from logproxy.capture.sink import CaptureStore
from logproxy.capture.uploader import STOP_TIMEOUT, RemoteStore
from logproxy.capture.writer import LocalStore, WriterThread
from logproxy.config import Config, RouteConfig
from logproxy.index.runtime import CaptureIndex
from logproxy.index.schema import IndexUnavailable
from logproxy.logserver.api import Api
from logproxy.logserver.site import LogServerSite
from logproxy.logserver.upload import LogServerState
from logproxy.metrics import Metrics
from logproxy.proxy.context import ProxyContext
from logproxy.proxy.gate import CaptureGate
from logproxy.proxy.request import ProxyFactory
from logproxy.proxy.routing import Router
from logproxy.proxy.upstream import Upstreams
from logproxy.workers.pool import WorkerPool

log = Logger()


class StartupError(Exception):
    """The service cannot start (e.g. a port is taken); str() is one line for the user."""


class LogproxyService(Service):
    """Builds everything from a :class:`Config` and runs it.

    Listening happens in ``privilegedStartService`` so that a port that cannot be bound
    fails the start, before the reactor runs. Stopping is graceful: listeners close at
    once, exchanges in flight get ``server.shutdown_timeout`` seconds, then are aborted
    with their captures finalised, then the capture writer is flushed.
    """

    def __init__(
        self,
        config: Config,
        reactor: Any = None,
        role: str = "main",
        channel: Any = None,
        index_in_worker: bool = False,
    ) -> None:
        """``role``: ``main`` (the twistd process: also runs the logging Site, the file
        maintenance and, with ``server.workers`` > 1, the worker pool) or ``worker`` (a proxy
        process started by that pool; ``channel`` carries its events to the main)."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.metrics = Metrics()
        self.writer: WriterThread | None = None
        self.store: CaptureStore | None = None
        self.proxy: ProxyContext | None = None
        self.logserver: LogServerState | None = None
        self.ports: list[Any] = []
        self.proxy_port: Any = None
        self.logserver_port: Any = None
        self.retention: RetentionService | None = None
        self.index: CaptureIndex | None = None
        self._recovery: Deferred[Any] | None = None
        self._reconcile: Deferred[Any] | None = None
        self._next_skip_warning = 0.0
        self.role = role
        self.channel = channel
        self._index_in_worker = index_in_worker
        self.pool: WorkerPool | None = None

    # -- building

    def _needs_writer(self) -> bool:
        # Local captures, the remote mode's local fallback, or uploads received.
        return self._captures_anything() or self.config.logging_server.port != 0

    def _captures_anything(self) -> bool:
        c = self.config
        return c.server is not None and (
            c.logging.enabled or any(route.logging for route in c.routes)
        )

    def _build(self) -> None:
        c = self.config
        if self._needs_writer():
            self.writer = WriterThread(self.reactor, c.logging.buffer_size)
            if c.logging_server.port != 0:  # the query API and UI read the index
                self.index = self._open_index(self.writer)
            elif self._index_in_worker:  # a worker keeps the main's index current
                self.index = self._open_index(
                    self.writer, bus=ForwardingBus(self.channel), reconciling=False
                )
            self.writer.start()
        redact = frozenset(name.encode().lower() for name in c.logging.redact_headers)
        if self._captures_anything():
            assert self.writer is not None
            local = LocalStore(
                self.writer,
                c.logging.log_dir,
                redact,
                c.logging.max_decoded_size,
                on_error=self._capture_error,
                on_drop=self._capture_dropped,
                on_lost=self.metrics.capture_bytes_lost.inc,
                on_skip=self._capture_skipped,
            )
            self.store = local
            if c.logging.server_url:
                self.store = RemoteStore(
                    self.reactor,
                    c.logging.server_url,
                    c.logging.server_token,
                    redact,
                    c.logging.max_decoded_size,
                    c.logging.buffer_size,
                    self.metrics,
                    fallback=local,
                    stop_timeout=min(STOP_TIMEOUT, c.server.shutdown_timeout if c.server else 30),
                )
        if c.server is not None:
            routes: list[tuple[str, str, RouteConfig | None]] = [
                (route.name, route.pattern, route) for route in c.routes
            ]
            if c.server.not_found:
                routes.append(("not_found", c.server.not_found, None))
            self.proxy = ProxyContext(
                reactor=self.reactor,
                router=Router(routes),
                upstreams=Upstreams(self.reactor, c.routes),
                store=self.store,
                metrics=self.metrics,
                console=c.logging.console,
                capture_unmatched=c.logging.enabled,
                max_body_size=c.server.max_body_size,
                gate=(
                    CaptureGate(self.reactor, self.writer, self.metrics.capture_held.inc)
                    if isinstance(self.store, LocalStore) and self.writer is not None
                    else None
                ),
            )
        if c.logging_server.port != 0:
            assert self.writer is not None
            self.logserver = LogServerState(
                reactor=self.reactor,
                writer=self.writer,
                log_dir=c.logging.log_dir,
                token=c.logging_server.token,
                metrics=self.metrics,
            )

    def _open_index(self, writer: WriterThread, **kw: Any) -> CaptureIndex | None:
        """The capture index; without it (a broken index file, another logproxy
        rebuilding it) the service runs and the query API answers 503."""
        try:
            return CaptureIndex(self.reactor, writer, self.config.logging.log_dir, **kw)
        except IndexUnavailable as e:
            log.warn("capture index disabled: {reason}", reason=str(e))
            return None

    def _api(self) -> Api:
        assert self.logserver is not None
        return Api(
            reactor=self.reactor,
            log_dir=self.config.logging.log_dir,
            index=self.index,
        )

    def _recovered(self, count: int) -> None:
        if count:
            log.warn("marked {n} captures left open by a dead process as interrupted", n=count)

    def _start_reconcile(self, _: object) -> None:
        """After crash recovery: bring the index in line with the files (background)."""
        if self.index is not None and self.running:
            self._reconcile = self.index.reconcile()

    def _capture_error(self, capture_id: str, message: str) -> None:
        self.metrics.capture_errors.labels("write").inc()
        log.warn("capture {id}: {message}", id=capture_id, message=message)

    def _capture_skipped(self) -> None:
        self.metrics.capture_errors.labels("skipped").inc()
        now_ = self.reactor.seconds()
        if now_ >= self._next_skip_warning:
            self._next_skip_warning = now_ + 10
            log.warn(
                "capture writer backlog full (logging.buffer_size): skipping new captures "
                'until it drains; see logproxy_capture_errors_total{{kind="skipped"}}'
            )

    def _capture_dropped(self, capture_id: str) -> None:
        self.metrics.capture_errors.labels("dropped").inc()
        log.warn(
            "capture {id}: writer backlog full (logging.buffer_size); dropping the rest of a body",
            id=capture_id,
        )

    # -- running

    def privilegedStartService(self) -> None:
        c = self.config
        # Bind every socket before anything else: a taken port fails the start before
        # a single listener (or the writer thread) exists.
        wanted: list[tuple[str, str, int]] = []
        if c.server is not None:
            wanted.append(("proxy", c.server.host, c.server.port))
        if c.logging_server.port != 0:
            wanted.append(("logging server", c.logging_server.host, c.logging_server.port))
        sockets: list[socket.socket] = []
        # Several processes share the proxy port: each binds it with SO_REUSEPORT and the
        # kernel spreads the connections.
        shared = c.server is not None and (c.server.workers > 1 or self.role == "worker")
        if shared and c.path is None:
            raise StartupError("server.workers > 1 needs the config in a file (--config)")
        try:
            for what, host, port in wanted:
                sockets.append(_bind(what, host, port, reuse_port=shared and what == "proxy"))
        except StartupError:
            for sock in sockets:
                sock.close()
            raise
        self._build()
        for (what, host, _), sock in zip(wanted, sockets, strict=True):
            factory: Any
            if what == "proxy":
                assert self.proxy is not None
                factory = ProxyFactory(self.proxy)
            else:
                assert self.logserver is not None
                factory = LogServerSite(self.logserver, self._api())
            listening = self.reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
            sock.close()  # the reactor holds its own duplicate of the descriptor
            self.ports.append(listening)
            if what == "proxy":
                self.proxy_port = listening
                if shared and self.role == "main":
                    self._make_pool(host, listening.getHost().port)
            else:
                self.logserver_port = listening
            log.info(
                "{what} listening on http://{host}:{port}/",
                what=what,
                host=host,
                port=listening.getHost().port,
            )
        super().privilegedStartService()

    def _make_pool(self, host: str, port: int) -> None:
        c = self.config
        assert c.server is not None and c.path is not None
        self.pool = WorkerPool(
            self.reactor,
            c.path,
            host,
            port,
            c.server.workers,
            stop_timeout=c.server.shutdown_timeout,
            index=self.index is not None,
            on_event=self._worker_event,
        )
        self.metrics.workers = self.pool.snapshots

    def _worker_event(self, message: dict[str, Any]) -> None:
        """Index events of a worker's captures: into this process's event bus."""
        if self.index is not None:
            events = [(kind, data.encode()) for kind, data in message.get("events", [])]
            growth = [(cid, size, final) for cid, size, final in message.get("growth", [])]
            self.index.bus.deliver(events, growth)

    def startService(self) -> None:
        super().startService()
        if self.role == "worker":  # the main process keeps the files and the index tidy
            return
        if self.pool is not None:
            self.pool.startService()
        if self.writer is not None:  # this process writes capture files: tidy up after a crash
            d = deferToThread(recover, self.config.logging.log_dir, time.time())
            d.addCallbacks(self._recovered, lambda f: log.failure("crash recovery failed", f))
            d.addCallback(self._start_reconcile)
            self._recovery = d
        retention = self.config.logging.retention
        if retention is not None and self.writer is not None:  # files are written here
            self.retention = RetentionService(
                self.config.logging.log_dir,
                retention.max_age,
                retention.max_bytes,
                self.metrics,
                self.reactor,
                index=self.index,
            )
            self.retention.startService()

    @inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        # Workers shut down gracefully in parallel with this process.
        pool_stopped = self.pool.stopService() if self.pool is not None else None
        if self.index is not None:  # ends event streams and tails, stops reconciling
            index_stopped = self.index.stop()
        for port in self.ports:
            yield port.stopListening()
        if self.retention is not None:
            yield self.retention.stopService()
        if self._recovery is not None:
            yield self._recovery
        if self.index is not None:
            yield index_stopped
        proxy = self.proxy
        if proxy is not None and proxy.gate is not None:
            proxy.gate.open()  # held requests start now and finish like the others
        if proxy is not None and proxy.exchanges and self.config.server is not None:
            timeout = self.config.server.shutdown_timeout
            log.info(
                "waiting up to {timeout}s for {n} requests in flight",
                timeout=timeout,
                n=len(proxy.exchanges),
            )
            yield self._wait_idle(timeout)
            for exchange in list(proxy.exchanges):
                exchange.abort("shutdown")
        if self.store is not None:
            yield self.store.stop()
        if proxy is not None:
            yield proxy.upstreams.close()
        if self.writer is not None:
            yield self.writer.stop()
        if self.index is not None:
            self.index.close()
        if pool_stopped is not None:
            yield pool_stopped

    def _wait_idle(self, timeout: float) -> Deferred[None]:
        """Fires when no exchange is in flight, or after ``timeout`` seconds."""
        assert self.proxy is not None
        done: Deferred[None] = Deferred()

        def fire() -> None:
            if not done.called:
                done.callback(None)

        timer = self.reactor.callLater(timeout, fire)

        def idle() -> None:
            if timer.active():
                timer.cancel()
            fire()

        self.proxy.idle_waiters.append(idle)
        return done


def _bind(what: str, host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket for ``host:port`` ("localhost" means the IPv4 loopback)."""
    address = "127.0.0.1" if host == "localhost" else host.strip("[]")
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise StartupError(
            f"cannot listen on {host}:{port} for the {what}: {e.strerror or e}"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise StartupError(
            f"cannot listen on {host}:{port} for the {what}: {e.strerror or e}"
        ) from None
    return sock


class ForwardingBus:
    """A worker's stand-in for the event bus: index events go to the main process, whose
    bus has the subscribers (it cannot know which captures the main's clients watch)."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def active(self) -> bool:
        return True

    def watched(self, capture_id: str) -> bool:
        return True

    def deliver(self, events: list[tuple[str, bytes]], growth: list[Any]) -> None:
        self._channel.send(
            {"events": [[kind, data.decode()] for kind, data in events], "growth": growth}
        )

    def close(self) -> None:
        pass


def tune_process() -> None:
    """Call once the process has started (the twistd plugin and worker processes do).

    Garbage collector: every object built so far (modules, config, routes, Twisted
    itself) leaves the collector's view (``gc.freeze``), and the youngest generation is
    collected every 10,000 allocations instead of 700. Each request allocates hundreds
    of objects; with the defaults collections took a third of the reactor's time under
    load. Requests leave no reference cycles (tests/test_reference_cycles.py), so
    garbage does not pile up meanwhile.

    glibc malloc: body chunks (64 KiB reads) wait for the capture writer before they
    are freed, so the heap top is freed in bursts; by default glibc then hands that
    memory back to the kernel and faults it in again for the next chunks, which cost
    the reactor thread ~0.3 s of kernel time per GiB captured. Keeping up to 32 MiB
    and serving allocations up to 1 MiB from the heap avoids that churn.
    """
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
    _tune_malloc()


def _tune_malloc() -> None:
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(m_trim_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_mmap_threshold, 1024 * 1024)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass
