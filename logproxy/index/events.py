"""Live capture events, from the writer thread to whoever listens on the reactor.

:class:`EventBus` lives on the reactor thread. The index updater (writer thread) asks
it two cheap questions -- :meth:`EventBus.active` and :meth:`EventBus.watched`, plain
reads of reactor-owned containers, atomic under the GIL -- so that nobody pays for
events no one listens to, and hands over each writer batch's events in one
``callFromThread`` to :meth:`EventBus.deliver`.

Event kinds (the SSE ``event:`` names of ``GET /api/events``):

``start``
    The first document of a capture was written (normally: the request stream opened).
``progress``
    The response stream opened, or its ``.bin`` grew (at most every
    :data:`PROGRESS_INTERVAL` seconds per capture).
``end``
    The response stream's final document was written.

Tail watchers (``GET /api/requests/{id}/tail``) get every growth of the response file
of the capture they watch, unthrottled.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.logger import Logger

log = Logger()

#: Seconds between two ``progress`` events of one capture.
PROGRESS_INTERVAL = 0.25
#: Events kept for clients that reconnect with ``Last-Event-ID``.
REPLAY_SIZE = 1024

EVENT_KINDS = ("start", "progress", "end")


class Subscriber(Protocol):
    def event(self, event_id: str, kind: str, data: bytes) -> None:
        """One event; must not raise."""

    def keepalive(self) -> None:
        """Nothing happened for a while."""

    def close(self) -> None:
        """The bus shuts down: finish the response."""


class Watcher(Protocol):
    def grew(self, size: int, final: bool) -> None:
        """The watched response file is ``size`` bytes long; ``final``: it is complete."""

    def close(self) -> None:
        """The bus shuts down."""


class EventBus:
    """Fans capture events out to SSE subscribers and tail watchers (reactor thread).

    @ivar _subscribers: SSE clients, in subscription order.
    @ivar _watchers: tail watchers by capture id.
    @ivar _recent: the last :data:`REPLAY_SIZE` events as ``(seq, kind, data)``, for
        ``Last-Event-ID``.
    @ivar _keepalive: the timer sending keep-alive comments; runs only while someone
        subscribes (so an idle bus leaves no delayed call behind).
    """

    def __init__(self, reactor: Any, keepalive_interval: float = 15.0) -> None:
        self._reactor = reactor
        self._subscribers: dict[Subscriber, None] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        self._recent: deque[tuple[int, str, bytes]] = deque(maxlen=REPLAY_SIZE)
        self._seq = 0
        # Event ids are "<boot>-<seq>": a Last-Event-ID from another process never matches.
        self._boot = os.urandom(4).hex()
        self.keepalive_interval = keepalive_interval
        self._keepalive: Any = None
        self.closed = False

    # -- read from the writer thread

    def active(self) -> bool:
        return bool(self._subscribers)

    def watched(self, capture_id: str) -> bool:
        return capture_id in self._watchers

    # -- reactor thread

    def subscribe(self, subscriber: Subscriber, last_event_id: str | None = None) -> None:
        """Add an SSE client; replay what it missed if ``last_event_id`` is still known."""
        if last_event_id:
            boot, _, seq = last_event_id.partition("-")
            if boot == self._boot and seq.isdigit():
                after = int(seq)
                for number, kind, data in list(self._recent):
                    if number > after:
                        subscriber.event(self._event_id(number), kind, data)
        self._subscribers[subscriber] = None
        if self._keepalive is None and self.keepalive_interval > 0:
            self._keepalive = self._reactor.callLater(self.keepalive_interval, self._ping)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.pop(subscriber, None)
        if not self._subscribers and self._keepalive is not None:
            if self._keepalive.active():
                self._keepalive.cancel()
            self._keepalive = None

    def watch(self, capture_id: str, watcher: Watcher) -> None:
        self._watchers.setdefault(capture_id, set()).add(watcher)

    def unwatch(self, capture_id: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(capture_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[capture_id]

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    def seconds(self) -> float:
        return float(self._reactor.seconds())

    def _event_id(self, seq: int) -> str:
        return f"{self._boot}-{seq}"

    def deliver(self, events: list[tuple[str, bytes]], growth: list[tuple[str, int, bool]]) -> None:
        """One writer batch: ``events`` as ``(kind, data)``, ``growth`` as ``(capture id,
        response file size, final)``."""
        for kind, data in events:
            self.publish(kind, data)
        for capture_id, size, final in growth:
            for watcher in list(self._watchers.get(capture_id, ())):
                _guard(watcher.grew, size, final)

    def publish(self, kind: str, data: bytes) -> None:
        self._seq += 1
        self._recent.append((self._seq, kind, data))
        event_id = self._event_id(self._seq)
        for subscriber in list(self._subscribers):
            _guard(subscriber.event, event_id, kind, data)

    def _ping(self) -> None:
        self._keepalive = None
        for subscriber in list(self._subscribers):
            _guard(subscriber.keepalive)
        if self._subscribers and self.keepalive_interval > 0:
            self._keepalive = self._reactor.callLater(self.keepalive_interval, self._ping)

    def close(self) -> None:
        """End every stream (service shutdown)."""
        self.closed = True
        for subscriber in list(self._subscribers):
            _guard(subscriber.close)
        for watchers in list(self._watchers.values()):
            for watcher in list(watchers):
                _guard(watcher.close)
        self._subscribers.clear()
        self._watchers.clear()
        if self._keepalive is not None:
            if self._keepalive.active():
                self._keepalive.cancel()
            self._keepalive = None


def _guard(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.failure("capture event listener failed")
