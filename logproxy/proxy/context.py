"""What every exchange of one proxy listener shares, built once by the service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logproxy.capture.sink import CaptureStore
    from logproxy.config import RouteConfig
    from logproxy.metrics import Metrics
    from logproxy.proxy.exchange import Exchange
    from logproxy.proxy.gate import CaptureGate
    from logproxy.proxy.routing import Router
    from logproxy.proxy.upstream import Upstreams


@dataclass(eq=False)
class ProxyContext:
    """Injected into the factory; no module globals, so tests can build several.

    @ivar router: routes by pattern; the ``not_found`` subtree maps to ``None``.
    @ivar store: where captures go, or ``None`` when no route captures anything.
    @ivar capture_unmatched: capture requests answered by the proxy itself (404, 301,
        405, 400), following ``logging.enabled``.
    @ivar exchanges: in flight, for graceful shutdown.
    @ivar gate: holds new requests while the local capture writer is far behind.
    """

    reactor: Any
    router: Router[RouteConfig | None]
    upstreams: Upstreams
    store: CaptureStore | None
    metrics: Metrics
    console: bool
    capture_unmatched: bool
    max_body_size: int | None
    gate: CaptureGate | None = None
    exchanges: set[Exchange] = field(default_factory=set)
    idle_waiters: list[Callable[[], None]] = field(default_factory=list)

    def exchange_done(self, exchange: Exchange) -> None:
        self.exchanges.discard(exchange)
        if not self.exchanges and self.idle_waiters:
            waiters, self.idle_waiters = self.idle_waiters, []
            for waiter in waiters:
                waiter()
