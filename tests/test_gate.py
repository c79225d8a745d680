"""The admission gate: new requests wait while the capture writer is far behind.

The writer is driven by the test: work items that each take a set time or wait for an
event, so the writer's queue and its progress are what the test makes them.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import pytest_twisted
from support import connect_raw, finished_capture, make_config, start_service, wait_for
from treq.client import HTTPClient

from logproxy.proxy import gate as gate_module

ITEM = 8 * 1024


class SlowDisk:
    """``n`` writer items of ``ITEM`` backlog bytes each, each taking ``seconds`` on the
    writer thread (a slow disk), or, with ``seconds=None``, all stuck until released."""

    def __init__(self, writer: Any, n: int, seconds: float | None) -> None:
        self.stuck = threading.Event()
        for _ in range(n):
            if seconds is None:
                writer.submit(lambda _: self.stuck.wait(10), None, ITEM, files=1)
            else:
                writer.submit(lambda _, s=seconds: time.sleep(s), None, ITEM, files=1)

    def release(self) -> None:
        self.stuck.set()


@pytest.fixture(autouse=True)
def small_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Close above 24 stream opens/closes waiting, open at 12 or below."""
    monkeypatch.setattr(gate_module, "HIGH", 24)
    monkeypatch.setattr(gate_module, "LOW", 12)


def gated_service(tmp_path: Any, services: list[Any], mock_upstream: str) -> Any:
    routes = {"helpers": {"pattern": "/helpers/", "destination": f"{mock_upstream}/mock/"}}
    service = start_service(make_config(tmp_path, routes, logging={"buffer_size": "1MiB"}))
    services.append(service)
    return service


def echo_url(service: Any) -> str:
    return f"http://127.0.0.1:{service.proxy_port.getHost().port}/helpers/echo"


async def echoed(response: Any) -> str:
    """The request body the mock's echo endpoint saw."""
    return str(json.loads(await response.content())["body"])


def held(service: Any) -> float:
    return float(service.metrics.capture_held._value.get())


@pytest.fixture
def releases(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(files pending, low mark) each time a held request is let go."""
    from logproxy.proxy.request import HeldStart

    seen: list[tuple[int, int]] = []
    original = HeldStart.release

    def release(self: HeldStart) -> None:
        writer = self.exchange.ctx.store.writer  # type: ignore[union-attr]
        seen.append((writer.files_pending, self.exchange.ctx.gate.low))  # type: ignore[union-attr]
        original(self)

    monkeypatch.setattr(HeldStart, "release", release)
    return seen


@pytest.fixture
def patient_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests wait for the drain, however slowly the test steps the writer."""
    monkeypatch.setattr(gate_module, "HOLD_MAX", 30.0)


@pytest_twisted.ensureDeferred
async def test_a_new_request_waits_until_the_writer_caught_up(
    tmp_path: Any,
    mock_upstream: str,
    http: HTTPClient,
    services: list[Any],
    patient_gate: None,
    releases: list[tuple[int, int]],
) -> None:
    service = gated_service(tmp_path, services, mock_upstream)
    gate = service.proxy.gate
    SlowDisk(service.writer, 40, 0.002)  # more than HIGH
    body = json.dumps({"hello": "world", "n": list(range(100))}).encode()
    url = echo_url(service)
    response = await http.post(url, data=body)
    assert held(service) == 1
    assert response.code == 200
    assert await echoed(response) == body.decode()  # what was read before the hold went upstream
    [(pending, low)] = releases
    assert pending <= low  # let go once the writer caught up
    capture_id = response.headers.getRawHeaders("X-Logproxy-Id")[0]
    await finished_capture(str(tmp_path / "logs"), capture_id)
    assert not gate.closed


@pytest_twisted.ensureDeferred
async def test_a_stalled_writer_is_not_waited_for(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any], patient_gate: None
) -> None:
    """No progress at all (a hung disk): the gate opens and requests flow."""
    service = gated_service(tmp_path, services, mock_upstream)
    disk = SlowDisk(service.writer, 40, None)
    url = echo_url(service)
    try:
        for _ in range(5):
            response = await http.post(url, data=b"x")
            assert response.code == 200
            assert await echoed(response) == "x"
        assert held(service) >= 1
    finally:
        disk.release()


@pytest_twisted.ensureDeferred
async def test_no_request_is_held_longer_than_hold_max(
    tmp_path: Any,
    mock_upstream: str,
    http: HTTPClient,
    services: list[Any],
    releases: list[tuple[int, int]],
) -> None:
    service = gated_service(tmp_path, services, mock_upstream)
    SlowDisk(service.writer, 100, 0.01)  # a second of work
    url = echo_url(service)
    response = await http.post(url, data=b"x")
    assert response.code == 200
    assert await echoed(response) == "x"
    [(pending, _)] = releases
    assert pending > 24  # still far behind: let go by HOLD_MAX, not by the drain


@pytest_twisted.ensureDeferred
async def test_a_client_gone_while_held_is_recorded_as_disconnected(
    tmp_path: Any, mock_upstream: str, services: list[Any], patient_gate: None
) -> None:
    """A held client's socket is not read, so its close is seen once it is let go: the
    exchange then ends like any whose client left early, and nothing is left over."""
    service = gated_service(tmp_path, services, mock_upstream)
    SlowDisk(service.writer, 40, 0.002)
    client = await connect_raw(service.proxy_port.getHost().port)
    client.transport.write(b"GET /helpers/sse?n=1000&interval=0.05 HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: held(service) == 1, 5, "the request to be held")
    client.transport.loseConnection()
    await client.lost_d
    await wait_for(lambda: not service.proxy.gate.closed, 5, "the gate to open")
    await wait_for(lambda: not service.proxy.exchanges, 5, "the exchange to end")
    [meta] = await wait_for(
        lambda: list((tmp_path / "logs").glob("*/*_response_metadata.json")), 5, "a capture"
    )
    await wait_for(lambda: json.loads(meta.read_text())["error"], 5, "the capture to end")
    assert json.loads(meta.read_text())["error"] == "client disconnected"
    assert "logproxy_in_flight_requests 0.0" in service.metrics.render().decode()


@pytest_twisted.ensureDeferred
async def test_shutdown_starts_held_requests(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any], patient_gate: None
) -> None:
    service = gated_service(tmp_path, services, mock_upstream)
    disk = SlowDisk(service.writer, 40, None)
    url = echo_url(service)
    answer = http.post(url, data=b"bye")
    await wait_for(lambda: held(service) == 1, 5, "the request to be held")
    stopped = service.stopService()
    services.remove(service)
    disk.release()
    response = await answer
    assert response.code == 200
    assert await echoed(response) == "bye"
    await stopped


@pytest_twisted.ensureDeferred
async def test_a_writer_that_never_runs_dry_still_flushes(
    tmp_path: Any, mock_upstream: str, services: list[Any]
) -> None:
    """Under steady load the writer's queue is never empty; it still writes out what it
    gathered (and hands results back) every FLUSH_EVERY items, so nothing piles up."""
    from logproxy.capture.writer import FLUSH_EVERY

    service = gated_service(tmp_path, services, mock_upstream)
    writer = service.writer
    flushes: list[int] = []

    class Counter:
        def document_written(self, *args: Any) -> None:
            pass

        def data_written(self, *args: Any) -> None:
            pass

        def batch_done(self) -> None:
            flushes.append(writer.processed)

    writer.listeners.append(Counter())
    disk = SlowDisk(writer, 1, None)  # queue up several hand-overs behind a stuck item
    await wait_for(lambda: writer.backlog and not writer._outbox, 5, "the hand-over")
    for _ in range(3):
        for _ in range(FLUSH_EVERY):
            writer.submit(lambda _: None, None, 1)
        await wait_for(lambda: not writer._outbox, 5, "the hand-over")
    before = len(flushes)
    disk.release()
    await wait_for(lambda: writer.backlog == 0, 5, "the writer to drain")
    assert len(flushes) - before >= 3  # not one flush at the very end
