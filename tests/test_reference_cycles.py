"""A finished request leaves no reference cycles behind: reference counting frees its
objects at once. Cycles would wait for the garbage collector, which the service runs
less often (``tune_process``); under load they piled up by the thousand."""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from support import make_config, start_service, wait_for
from treq.client import HTTPClient


@pytest.fixture
def saved_garbage() -> Generator[list[Any], None, None]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def cyclic_objects(garbage: list[Any], service: Any) -> Counter[str]:
    """This service's per-request objects among the garbage (other tests' services may
    leave theirs). ``ProxyRequest`` is not checked: Twisted's HTTP client leaves a
    cycle per upstream request (its Request, parser and a traceback) that reaches it."""
    from logproxy.capture.writer import FileJob, LocalStream
    from logproxy.proxy.exchange import Exchange

    def ours(o: Any) -> bool:
        if isinstance(o, Exchange):
            return o.ctx is service.proxy
        if isinstance(o, FileJob):
            return o._writer is service.writer
        if isinstance(o, LocalStream):
            return o._store.writer is service.writer
        return False

    return Counter(type(o).__qualname__ for o in garbage if ours(o))


@pytest.mark.parametrize(
    "path, body",
    [
        ("/mock/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        (
            "/mock/chat/completions",
            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ),
        ("/helpers/echo", {"not": "an llm call"}),
    ],
    ids=["chat", "chat-stream", "other"],
)
@pytest_twisted.ensureDeferred
async def test_requests_leave_no_cycles(
    tmp_path: Any,
    mock_upstream: str,
    http: HTTPClient,
    services: list[Any],
    path: str,
    body: dict[str, Any],
    saved_garbage: list[Any],
) -> None:
    routes = {
        "mock": {"pattern": "/mock/", "destination": f"{mock_upstream}/v1/"},
        "helpers": {"pattern": "/helpers/", "destination": f"{mock_upstream}/mock/"},
    }
    service = start_service(make_config(tmp_path, routes))
    services.append(service)
    url = f"http://127.0.0.1:{service.proxy_port.getHost().port}{path}"

    async def requests(n: int) -> None:
        for _ in range(n):
            response = await http.post(url, data=json.dumps(body).encode())
            assert response.code == 200
            await response.content()
        await wait_for(lambda: not service.proxy.exchanges and not service.writer._outbox, 5)
        await wait_for(lambda: service.writer.backlog == 0, 5)
        gc.collect()

    await requests(3)  # connections set up (their set-up leaves cycles once)
    saved_garbage.clear()
    await requests(10)
    assert not cyclic_objects(saved_garbage, service)
