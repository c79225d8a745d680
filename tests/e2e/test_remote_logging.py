"""Remote mode: a proxy streams its captures to a central log host (``logging.server_url``).

The log host is a logproxy without a ``server:`` section. Its files must be the ones a
local-mode proxy writes for the same request, byte for byte.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    Logproxy,
    Mock,
    assert_complete,
    capture_files,
    openai_client,
    proxy_config,
    start_log_host,
    start_logproxy,
)

pytestmark = pytest.mark.e2e

CHAT = [{"role": "user", "content": "hello remote"}]
#: Fixed client headers, Host included: X-Proxy-Path is built from it, so two proxies on
#: different ports store the same request line, headers and X-Proxy-Path.
CLIENT_HEADERS = {
    "Host": "proxy.e2e.test:8080",
    "User-Agent": "logproxy-e2e/1",
    "Accept-Encoding": "identity",
    "Authorization": "Bearer sk-e2e-remote-0123456789abcdef",
}


def routes(mock: Mock) -> dict[str, dict[str, str]]:
    """The same names and destinations as the shared local proxy's."""
    return {
        "mock": {"pattern": "/mock/", "destination": f"{mock.origin}/v1/"},
        "helpers": {"pattern": "/helpers/", "destination": f"{mock.origin}/mock/"},
    }


def remote_proxy(workdir: Path, mock: Mock, host: Logproxy, token: str = "") -> Logproxy:
    logging = {"server_url": host.logserver_url, "server_token": token}
    return start_logproxy(
        workdir, proxy_config(workdir / "proxy-logs", routes(mock), logging=logging)
    )


@pytest.fixture(scope="module")
def log_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logproxy]:
    host = start_log_host(tmp_path_factory.mktemp("loghost"))
    yield host
    host.stop()


@pytest.fixture(scope="module")
def remote(
    tmp_path_factory: pytest.TempPathFactory, mock: Mock, log_host: Logproxy
) -> Iterator[Logproxy]:
    lp = remote_proxy(tmp_path_factory.mktemp("remote"), mock, log_host)
    yield lp
    lp.stop()


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
    """``(status, X-Logproxy-Id, body)`` of a request with :data:`CLIENT_HEADERS`."""
    conn = http.client.HTTPConnection("localhost", port, timeout=10)
    try:
        headers = dict(CLIENT_HEADERS)
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers["X-Logproxy-Id"], response.read()
    finally:
        conn.close()


def normalized(blob: bytes, capture_id: str) -> bytes:
    """A response.bin without what legitimately differs between two exchanges."""
    blob = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: <date>", blob, count=1)
    return blob.replace(capture_id.encode(), b"<id>")


def test_log_host_answers_health(log_host: Logproxy) -> None:
    with urllib.request.urlopen(f"{log_host.logserver_url}/health", timeout=10) as r:
        assert r.status == 200
        assert json.loads(r.read()) == {"status": "ok"}


def test_sdk_calls_are_captured_on_the_log_host(remote: Logproxy, log_host: Logproxy) -> None:
    client = openai_client(f"{remote.url}/mock")
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    assert raw.parse().choices[0].message.content == "word1 word2 word3 word4 word5"
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=CHAT, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    for capture_id in (raw.headers["x-logproxy-id"], stream.response.headers["x-logproxy-id"]):
        capture = log_host.capture(capture_id)
        assert_complete(capture, "mock", 200)
        assert capture.request.startswith(b"POST http://127.0.0.1:")
        assert not capture_files(remote.log_dir, capture_id)
    assert b"data: [DONE]" in capture.response
    assert chunks[0].id.encode() in capture.response
    assert not remote.log_dir.exists() or not any(remote.log_dir.rglob("*.bin"))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/helpers/echo?x=1", json.dumps({"hello": "world", "n": [1, 2, 3]}).encode()),
        ("GET", "/helpers/sse?events=8&interval=0.005&size=40", None),
        ("GET", "/helpers/bytes?size=300000&chunk=7000&chunked=1", None),
    ],
    ids=["echo", "sse", "bytes"],
)
def test_remote_files_are_byte_identical_to_local_ones(
    proxy: Logproxy,
    remote: Logproxy,
    log_host: Logproxy,
    method: str,
    path: str,
    body: bytes | None,
) -> None:
    local_status, local_id, local_body = request(proxy.port, method, path, body)
    remote_status, remote_id, remote_body = request(remote.port, method, path, body)
    assert local_status == remote_status == 200
    assert local_body == remote_body

    local = proxy.capture(local_id)
    stored = log_host.capture(remote_id)
    assert stored.request == local.request
    assert normalized(stored.response, remote_id) == normalized(local.response, local_id)
    assert stored.response.endswith(remote_body)
    for doc in (stored.request_meta, stored.response_meta):
        assert doc["completed"] is True and doc["error"] is None
    assert stored.response_meta["bytes_written"] == len(stored.response)


def test_log_host_token(tmp_path: Path, mock: Mock) -> None:
    host = start_log_host(tmp_path / "host", token="e2e-host-token")
    good = remote_proxy(tmp_path / "good", mock, host, token="e2e-host-token")
    bad = remote_proxy(tmp_path / "bad", mock, host, token="not-the-token")
    status, good_id, _ = request(good.port, "GET", "/mock/models")
    assert status == 200
    assert_complete(host.capture(good_id), "mock", 200)

    # a rejected upload never fails the proxied request...
    status, bad_id, body = request(bad.port, "GET", "/mock/models")
    assert status == 200 and b"gpt-4o-mini" in body
    # ...it is reported, and the log host writes nothing for it
    bad.wait_log(rf"capture {bad_id}: upload failed: .*401")
    assert not capture_files(host.log_dir, bad_id)
    assert not capture_files(bad.log_dir, bad_id)
    assert "e2e-host-token" not in good.log() + bad.log() + host.log()


def test_log_host_down_never_fails_requests_and_falls_back_to_local_files(
    tmp_path: Path, mock: Mock, closed_port: int
) -> None:
    logging = {"server_url": f"http://localhost:{closed_port}"}
    lp = start_logproxy(tmp_path, proxy_config(tmp_path / "logs", routes(mock), logging=logging))
    client = openai_client(f"{lp.url}/mock")
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith(
        "word1"
    )
    capture_id = stream.response.headers["x-logproxy-id"]
    lp.wait_log(rf"\[{capture_id[:8]}\] 200 OK")
    lp.wait_log(r"logging server http://localhost:\d+ unreachable .*; writing captures to ")
    capture = lp.capture(capture_id)  # in the proxy's own log_dir
    assert_complete(capture, "mock", 200)
