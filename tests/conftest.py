"""Fixtures shared by the integration tests: a real mock upstream, proxies, a client."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool

from logproxy.mockllm import build_site


@pytest.fixture
def mock_upstream() -> Generator[str, None, None]:
    """The project's mock LLM server on a loopback port; yields its base URL."""
    port = reactor.listenTCP(0, build_site(reactor), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def http() -> Generator[HTTPClient, None, None]:
    """A treq client with its own pool, closed after the test (no leftover timers)."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    yield HTTPClient(Agent(reactor, pool=pool))
    pytest_twisted.blockon(pool.closeCachedConnections())


@pytest.fixture
def services() -> Generator[list[Any], None, None]:
    """Started LogproxyServices to stop after the test (append to this list)."""
    started: list[Any] = []
    yield started
    for service in reversed(started):
        pytest_twisted.blockon(service.stopService())


@pytest.fixture(autouse=True)
def _no_leftover_delayed_calls(request: pytest.FixtureRequest) -> Generator[None, None, None]:
    """Fail a test that leaves timers behind (pytest-twisted has no dirty-reactor check).

    Connections close asynchronously, so the reactor gets a moment to settle first.
    """
    yield
    if "twisted" not in request.keywords and not _uses_reactor(request):
        return

    def settled() -> bool:
        return not [c for c in reactor.getDelayedCalls() if c.active()]

    try:
        pytest_twisted.blockon(_settle(settled))
    except AssertionError:
        left = [repr(c) for c in reactor.getDelayedCalls() if c.active()]
        for call in reactor.getDelayedCalls():
            if call.active():
                call.cancel()
        pytest.fail(f"test left delayed calls behind: {left}")


def _uses_reactor(request: pytest.FixtureRequest) -> bool:
    return bool({"mock_upstream", "http", "services"} & set(request.fixturenames)) or bool(
        getattr(request.function, "_pytest_twisted_mark", None)
        or "pytest_twisted" in getattr(request.module, "__dict__", {})
    )


def _settle(done: Any) -> Any:
    from support import wait_for

    return wait_for(done, 3.0, "the reactor to have no delayed calls")
