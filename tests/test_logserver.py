"""The logging Site: streamed PUT uploads into capture files, health, metrics, tokens, and
the proxy's remote mode writing byte-identical files through it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import pytest_twisted
from support import (
    capture_files,
    connect_raw,
    finished_capture,
    free_port,
    logserver_url,
    make_config,
    proxy_url,
    read_json,
    start_service,
    wait_for,
    with_timeout,
)
from treq.client import HTTPClient

STARTED = "2026-01-02T03:04:05.678901Z"


def document(capture_id: str, kind: str = "response", **extra: Any) -> dict[str, Any]:
    return {
        "format_version": 1,
        "stream_type": kind,
        "metadata": {"id": capture_id, "route": "r", "request_started_at": STARTED},
        "started_at": STARTED,
        **extra,
    }


def log_host(tmp_path: Any, services: list[Any], **logging_server: Any) -> Any:
    config = make_config(
        tmp_path, with_server=False, logging_server={"port": free_port(), **logging_server}
    )
    service = start_service(config)
    services.append(service)
    return service


@pytest_twisted.ensureDeferred
async def test_streamed_put_writes_capture_files(
    tmp_path: Any, http: HTTPClient, services: list[Any]
) -> None:
    host = log_host(tmp_path, services)
    capture_id = str(uuid.uuid4())
    client = await connect_raw(host.logserver_port.getHost().port)
    meta = json.dumps(document(capture_id)).encode()
    client.transport.write(
        b"PUT /%s/response HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"X-Logproxy-Metadata: %s\r\n\r\n"
        % (capture_id.encode(), meta)
        + b"13\r\nHTTP/1.1 200 OK\r\n\r\n\r\n"
    )
    log_dir = str(tmp_path / "logs")
    # the file and its first metadata appear while the upload is still in flight
    files = await wait_for(
        lambda: len(capture_files(log_dir, capture_id)) == 2 and capture_files(log_dir, capture_id)
    )
    assert files["response.bin"].endswith(f"2026-01-02_03-04-05.678_{capture_id}_response.bin")
    assert "/2026-01-02/" in files["response.bin"]
    assert read_json(files["response_metadata.json"])["completed"] is False
    client.transport.write(b"5\r\nhello\r\n0\r\n\r\n")
    await client.wait_received(b"\r\n\r\n")
    assert client.received.startswith(b"HTTP/1.1 201 ")
    with open(files["response.bin"], "rb") as f:
        assert f.read() == b"HTTP/1.1 200 OK\r\n\r\nhello"
    final = read_json(files["response_metadata.json"])
    assert final["completed"] is True and final["error"] is None
    assert final["bytes_written"] == 24
    assert final["metadata"]["route"] == "r"
    client.transport.loseConnection()
    await client.lost_d

    # a final document afterwards (as the proxy sends it) updates the metadata
    response = await http.put(
        logserver_url(host, f"/{capture_id}/response/metadata"),
        data=json.dumps(
            document(capture_id, completed=False, error="client disconnected", llm={"model": "m"})
        ).encode(),
    )
    assert response.code == 200
    await response.content()
    final = read_json(files["response_metadata.json"])
    assert final["completed"] is False and final["error"] == "client disconnected"
    assert final["llm"] == {"model": "m"} and final["bytes_written"] == 24


@pytest_twisted.ensureDeferred
async def test_interrupted_upload_is_marked_incomplete(tmp_path: Any, services: list[Any]) -> None:
    host = log_host(tmp_path, services)
    capture_id = str(uuid.uuid4())
    client = await connect_raw(host.logserver_port.getHost().port)
    meta = json.dumps(document(capture_id, "request")).encode()
    client.transport.write(
        b"PUT /%s/request HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"X-Logproxy-Metadata: %s\r\n\r\n4\r\nPOST\r\n" % (capture_id.encode(), meta)
    )
    log_dir = str(tmp_path / "logs")
    await wait_for(lambda: capture_files(log_dir, capture_id).get("request.bin"))
    client.transport.abortConnection()
    meta_path = capture_files(log_dir, capture_id)["request_metadata.json"]
    final = await wait_for(lambda: (m := read_json(meta_path))["completed_at"] and m)
    assert final["completed"] is False and final["error"] == "upload interrupted"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/not-a-uuid/request", 400),
        ("/{ID}/request", 400),  # upper case
        ("/{{id}}/request", 400),  # braces
        ("/{id}/other", 404),
        ("/{id}/request/extra", 404),
        ("/../../etc/request", 404),
        ("/%2e%2e/request", 400),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_upload_paths_write_nothing(
    tmp_path: Any, http: HTTPClient, services: list[Any], path: str, code: int
) -> None:
    host = log_host(tmp_path, services)
    capture_id = str(uuid.uuid4())
    path = path.replace("{ID}", capture_id.upper()).replace("{id}", capture_id)
    response = await http.put(
        logserver_url(host, path),
        data=b"x",
        headers={"X-Logproxy-Metadata": json.dumps(document(capture_id))},
    )
    assert response.code == code
    await response.content()
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*"))
    assert not list(tmp_path.parent.glob("etc*"))


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        (None, 400),
        ("not json", 400),
        (f'{{"metadata": {{"id": "other", "request_started_at": "{STARTED}"}}}}', 400),
        ('{"metadata": {"id": "{id}"}}', 400),  # no start time
        ('{"metadata": {"id": "{id}", "request_started_at": "yesterday"}}', 400),
        (
            json.dumps(
                {
                    "stream_type": "request",
                    "metadata": {"id": "{id}", "request_started_at": STARTED},
                }
            ),
            400,
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_metadata_writes_nothing(
    tmp_path: Any, http: HTTPClient, services: list[Any], metadata: str | None, code: int
) -> None:
    host = log_host(tmp_path, services)
    capture_id = str(uuid.uuid4())
    headers = (
        {} if metadata is None else {"X-Logproxy-Metadata": metadata.replace("{id}", capture_id)}
    )
    response = await http.put(
        logserver_url(host, f"/{capture_id}/response"), data=b"x", headers=headers
    )
    assert response.code == code
    await response.content()
    assert not list((tmp_path / "logs").rglob("*.bin")) if (tmp_path / "logs").exists() else True


@pytest_twisted.ensureDeferred
async def test_second_upload_of_a_stream_conflicts(
    tmp_path: Any, http: HTTPClient, services: list[Any]
) -> None:
    host = log_host(tmp_path, services)
    capture_id = str(uuid.uuid4())
    headers = {"X-Logproxy-Metadata": json.dumps(document(capture_id))}
    url = logserver_url(host, f"/{capture_id}/response")
    first = await http.put(url, data=b"first", headers=headers)
    assert first.code == 201
    await first.content()
    second = await http.put(url, data=b"second", headers=headers)
    assert second.code == 409
    await second.content()
    files = capture_files(str(tmp_path / "logs"), capture_id)
    with open(files["response.bin"], "rb") as f:
        assert f.read() == b"first"


@pytest_twisted.ensureDeferred
async def test_token_required_everywhere_but_health(
    tmp_path: Any, http: HTTPClient, services: list[Any]
) -> None:
    host = log_host(tmp_path, services, token="s3cret")
    assert (await http.get(logserver_url(host, "/health"))).code == 200
    for path in ("/metrics", "/"):
        response = await http.get(logserver_url(host, path))
        assert response.code == 401, path
        await response.content()
    response = await http.get(
        logserver_url(host, "/metrics"), headers={"Authorization": "Bearer s3cret"}
    )
    assert response.code == 200
    assert b"# TYPE logproxy_requests_total counter" in await response.content()
    response = await http.get(logserver_url(host, "/metrics?token=s3cret"))
    assert response.code == 200
    await response.content()
    capture_id = str(uuid.uuid4())
    response = await http.put(
        logserver_url(host, f"/{capture_id}/response"),
        data=b"x",
        headers={
            "X-Logproxy-Metadata": json.dumps(document(capture_id)),
            "Authorization": "Bearer wrong",
        },
    )
    assert response.code == 401
    await response.content()
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*.bin"))


@pytest_twisted.ensureDeferred
async def test_health_and_metrics(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    config = make_config(
        tmp_path,
        {"mock": {"pattern": "/mock/", "destination": f"{mock_upstream}/v1/"}},
        logging_server={"port": free_port()},
    )
    service = start_service(config)
    services.append(service)
    response = await http.get(logserver_url(service, "/health"))
    assert await response.json() == {"status": "ok"}
    response = await http.get(proxy_url(service, "/mock/models"))
    await response.content()
    response = await http.get(proxy_url(service, "/nowhere"))
    await response.content()
    text = (await (await http.get(logserver_url(service, "/metrics"))).content()).decode()
    assert 'logproxy_requests_total{route="mock",status="200"} 1.0' in text
    assert 'logproxy_requests_total{route="-",status="404"} 1.0' in text
    assert 'logproxy_upstream_header_seconds_count{route="mock"} 1.0' in text
    assert "logproxy_in_flight_requests 0.0" in text
    assert 'logproxy_body_bytes_total{direction="response",route="mock"}' in text


# ---------------------------------------------------------------- remote mode


async def _send_both(http: HTTPClient, proxy: Any) -> list[str]:
    """A deterministic streaming and non-streaming pair through ``proxy``; their ids."""
    ids = []
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "same every time"}],
        "stream": True,
        "mock": {"chunks": 3},
    }
    for path, payload in (
        ("/helpers/echo", b"fixed body"),
        ("/mock/chat/completions", json.dumps(body).encode()),
    ):
        response = await http.post(
            proxy_url(proxy, path),
            data=payload,
            headers={
                "Authorization": "Bearer sk-abcdefghijklmnopqrstuvwxyz",
                "Content-Type": "application/json",
            },
        )
        assert response.code == 200
        await response.content()
        ids.append(response.headers.getRawHeaders("X-Logproxy-Id")[0])
    return ids


def _normalise(data: bytes, capture_id: str) -> bytes:
    """Remove what differs between two runs of the same call: ids, dates, ports, times."""
    import re

    data = data.replace(capture_id.encode(), b"<id>")
    data = re.sub(rb"Date: [^\r]*", b"Date: <date>", data)
    data = re.sub(rb"127\.0\.0\.1:\d+", b"127.0.0.1:<port>", data)
    data = re.sub(rb'"(id|created)":\s*("[^"]*"|\d+)', rb'"\1": <x>', data)
    return re.sub(rb"(X-Request-Id|request-id): [^\r]*", rb"\1: <x>", data, flags=re.I)


@pytest_twisted.ensureDeferred
async def test_remote_mode_writes_the_same_files_as_local_mode(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    routes = {
        "mock": {"pattern": "/mock/", "destination": f"{mock_upstream}/v1/"},
        "helpers": {"pattern": "/helpers/", "destination": f"{mock_upstream}/mock/"},
    }
    host = log_host(tmp_path / "host", services, token="tok")
    remote = start_service(
        make_config(
            tmp_path / "remote",
            routes,
            logging_server={"port": 0},
            logging={"server_url": logserver_url(host).rstrip("/"), "server_token": "tok"},
        )
    )
    services.append(remote)
    local = start_service(make_config(tmp_path / "local", routes))
    services.append(local)

    remote_ids = await _send_both(http, remote)
    local_ids = await _send_both(http, local)
    host_logs, local_logs = str(tmp_path / "host" / "logs"), str(tmp_path / "local" / "logs")
    apis: list[str | None] = []
    for remote_id, local_id in zip(remote_ids, local_ids, strict=True):
        want = await finished_capture(local_logs, local_id)
        got = await finished_capture(host_logs, remote_id)
        if (want["response"][1].get("llm") or {}).get("api"):
            # The sender's final document (with the llm block) arrives after the upload's
            # end, which already finalised the document: wait for it, then read again.
            meta_path = capture_files(host_logs, remote_id)["response_metadata.json"]
            await wait_for(
                lambda path=meta_path: read_json(path).get("llm"),
                5,
                "the llm block from the sender's final metadata",
            )
            got = await finished_capture(host_logs, remote_id)
        for kind in ("request", "response"):
            assert _normalise(got[kind][0], remote_id) == _normalise(want[kind][0], local_id)
            meta = got[kind][1]
            assert meta["bytes_written"] == len(got[kind][0])
            assert meta["completed"] is True and meta["error"] is None
            assert meta["metadata"]["route"] == want[kind][1]["metadata"]["route"]
            if kind == "response":  # the llm block travels in the final metadata document
                apis.append((meta.get("llm") or {}).get("api"))
                assert apis[-1] == (want[kind][1].get("llm") or {}).get("api")
    assert "openai.chat" in apis
    # nothing was written by the proxy itself
    assert not (tmp_path / "remote" / "logs").exists()


@pytest_twisted.ensureDeferred
async def test_remote_mode_falls_back_to_local_files_when_the_log_host_is_down(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    dead = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    dead_port = dead.getHost().port
    await dead.stopListening()
    routes = {"mock": {"pattern": "/mock/", "destination": f"{mock_upstream}/v1/"}}
    remote = start_service(
        make_config(tmp_path, routes, logging={"server_url": f"http://127.0.0.1:{dead_port}"})
    )
    services.append(remote)
    ids = []
    for _ in range(3):  # the first finds the server down, the next go local at once
        response = await with_timeout(http.get(proxy_url(remote, "/mock/models")), 5, "response")
        assert response.code == 200
        assert (await response.json())["data"]
        ids.append(response.headers.getRawHeaders("X-Logproxy-Id")[0])
    log_dir = str(tmp_path / "logs")
    for capture_id in ids:
        capture = await finished_capture(log_dir, capture_id)
        response_bin, meta = capture["response"]
        assert response_bin.startswith(b"HTTP/1.1 200 OK\r\n")
        assert meta["completed"] is True and meta["bytes_written"] == len(response_bin)
        assert capture["request"][0].startswith(b"GET http://127.0.0.1:")
    text = remote.metrics.render().decode()
    assert "logproxy_capture_fallback_streams_total 6.0" in text  # 3 captures x 2 streams


@pytest_twisted.ensureDeferred
async def test_a_log_host_that_stops_reading_never_slows_the_proxied_request(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    """The log host accepts the upload but reads nothing: the client still gets all 8 MB
    at once; the capture's buffer (1 MiB here) overflows and the loss is counted."""
    from support import RawServer

    stuck = RawServer(paused=True)
    try:
        stuck_host = stuck.url.rstrip("/")
        routes = {"helpers": {"pattern": "/helpers/", "destination": f"{mock_upstream}/mock/"}}
        remote = start_service(
            make_config(
                tmp_path,
                routes,
                logging={"server_url": stuck_host, "buffer_size": "1MiB"},
                server={"shutdown_timeout": 0.5},
            )
        )
        response = await with_timeout(
            http.get(proxy_url(remote, "/helpers/bytes?size=8000000")), 10, "response"
        )
        assert response.code == 200
        assert len(await response.content()) == 8_000_000
        text = await wait_for(
            lambda: (
                "logproxy_capture_bytes_lost_total 0.0" not in remote.metrics.render().decode()
                and remote.metrics.render().decode()
            )
        )
        assert 'logproxy_capture_errors_total{kind="upload_dropped"}' in text
        # ...and the stuck upload does not hold up shutdown for long
        from twisted.internet import reactor

        began = reactor.seconds()
        await with_timeout(remote.stopService(), 5, "shutdown")
        assert reactor.seconds() - began < 2
    finally:
        await stuck.close()


@pytest_twisted.ensureDeferred
async def test_an_unwritable_log_dir_never_fails_the_proxied_request(
    tmp_path: Any, mock_upstream: str, http: HTTPClient, services: list[Any]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where log_dir should be")
    routes = {"mock": {"pattern": "/mock/", "destination": f"{mock_upstream}/v1/"}}
    service = start_service(make_config(tmp_path, routes, logging={"log_dir": str(blocker)}))
    services.append(service)
    for _ in range(2):
        response = await http.get(proxy_url(service, "/mock/models"))
        assert response.code == 200
        assert (await response.json())["data"]
    text = await wait_for(
        lambda: (
            'capture_errors_total{kind="write"}' in service.metrics.render().decode()
            and service.metrics.render().decode()
        )
    )
    assert text


@pytest_twisted.ensureDeferred
async def test_oversized_metadata_header_is_refused(
    tmp_path: Any, http: HTTPClient, services: list[Any]
) -> None:
    host = log_host(tmp_path, services)
    capture_id = str(uuid.uuid4())
    doc = document(capture_id, padding="x" * 20000)
    response = await http.put(
        logserver_url(host, f"/{capture_id}/response"),
        data=b"x",
        headers={"X-Logproxy-Metadata": json.dumps(doc)},
    )
    assert 400 <= response.code < 500
    await response.content()
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*"))
