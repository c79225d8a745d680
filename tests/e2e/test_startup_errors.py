"""A bad config or a taken port: non-zero exit, one line naming the problem, no traceback."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import run_twistd

pytestmark = pytest.mark.e2e

ROUTE = '{pattern: "/a/", destination: "http://127.0.0.1:9/"}'

CASES = {
    "unknown key": ("serverr: {port: 0}\n", (), {}, "serverr: unknown key"),
    "unknown nested key": (
        f"server: {{port: 0, prot: 1}}\nroutes: {{a: {ROUTE}}}\n",
        (),
        {},
        "server.prot: unknown key",
    ),
    "named wildcard": (
        'server: {port: 0}\nroutes:\n  x: {pattern: "/x/{id}", destination: "http://127.0.0.1:9/"}\n',
        (),
        {},
        "routes.x.pattern: named wildcards are not supported",
    ),
    "conflicting patterns": (
        "server: {port: 0}\nroutes:\n"
        '  a: {pattern: "GET /api/", destination: "http://127.0.0.1:9/"}\n'
        '  b: {pattern: "/api/v1/", destination: "http://127.0.0.1:9/"}\n',
        (),
        {},
        "routes.b.pattern: '/api/v1/' conflicts with routes.a.pattern",
    ),
    "identical patterns": (
        f"server: {{port: 0}}\nroutes:\n  a: {ROUTE}\n  b: {ROUTE}\n",
        (),
        {},
        "routes.b.pattern",
    ),
    "routes without server": (f"routes: {{a: {ROUTE}}}\n", (), {}, "routes: requires a server"),
    "invalid yaml": ("server: {port: 0\nroutes: [\n", (), {}, "config: invalid YAML"),
    "invalid destination": (
        'server: {port: 0}\nroutes: {a: {pattern: "/a/", destination: "ftp://x/"}}\n',
        (),
        {},
        "routes.a.destination",
    ),
    "unset variable": (
        'server: {port: 0}\nroutes: {a: {pattern: "/a/", destination: "${E2E_UNSET_VAR}"}}\n',
        (),
        {},
        "routes.a.destination: environment variable E2E_UNSET_VAR is not set",
    ),
    "enabled and default": (
        "logging: {enabled: true, default: false}\n",
        (),
        {},
        "logging.default",
    ),
    "missing file": (None, (), {}, "config: cannot read"),
    "port not a number": ("server: {port: 0}\n", ("--port", "abc"), {}, "--port"),
    "env port not a number": ("server: {port: 0}\n", (), {"LOGPROXY_PORT": "abc"}, "LOGPROXY_PORT"),
}


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = result.stdout + result.stderr
    lines = output.splitlines()
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert 1 <= len(lines) <= 3, output
    matching = [line for line in lines if all(text in line for text in expected)]
    assert len(matching) == 1, output


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_invalid_config_exits_with_one_line(tmp_path: Path, case: str) -> None:
    text, args, env, expected = CASES[case]
    config = tmp_path / "bad.yaml"
    if text is not None:
        config.write_text(text)
    result = run_twistd(
        ["-n", "--pidfile=", "logproxy", "--config", str(config), *args], tmp_path, env, timeout=10
    )
    assert_one_line_failure(result, expected)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    "section",
    ["server", "logging_server"],
)
def test_port_in_use_exits_with_one_line(tmp_path: Path, taken_port: int, section: str) -> None:
    config = tmp_path / "config.yaml"
    other = "logging_server" if section == "server" else "server"
    config.write_text(f"{section}: {{port: {taken_port}}}\n{other}: {{port: 0}}\n")
    result = run_twistd(
        ["-n", "--pidfile=", "logproxy", "--config", str(config)], tmp_path, timeout=10
    )
    assert_one_line_failure(result, f"cannot listen on localhost:{taken_port}", "in use")
