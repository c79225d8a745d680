"""Settings from the environment: LOGPROXY_* overrides, --port beats them, ${VAR} in values."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from .conftest import Mock, free_port, proxy_config, start_logproxy, wait_capture

pytestmark = pytest.mark.e2e


def fetch_models(port: int, prefix: str) -> str:
    with urllib.request.urlopen(f"http://localhost:{port}/{prefix}/models", timeout=10) as r:
        assert r.status == 200
        assert b"gpt-4o-mini" in r.read()
        return r.headers["X-Logproxy-Id"]


def test_environment_overrides_and_substitution(tmp_path: Path, mock: Mock) -> None:
    env_port, env_logs = free_port(), tmp_path / "env-logs"
    routes = {
        "subst": {"pattern": "/subst/", "destination": "http://127.0.0.1:${E2E_MOCK_PORT}/v1/"},
        "fallback": {
            "pattern": "/fallback/",
            "destination": f"${{E2E_SURELY_UNSET_URL:-{mock.origin}/v1/}}",
        },
    }
    lp = start_logproxy(
        tmp_path,
        proxy_config(tmp_path / "file-logs", routes),  # server.port: 0 in the file
        env={
            "LOGPROXY_PORT": str(env_port),
            "LOGPROXY_LOG_DIR": str(env_logs),
            "E2E_MOCK_PORT": str(mock.port),
        },
    )
    assert lp.port == env_port  # LOGPROXY_PORT beats the file
    capture = wait_capture(env_logs, fetch_models(env_port, "subst"))  # LOGPROXY_LOG_DIR too
    assert capture.request.startswith(f"GET {mock.origin}/v1/models HTTP/1.1\r\n".encode())
    capture = wait_capture(env_logs, fetch_models(env_port, "fallback"))
    assert capture.request.startswith(f"GET {mock.origin}/v1/models HTTP/1.1\r\n".encode())
    assert not (tmp_path / "file-logs").exists()


def test_port_flag_beats_environment(tmp_path: Path, mock: Mock) -> None:
    env_port, flag_port = free_port(), free_port()
    while flag_port == env_port:
        flag_port = free_port()
    routes = {"mock": {"pattern": "/mock/", "destination": f"{mock.origin}/v1/"}}
    lp = start_logproxy(
        tmp_path,
        proxy_config(tmp_path / "logs", routes),
        args=("--port", str(flag_port)),
        env={"LOGPROXY_PORT": str(env_port)},
    )
    assert lp.port == flag_port
    wait_capture(lp.log_dir, fetch_models(flag_port, "mock"))
