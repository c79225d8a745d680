"""Upstream HTTP clients: one bare ``Agent`` per route over a shared connection pool.

treq's ``HTTPClient`` is not used on the proxy leg: it would add cookies, follow
redirects and decode gzip, breaking byte-exact passthrough.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from OpenSSL import SSL

# IOpenSSLTrustRoot is public API (``optionsForClientTLS(trustRoot=...)`` adapts to it)
# but only importable from the private module; stable since Twisted 14.
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint

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


@implementer(IAgentEndpointFactory)
class UpstreamEndpoints:
    """TCP (and TLS for https) endpoints for a route's new upstream connections.

    An IP-literal host is connected to directly: ``HostnameEndpoint`` would first
    "resolve" it in the reactor's thread pool, a thread hop that costs every new
    connection a few hundred microseconds. Host names still go through it.
    """

    def __init__(self, reactor: Any, policy: IPolicyForHTTPS, connect_timeout: float) -> None:
        self._reactor = reactor
        self._policy = policy
        self._timeout = connect_timeout

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")  # the Agent refuses non-ASCII hosts before this
        endpoint: IStreamClientEndpoint
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        else:
            endpoint = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        if uri.scheme == b"http":
            return endpoint
        if uri.scheme == b"https":
            return wrapClientTLS(self._policy.creatorForNetloc(uri.host, uri.port), endpoint)
        raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")


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
            policy = BrowserLikePolicyForHTTPS(SystemTrustPlus(route.ca_file))
            endpoints = UpstreamEndpoints(reactor, policy, route.connect_timeout)
            self.agents[route.name] = Agent.usingEndpointFactory(reactor, endpoints, pool)

    def close(self) -> object:
        """Close idle upstream connections (at shutdown)."""
        from twisted.internet.defer import gatherResults

        return gatherResults([pool.closeCachedConnections() for pool in self.pools])
