"""Upstream HTTP clients: one bare ``Agent`` per route over a shared connection pool.

treq's ``HTTPClient`` is not used on the proxy leg: it would add cookies, follow
redirects and decode gzip, breaking byte-exact passthrough.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from OpenSSL import SSL

# IOpenSSLTrustRoot is public API (``optionsForClientTLS(trustRoot=...)`` adapts to it)
# but only importable from the private module; stable since Twisted 14.
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from logproxy.config import RouteConfig

#: Idle upstream connections kept per (scheme, host, port); enough for a busy route.
MAX_PERSISTENT_PER_HOST = 128
#: Seconds an idle upstream connection is kept. Many LLM servers close idle
#: keep-alive connections after 5-75 s; a shorter timeout on our side avoids most
#: races with a server closing a connection just as a request goes out on it.
CACHED_CONNECTION_TIMEOUT = 30


@implementer(IOpenSSLTrustRoot)
class SystemTrustPlus:
    """The system trust store (honours ``SSL_CERT_FILE``) plus an optional private CA file."""

    def __init__(self, ca_file: str | None) -> None:
        self.ca_file = ca_file

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        if self.ca_file:
            context.load_verify_locations(self.ca_file)


class _QuietClientFactory(_HTTP11ClientFactory):
    """No "Starting factory" log line for every new upstream connection."""

    noisy = False


class QuietPool(HTTPConnectionPool):
    _factory = _QuietClientFactory


def make_pool(reactor: IReactorTime) -> QuietPool:
    pool = QuietPool(reactor, persistent=True)
    pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
    pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT
    return pool


class Upstreams:
    """Agents for every route. Routes that trust a private CA get their own pool, so a
    connection verified against that CA is never reused by a route that does not trust it.
    """

    def __init__(self, reactor: IReactorTime, routes: tuple[RouteConfig, ...]) -> None:
        self.shared_pool = make_pool(reactor)
        self.pools = [self.shared_pool]
        self.agents: dict[str, Agent] = {}
        for route in routes:
            pool = self.shared_pool
            if route.ca_file:
                pool = make_pool(reactor)
                self.pools.append(pool)
            self.agents[route.name] = Agent(
                reactor,
                contextFactory=BrowserLikePolicyForHTTPS(SystemTrustPlus(route.ca_file)),
                connectTimeout=route.connect_timeout,
                pool=pool,
            )

    def close(self) -> object:
        """Close idle upstream connections (at shutdown)."""
        from twisted.internet.defer import gatherResults

        return gatherResults([pool.closeCachedConnections() for pool in self.pools])
