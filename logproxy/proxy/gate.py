"""Admission gate: new requests wait a moment while the capture writer is far behind.

On a saturated core the reactor thread out-runs the capture writer thread (it holds
the GIL and the CPU), so the writer's backlog grew until captures had to be skipped,
and the queued captures held hundreds of MB. Holding new requests briefly instead
hands the writer the CPU: throughput becomes what the machine can do *with* capture,
no trace is lost and memory stays bounded. Requests already in flight are never held.

A writer that makes no progress for ``STALL_AFTER`` (a hung disk) is not waited for,
and no request waits longer than ``HOLD_MAX``: then requests flow and, once the backlog
is full, captures are skipped and counted as before (``LocalStore.open_stream``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall

from logproxy.capture.writer import WriterThread

#: Seconds between looks at a writer while requests are held.
CHECK_EVERY = 0.005
#: The longest a request is held, in seconds.
HOLD_MAX = 0.1
#: Seconds without any progress after which the writer counts as stalled.
STALL_AFTER = 0.05


#: Capture streams waiting to be opened or closed (4 per capture) above which new
#: requests wait, and below which they go again: about 0.2 s of the writer's work.
HIGH = 1024
LOW = 512


class CaptureGate:
    """Closed while more than ``HIGH`` stream opens/closes wait for the writer; opens
    below ``LOW``, when the writer stalls, or (per request) after ``HOLD_MAX``.

    Counted in files, not bytes: a big body the disk writes slower than the network
    (bytes piling up) is not a CPU shortage, and holding requests would not help it.
    """

    def __init__(self, reactor: Any, writer: WriterThread, on_hold: Callable[[], None]) -> None:
        self._reactor = reactor
        self._writer = writer
        self.high = HIGH
        self.low = LOW
        self._on_hold = on_hold
        self._held: deque[tuple[float, Callable[[], None]]] = deque()
        self._timer: IDelayedCall | None = None
        self._progress = 0
        self._progress_at = 0.0

    @property
    def closed(self) -> bool:
        return self._timer is not None

    def admit(self) -> bool:
        """May a new request start now? If not, :meth:`hold` it."""
        if self._timer is None:
            if self._writer.files_pending <= self.high:
                return True
            self._progress = self._writer.processed
            self._progress_at = self._reactor.seconds()
            self._timer = self._reactor.callLater(CHECK_EVERY, self._check)
        return False

    def hold(self, go: Callable[[], None]) -> None:
        """Call ``go()`` (on the reactor) when the held request may start."""
        self._held.append((self._reactor.seconds(), go))
        self._on_hold()

    def _check(self) -> None:
        self._timer = None
        writer, now = self._writer, self._reactor.seconds()
        if writer.processed != self._progress:
            self._progress, self._progress_at = writer.processed, now
        if writer.files_pending <= self.low or now - self._progress_at >= STALL_AFTER:
            self.open()
            return
        deadline = now - HOLD_MAX
        while self._held and self._held[0][0] <= deadline:
            self._held.popleft()[1]()
        self._timer = self._reactor.callLater(CHECK_EVERY, self._check)

    def open(self) -> None:
        """Let every held request start (also at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, deque()
        for _, go in held:
            go()
