"""Tests for logproxy.config: defaults, every validation error, env, precedence, fuzzing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logproxy.config import (
    DEFAULT_REDACT_HEADERS,
    Config,
    ConfigError,
    Destination,
    LoggingConfig,
    LoggingServerConfig,
    Retention,
    ServerConfig,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def parse(data: object, env: dict[str, str] | None = None, **kw: Any) -> Config:
    return parse_config(data, env=env or {}, base_dir="/base", **kw)


def error_of(data: object, env: dict[str, str] | None = None, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, env, **kw)
    message = str(info.value)
    assert "\n" not in message and len(message.splitlines()) == 1
    assert message == f"{info.value.key}: {info.value.problem}"
    return message


def proxy(routes: object, **server: Any) -> dict[str, Any]:
    return {"server": server, "routes": routes}


def route(pattern: str = "/a/", destination: str = "http://h/v1/", **extra: Any) -> dict[str, Any]:
    return {"pattern": pattern, "destination": destination, **extra}


# ------------------------------------------------------------------ defaults


def test_empty_document_is_all_defaults_without_a_proxy() -> None:
    for data in (None, {}):
        config = parse(data)
        assert config.server is None
        assert config.routes == ()
        assert config.logging_server == LoggingServerConfig()
        assert config.logging == LoggingConfig(log_dir="/base/logs")
        assert config.path is None


def test_defaults_of_each_section() -> None:
    config = parse({"server": None, "logging": None, "logging_server": None, "routes": None})
    assert config.server == ServerConfig()
    server = config.server
    assert (server.host, server.port, server.not_found, server.workers) == (
        "localhost",
        5601,
        None,
        1,
    )
    assert (server.connect_timeout, server.response_timeout, server.idle_timeout) == (
        10.0,
        600.0,
        300.0,
    )
    assert (server.shutdown_timeout, server.max_body_size) == (30.0, None)
    logging = config.logging
    assert logging.enabled and logging.console
    assert logging.redact_headers == DEFAULT_REDACT_HEADERS
    assert logging.retention is None
    assert (logging.max_decoded_size, logging.buffer_size) == (256 * MiB, 64 * MiB)
    assert (logging.server_url, logging.server_token) == ("", "")


def test_null_values_take_the_default() -> None:
    config = parse({"server": {"port": None, "host": None}, "logging": {"log_dir": None}})
    assert config.server == ServerConfig()
    assert config.logging.log_dir == "/base/logs"


def test_full_example() -> None:
    config = parse(
        {
            "server": {
                "host": "0.0.0.0",
                "port": 8000,
                "not_found": "/404/",
                "connect_timeout": "5s",
                "response_timeout": 60,
                "idle_timeout": 1.5,
                "shutdown_timeout": "1m",
                "max_body_size": "10MB",
                "workers": 1,
            },
            "logging": {
                "enabled": False,
                "console": False,
                "log_dir": "/var/log/lp",
                "server_url": "http://logs:5602",
                "server_token": "t",
                "redact_headers": ["X-Secret", "Authorization"],
                "retention": {"max_age": "30d", "max_bytes": "50GB"},
                "max_decoded_size": "1GiB",
                "buffer_size": 1024,
            },
            "logging_server": {"host": "127.0.0.1", "port": 0, "token": "s"},
            "routes": {"lm": route("/lm/", "http://h/v1", logging=True)},
        }
    )
    assert config.server == ServerConfig(
        host="0.0.0.0",
        port=8000,
        not_found="/404/",
        connect_timeout=5.0,
        response_timeout=60.0,
        idle_timeout=1.5,
        shutdown_timeout=60.0,
        max_body_size=10_000_000,
        workers=1,
    )
    assert config.logging == LoggingConfig(
        enabled=False,
        console=False,
        log_dir="/var/log/lp",
        server_url="http://logs:5602",
        server_token="t",
        redact_headers=("x-secret", "authorization"),
        retention=Retention(max_age=30 * 86400.0, max_bytes=50 * 10**9),
        max_decoded_size=1024**3,
        buffer_size=1024,
    )
    assert config.logging_server == LoggingServerConfig("127.0.0.1", 0, "s")
    (lm,) = config.routes
    assert (lm.name, lm.pattern, lm.destination.url) == ("lm", "/lm/", "http://h/v1/")
    assert lm.logging is True  # the route's own value beats logging.enabled
    assert lm.strip_prefix is True
    assert (lm.connect_timeout, lm.response_timeout, lm.idle_timeout) == (5.0, 60.0, 1.5)


def test_route_defaults_resolve_from_logging_and_server() -> None:
    config = parse(
        {
            "server": {"connect_timeout": 3, "idle_timeout": 7},
            "logging": {"default": False},
            "routes": {
                "a": route("/a/"),
                "b": route("/b/", logging=True, connect_timeout=1, response_timeout="2m"),
            },
        }
    )
    a, b = config.routes
    assert (a.logging, a.connect_timeout, a.response_timeout, a.idle_timeout) == (
        False,
        3.0,
        600.0,
        7.0,
    )
    assert (b.logging, b.connect_timeout, b.response_timeout, b.idle_timeout) == (
        True,
        1.0,
        120.0,
        7.0,
    )
    assert a.ca_file is None


# ------------------------------------------------------------------ shipped config


def test_shipped_config_loads() -> None:
    config = load_config(str(REPO / "config.yaml"), env={}, require_file=True)
    assert config.server is not None
    assert (config.server.host, config.server.port, config.server.not_found) == (
        "localhost",
        5601,
        "/404/",
    )
    assert config.logging.enabled
    assert config.logging.log_dir == str(REPO / "logs")
    assert (config.logging_server.host, config.logging_server.port) == ("localhost", 5602)
    routes = {r.name: r for r in config.routes}
    assert routes["mock"].pattern == "/mock/"
    assert routes["mock"].destination.url == "http://127.0.0.1:5600/v1/"
    assert {"openai", "anthropic", "openrouter", "lmstudio", "llama.cpp"} <= set(routes)
    assert config.path == str(REPO / "config.yaml")


def test_shipped_config_mentions_every_key() -> None:
    text = (REPO / "config.yaml").read_text()
    from logproxy import config as module

    tables = (
        module._SERVER_FIELDS,
        module._LOGGING_FIELDS,
        module._LOGGING_SERVER_FIELDS,
        module._RETENTION_FIELDS,
        module._ROUTE_OPTIONAL_FIELDS,
    )
    for table in tables:
        for key in table:
            assert key in text, key


# ------------------------------------------------------------------ load_config


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_missing_file_not_required_gives_defaults(tmp_path: Path) -> None:
    config = load_config(str(tmp_path / "nope.yaml"), env={})
    assert config.server is None and config.path is None
    assert config.logging.log_dir == os.path.abspath("logs")


def test_missing_file_required(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing), env={}, require_file=True)
    assert str(info.value) == f"config: cannot read {missing}: No such file or directory"


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: cannot read .*: Is a directory$"):
        load_config(str(tmp_path), env={})


def test_none_path_gives_defaults() -> None:
    assert load_config(None, env={}).server is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: [1, 2\n", r"^config: invalid YAML at line 2: "),
        ("a: b\n  c: d\n", r"^config: invalid YAML at line 2: mapping values are not allowed"),
        ("server:\n\tport: 1\n", r"^config: invalid YAML at line 2: "),
        ("x: !!python/object:os.system {}\n", r"^config: invalid YAML at line 1: "),
        ("when: 2024-02-30\n", r"^config: invalid YAML: "),
        ("- 1\n- 2\n", r"^config: expected a mapping at the top level, got a list$"),
        ("just a string\n", r"^config: expected a mapping at the top level, got 'just a string'$"),
        ("server: {}\nserver: {}\n", r"^config: duplicate key 'server' at line 2$"),
        (
            "routes:\n  a: {pattern: /a/, destination: http://h/}\n"
            "  a: {pattern: /b/, destination: http://h/}\n",
            r"^config: duplicate key 'a' at line 3$",
        ),
    ],
)
def test_yaml_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, text), env={})
    assert "\n" not in str(info.value)


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = (
        "server: {}\n"
        "x-defaults: &d {destination: 'http://h/', logging: false}\n"
        "routes:\n  a: {<<: *d, pattern: /a/, logging: true}\n"
    )
    # x-defaults is not a known key: anchors must live inside known sections.
    with pytest.raises(ConfigError, match=r"^x-defaults: unknown key"):
        load_config(write(tmp_path, text), env={})
    text = (
        "server: {}\n"
        "routes:\n  a: &d {pattern: /a/, destination: 'http://h/', logging: false}\n"
        "  b: {<<: *d, pattern: /b/, logging: true}\n"
    )
    a, b = load_config(write(tmp_path, text), env={}).routes
    assert (a.logging, b.logging, b.destination.url) == (False, True, "http://h/")


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "ca.pem").write_text("x")
    path = write(
        conf_dir,
        "logging: {log_dir: captures}\nserver: {}\n"
        "routes:\n  a: {pattern: /a/, destination: 'https://h/', ca_file: ca.pem}\n",
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(os.path.relpath(path), env={}, require_file=True)
    assert config.logging.log_dir == str(conf_dir / "captures")
    assert config.routes[0].ca_file == str(conf_dir / "ca.pem")
    assert config.path == path
    assert not (conf_dir / "captures").exists()  # not created here


def test_log_dir_env_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse({"logging": {"log_dir": "file"}}, {"LOGPROXY_LOG_DIR": "from-env"})
    assert config.logging.log_dir == str(tmp_path / "from-env")


def test_ca_file_must_be_readable(tmp_path: Path) -> None:
    data = proxy({"a": route(destination="https://h/", ca_file="missing.pem")})
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={}, base_dir=str(tmp_path))
    assert str(info.value) == (
        f"routes.a.ca_file: cannot read {tmp_path / 'missing.pem'}: No such file or directory"
    )


def test_ca_file_must_be_a_regular_file(tmp_path: Path) -> None:
    data = proxy({"a": route(destination="https://h/", ca_file=".")})
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={}, base_dir=str(tmp_path))
    assert str(info.value) == f"routes.a.ca_file: not a regular file: {tmp_path}"


@pytest.mark.parametrize(
    "text",
    [
        "logging: {redact_headers: &a [*a]}\n",
        "server: &a {x: *a}\n",
        "routes: &a [*a]\nserver: {}\n",
        "server: " + "[" * 5000 + "]" * 5000 + "\n",
    ],
)
def test_hostile_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert "\n" not in str(info.value)


def test_load_config_uses_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGPROXY_PORT", "6001")
    monkeypatch.setenv("LS_TOKEN", "tok")
    path = write(tmp_path, "logging_server: {token: '${LS_TOKEN}'}\n")
    config = load_config(path)
    assert config.server == ServerConfig(port=6001)
    assert config.logging_server.token == "tok"


# ------------------------------------------------------------------ environment


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${HOST}", {"HOST": "example"}, "example"),
        ("${HOST:-fallback}", {}, "fallback"),
        ("${HOST:-fallback}", {"HOST": ""}, "fallback"),  # :- as in the shell
        ("${HOST}", {"HOST": ""}, ""),
        ("a-${X}-${Y:-y}-b", {"X": "x"}, "a-x-y-b"),
        ("${HOST:-}", {}, ""),
        ("no ${ substitution", {}, "no ${ substitution"),
        ("$HOST", {"HOST": "x"}, "$HOST"),
        ("${X}", {"X": "${Y}", "Y": "twice"}, "${Y}"),  # substituted once, not recursively
    ],
)
def test_substitution(value: str, env: dict[str, str], expected: str) -> None:
    config = parse({"logging_server": {"token": value}}, env)
    assert config.logging_server.token == expected


def test_typed_values_from_variables() -> None:
    env = {"PORT": "7000", "ON": "false", "T": "2.5", "SIZE": "1KiB", "W": "3"}
    config = parse(
        {
            "server": {
                "port": "${PORT:-5601}",
                "connect_timeout": "${T}",
                "max_body_size": "${SIZE}",
                "workers": "${W}",
            },
            "logging": {"console": "${ON}", "enabled": "${MISSING:-yes}"},
            "logging_server": {"port": "${LS_PORT:-0}"},
        },
        env,
    )
    assert config.server is not None
    assert (config.server.port, config.server.connect_timeout) == (7000, 2.5)
    assert (config.server.max_body_size, config.server.workers) == (1024, 3)
    assert (config.logging.console, config.logging.enabled) == (False, True)
    assert config.logging_server.port == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            proxy({"x": route(destination="${OPENROUTER_URL}")}),
            "routes.x.destination: environment variable OPENROUTER_URL is not set",
        ),
        (
            {"logging": {"redact_headers": ["a", "${H}"]}},
            "logging.redact_headers[2]: environment variable H is not set",
        ),
        (
            {"logging": {"retention": {"max_age": "${AGE}"}}},
            "logging.retention.max_age: environment variable AGE is not set",
        ),
        (
            proxy([{"source": "/a/", "destination": "http://h/", "name": "${N}"}]),
            "routes[1].name: environment variable N is not set",
        ),
        ({"server": {"port": "${P}"}}, "server.port: environment variable P is not set"),
    ],
)
def test_missing_variable(data: object, message: str) -> None:
    assert error_of(data) == message


def test_keys_are_not_substituted() -> None:
    config = parse(proxy({"${NAME}": route()}), {"NAME": "x"})
    assert config.routes[0].name == "${NAME}"


# ------------------------------------------------------------------ precedence


@pytest.mark.parametrize(
    ("file_port", "env_port", "flag_port", "expected"),
    [
        (None, None, None, 5601),
        (1000, None, None, 1000),
        (1000, "2000", None, 2000),
        (1000, "2000", 3000, 3000),
        (None, None, 3000, 3000),
        (1000, "", None, 1000),  # an empty variable counts as unset
    ],
)
def test_port_precedence(
    file_port: int | None, env_port: str | None, flag_port: int | None, expected: int
) -> None:
    env = {} if env_port is None else {"LOGPROXY_PORT": env_port}
    config = parse({"server": {"port": file_port}}, env, port=flag_port)
    assert config.server is not None and config.server.port == expected


@pytest.mark.parametrize(
    ("file_host", "env_host", "flag_host", "expected"),
    [
        (None, None, None, "localhost"),
        ("file", None, None, "file"),
        ("file", "env", None, "env"),
        ("file", "env", "flag", "flag"),
    ],
)
def test_host_precedence(
    file_host: str | None, env_host: str | None, flag_host: str | None, expected: str
) -> None:
    env = {} if env_host is None else {"LOGPROXY_HOST": env_host}
    config = parse({"server": {"host": file_host}}, env, host=flag_host)
    assert config.server is not None and config.server.host == expected


@pytest.mark.parametrize(
    ("env", "kw", "expected"),
    [
        ({"LOGPROXY_PORT": "7000"}, {}, ServerConfig(port=7000)),
        ({"LOGPROXY_HOST": "0.0.0.0"}, {}, ServerConfig(host="0.0.0.0")),
        ({}, {"port": 0}, ServerConfig(port=0)),
        ({}, {"host": "::1"}, ServerConfig(host="::1")),
    ],
)
def test_override_creates_a_server_section(
    env: dict[str, str], kw: dict[str, Any], expected: ServerConfig
) -> None:
    assert parse({}, env, **kw).server == expected


def test_log_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse({}).logging.log_dir == "/base/logs"
    assert parse({"logging": {"log_dir": "/f"}}).logging.log_dir == "/f"
    config = parse({"logging": {"log_dir": "/f"}}, {"LOGPROXY_LOG_DIR": "/e"})
    assert config.logging.log_dir == "/e"


@pytest.mark.parametrize(
    ("env", "kw", "message"),
    [
        ({"LOGPROXY_PORT": "abc"}, {}, "LOGPROXY_PORT: expected an integer, got 'abc'"),
        ({"LOGPROXY_PORT": "70000"}, {}, "LOGPROXY_PORT: must be between 0 and 65535, got 70000"),
        ({}, {"port": -1}, "--port: must be between 0 and 65535, got -1"),
        ({}, {"host": " "}, "--host: must not be empty (use 0.0.0.0 or :: for all interfaces)"),
    ],
)
def test_invalid_overrides(env: dict[str, str], kw: dict[str, Any], message: str) -> None:
    assert error_of({}, env, **kw) == message


def test_invalid_env_port_is_reported_even_with_a_flag() -> None:
    # A broken variable is reported rather than silently shadowed by the flag.
    assert error_of({}, {"LOGPROXY_PORT": "x"}, port=1).startswith("LOGPROXY_PORT:")


# ------------------------------------------------------------------ validation errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # unknown keys, with a suggestion where one is close
        ({"server": {"prot": 1}}, "server.prot: unknown key (did you mean 'port'?)"),
        ({"sever": {}}, "sever: unknown key (did you mean 'server'?)"),
        (
            {"zzz": 1},
            "zzz: unknown key (expected one of: server, logging, logging_server, routes)",
        ),
        ({"logging": {"enable": True}}, "logging.enable: unknown key (did you mean 'enabled'?)"),
        (
            {"logging": {"retention": {"max_agee": "1d"}}},
            "logging.retention.max_agee: unknown key (did you mean 'max_age'?)",
        ),
        (
            {"logging_server": {"tokn": "x"}},
            "logging_server.tokn: unknown key (did you mean 'token'?)",
        ),
        ({1: 2}, "1: unknown key (expected one of: server, logging, logging_server, routes)"),
        (
            proxy({"a": route(strip_prefx=False)}),
            "routes.a.strip_prefx: unknown key (did you mean 'strip_prefix'?)",
        ),
        (
            proxy([{"source": "/a/", "destination": "http://h/", "pattern": "/a/"}]),
            "routes[1].pattern: unknown key (did you mean 'source'?)",
        ),
        # wrong types
        ({"server": []}, "server: expected a mapping, got a list"),
        ({"logging": "yes"}, "logging: expected a mapping, got 'yes'"),
        ({"server": {"port": "abc"}}, "server.port: expected an integer, got 'abc'"),
        ({"server": {"port": 1.5}}, "server.port: expected an integer, got 1.5"),
        ({"server": {"port": True}}, "server.port: expected an integer, got true"),
        ({"server": {"host": 5}}, "server.host: expected a string, got 5"),
        (
            {"server": {"host": ""}},
            "server.host: must not be empty (use 0.0.0.0 or :: for all interfaces)",
        ),
        (
            {"logging": {"console": "maybe"}},
            "logging.console: expected a boolean (true or false), got 'maybe'",
        ),
        ({"logging": {"enabled": 2}}, "logging.enabled: expected a boolean (true or false), got 2"),
        ({"logging": {"log_dir": ""}}, "logging.log_dir: must not be empty"),
        ({"logging": {"log_dir": []}}, "logging.log_dir: expected a string, got a list"),
        ({"logging": {"server_token": 123}}, "logging.server_token: expected a string, got 123"),
        ({"logging_server": {"token": 123}}, "logging_server.token: expected a string, got 123"),
        # ranges
        ({"server": {"port": 65536}}, "server.port: must be between 0 and 65535, got 65536"),
        ({"server": {"port": -1}}, "server.port: must be between 0 and 65535, got -1"),
        (
            {"logging_server": {"port": 70000}},
            "logging_server.port: must be between 0 and 65535, got 70000",
        ),
        (
            {"server": {"workers": 0}},
            "server.workers: must be between 1 and 256 (or auto), got 0",
        ),
        (
            {"server": {"workers": 1000}},
            "server.workers: must be between 1 and 256 (or auto), got 1000",
        ),
        (
            {"server": {"connect_timeout": 0}},
            "server.connect_timeout: must be greater than 0, got 0",
        ),
        ({"server": {"idle_timeout": -1}}, "server.idle_timeout: must not be negative, got -1"),
        (
            {"server": {"response_timeout": "0s"}},
            "server.response_timeout: must be greater than 0, got '0s'",
        ),
        (
            {"server": {"shutdown_timeout": "soon"}},
            "server.shutdown_timeout: expected a duration such as 90s, 30m, 1h or 2d"
            " (or seconds), got 'soon'",
        ),
        (
            {"server": {"connect_timeout": float("inf")}},
            "server.connect_timeout: duration too large: inf",
        ),
        (
            {"server": {"connect_timeout": float("nan")}},
            "server.connect_timeout: duration too large: nan",
        ),
        ({"server": {"max_body_size": 0}}, "server.max_body_size: must be greater than 0, got 0"),
        (
            {"server": {"max_body_size": "lots"}},
            "server.max_body_size: expected a size such as 512MiB, 10MB, 1KB or a byte count,"
            " got 'lots'",
        ),
        (
            {"logging": {"max_decoded_size": 0}},
            "logging.max_decoded_size: must be greater than 0, got 0",
        ),
        ({"logging": {"buffer_size": -5}}, "logging.buffer_size: must not be negative, got -5"),
        (
            {"logging": {"retention": {"max_bytes": "0GB"}}},
            "logging.retention.max_bytes: must be greater than 0, got '0GB'",
        ),
        ({"logging": {"retention": "30d"}}, "logging.retention: expected a mapping, got '30d'"),
        # alias
        (
            {"logging": {"enabled": True, "default": False}},
            "logging.default: alias of logging.enabled; give only one",
        ),
        # lists
        (
            {"logging": {"redact_headers": "cookie"}},
            "logging.redact_headers: expected a list of header names, got 'cookie'",
        ),
        (
            {"logging": {"redact_headers": ["ok", 5]}},
            "logging.redact_headers[2]: expected a string, got 5",
        ),
        ({"logging": {"redact_headers": [""]}}, "logging.redact_headers[1]: must not be empty"),
        # server_url
        (
            {"logging": {"server_url": "ftp://x/"}},
            "logging.server_url: expected an http:// or https:// URL, got 'ftp://x/'",
        ),
        (
            {"logging": {"server_url": "logs:5602"}},
            "logging.server_url: expected an http:// or https:// URL, got 'logs:5602'",
        ),
        # logging server token
        (
            {"logging_server": {"host": "0.0.0.0"}},
            "logging_server.token: required when the logging server listens on 0.0.0.0"
            " (not loopback)",
        ),
        (
            {"logging_server": {"host": "example.com", "token": ""}},
            "logging_server.token: required when the logging server listens on example.com"
            " (not loopback)",
        ),
    ],
)
def test_errors(data: object, message: str) -> None:
    assert error_of(data) == message


@pytest.mark.parametrize(
    ("host", "port", "token"),
    [
        ("localhost", 5602, ""),
        ("LOCALHOST", 5602, ""),
        ("127.0.0.5", 5602, ""),
        ("::1", 5602, ""),
        ("[::1]", 5602, ""),
        ("0.0.0.0", 0, ""),  # disabled: no token needed
        ("0.0.0.0", 5602, "secret"),
    ],
)
def test_logging_server_token_not_required(host: str, port: int, token: str) -> None:
    parse({"logging_server": {"host": host, "port": port, "token": token}})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("yes", True),
        ("no", False),
        ("1", True),
        ("0", False),
        ("TRUE", True),
        ("off", False),
        (1, True),
        (0, False),
    ],
)
def test_booleans(value: object, expected: bool) -> None:
    assert parse({"logging": {"console": value}}).logging.console is expected


def test_redact_headers_replace_and_lowercase() -> None:
    config = parse({"logging": {"redact_headers": ["X-Key", "x-key", " Cookie "]}})
    assert config.logging.redact_headers == ("x-key", "cookie")
    assert parse({"logging": {"redact_headers": []}}).logging.redact_headers == ()


def test_empty_retention_is_none() -> None:
    assert parse({"logging": {"retention": {}}}).logging.retention is None
    retention = parse({"logging": {"retention": {"max_age": 60}}}).logging.retention
    assert retention == Retention(max_age=60.0, max_bytes=None)


# ------------------------------------------------------------------ routes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"routes": {"a": route()}},
            "routes: requires a server section (the reverse proxy is not configured)",
        ),
        (
            {"routes": [{"source": "/a/", "destination": "http://h/"}]},
            "routes: requires a server section (the reverse proxy is not configured)",
        ),
        (
            proxy("nope"),
            "routes: expected a mapping of route names to routes (or a list), got 'nope'",
        ),
        (proxy({"a": {"pattern": "/a/"}}), "routes.a: missing required key 'destination'"),
        (proxy({"a": None}), "routes.a: missing required keys 'pattern', 'destination'"),
        (proxy({"a": "http://h/"}), "routes.a: expected a mapping, got 'http://h/'"),
        (proxy({1: route()}), "routes.1: route names must be strings, got 1"),
        (proxy({"": route()}), "routes.: must not be empty"),
        (proxy([{"destination": "http://h/"}]), "routes[1]: missing required key 'source'"),
        (proxy([route()]), "routes[1].pattern: unknown key (did you mean 'source'?)"),
        (proxy(["x"]), "routes[1]: expected a mapping, got 'x'"),
        (
            proxy(
                [
                    {"source": "/a/", "destination": "http://h/", "name": "x"},
                    {"source": "/b/", "destination": "http://h/", "name": "x"},
                ]
            ),
            "routes[2].name: duplicate route name 'x' (also routes[1])",
        ),
        (
            proxy(
                [
                    {"source": "/a/", "destination": "http://h/"},
                    {"source": "/b/", "destination": "http://h/", "name": "route1"},
                ]
            ),
            "routes[2].name: duplicate route name 'route1' (also routes[1])",
        ),
        (
            proxy({"a": route(logging="sometimes")}),
            "routes.a.logging: expected a boolean (true or false), got 'sometimes'",
        ),
        (
            proxy({"a": {"source": "/a/", "destination": "http://h/"}}),
            "routes.a.source: unknown key (did you mean 'pattern'?)",
        ),
        (
            proxy({"a": route(strip_prefix=3)}),
            "routes.a.strip_prefix: expected a boolean (true or false), got 3",
        ),
        (
            proxy({"a": route(idle_timeout=0)}),
            "routes.a.idle_timeout: must be greater than 0, got 0",
        ),
        (proxy({"a": route(pattern=5)}), "routes.a.pattern: expected a string, got 5"),
        (proxy({"a": route(pattern="")}), "routes.a.pattern: must not be empty"),
        (
            proxy({"a\nb": route()}),
            "routes.a\\nb: route name must not contain control characters: 'a\\nb'",
        ),
    ],
)
def test_route_errors(data: object, message: str) -> None:
    assert error_of(data) == message


def test_empty_routes_need_no_server() -> None:
    assert parse({"routes": {}}).routes == ()
    assert parse({"routes": []}).routes == ()


def test_list_form() -> None:
    config = parse(
        proxy(
            [
                {
                    "source": "/api/v1/",
                    "destination": "https://openrouter.ai/",
                    "name": "openrouter",
                },
                {
                    "source": "/b/",
                    "destination": "http://h/",
                    "strip_prefix": True,
                    "logging": False,
                },
            ]
        )
    )
    first, second = config.routes
    assert (first.name, first.pattern, first.strip_prefix) == ("openrouter", "/api/v1/", False)
    assert first.destination.url == "https://openrouter.ai/"
    assert (second.name, second.strip_prefix, second.logging) == ("route2", True, False)


def test_mapping_form_keeps_order_and_defaults() -> None:
    config = parse(proxy({"z": route("/z/"), "a": route("/a/", strip_prefix=False)}))
    assert [r.name for r in config.routes] == ["z", "a"]
    assert [r.strip_prefix for r in config.routes] == [True, False]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("/a/{id}", "routes.r.pattern: named wildcards are not supported"),
        ("/a/{path...}", "routes.r.pattern: named wildcards are not supported"),
        ("api", "routes.r.pattern: "),
        ("GET", "routes.r.pattern: "),
        ("/a b/", "routes.r.pattern: "),
    ],
)
def test_invalid_patterns(pattern: str, message: str) -> None:
    assert error_of(proxy({"r": route(pattern)})).startswith(message)


def test_invalid_list_pattern_names_the_source_key() -> None:
    data = proxy([{"source": "/x/{id}", "destination": "http://h/"}])
    assert error_of(data) == "routes[1].source: named wildcards are not supported"


@pytest.mark.parametrize(
    ("first", "second", "fragment"),
    [
        ("/api/", "/api/", "'/api/' conflicts with routes.one.pattern '/api/'"),
        ("GET /api/", "/api/v1/", "'/api/v1/' conflicts with routes.one.pattern 'GET /api/'"),
    ],
)
def test_conflicts_name_both_routes(first: str, second: str, fragment: str) -> None:
    message = error_of(proxy({"one": route(first), "two": route(second)}))
    assert message.startswith(f"routes.two.pattern: {fragment}")


def test_no_conflict_when_one_is_more_specific() -> None:
    config = parse(proxy({"a": route("/api/"), "b": route("/api/v1/"), "c": route("/api/v1/x")}))
    assert len(config.routes) == 3
    config = parse(proxy({"a": route("/api/"), "c": route("POST /api/"), "h": route("h/api/")}))
    assert len(config.routes) == 3


def test_list_form_conflict() -> None:
    data = proxy(
        [
            {"source": "/a/", "destination": "http://h/"},
            {"source": "/a/", "destination": "http://h/"},
        ]
    )
    assert error_of(data).startswith(
        "routes[2].source: '/a/' conflicts with routes[1].source '/a/'"
    )


@pytest.mark.parametrize(
    ("value", "expected"), [("/404/", "/404/"), ("/404", "/404/"), ("/gone/x", "/gone/x/")]
)
def test_not_found_is_a_subtree(value: str, expected: str) -> None:
    config = parse({"server": {"not_found": value}})
    assert config.server is not None and config.server.not_found == expected


def test_not_found_must_not_conflict_with_routes() -> None:
    message = error_of(proxy({"r": route("/404/")}, not_found="/404"))
    assert message.startswith("server.not_found: '/404/' conflicts with routes.r.pattern '/404/'")


def test_not_found_is_validated() -> None:
    assert error_of({"server": {"not_found": "/x/{id}"}}).startswith("server.not_found: ")
    assert (
        error_of({"server": {"not_found": 404}}) == "server.not_found: expected a string, got 404"
    )


# ------------------------------------------------------------------ destinations


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/v1", Destination("http://h/v1/", "http", "h", 80, "/v1/", "http://h", "http://h/v1")),
        ("http://h", Destination("http://h/", "http", "h", 80, "/", "http://h", "http://h/")),
        ("http://h/", Destination("http://h/", "http", "h", 80, "/", "http://h", "http://h/")),
        ("https://h/v1/", Destination("https://h/v1/", "https", "h", 443, "/v1/", "https://h", "https://h/v1/")),
        (
            "http://127.0.0.1:1234/v1/",
            Destination("http://127.0.0.1:1234/v1/", "http", "127.0.0.1", 1234, "/v1/", "http://127.0.0.1:1234",
                        "http://127.0.0.1:1234/v1/"),
        ),
        ("http://h:80/", Destination("http://h:80/", "http", "h", 80, "/", "http://h:80", "http://h:80/")),
        ("HTTPS://API.Example.COM/a", Destination("https://api.example.com/a/", "https",
                                                  "api.example.com", 443, "/a/",
                                                  "https://api.example.com", "https://api.example.com/a")),
        ("http://[::1]:8080/v1", Destination("http://[::1]:8080/v1/", "http", "::1", 8080, "/v1/", "http://[::1]:8080",
                                             "http://[::1]:8080/v1")),
        ("https://[::1]", Destination("https://[::1]/", "https", "::1", 443, "/", "https://[::1]", "https://[::1]/")),
        ("http://h/a%20b", Destination("http://h/a%20b/", "http", "h", 80, "/a%20b/", "http://h", "http://h/a%20b")),
    ],
)  # fmt: skip
def test_destination_normalisation(url: str, expected: Destination) -> None:
    config = parse(proxy({"r": route(destination=url)}))
    assert config.routes[0].destination == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "expected an http:// or https:// URL, got an empty string"),
        ("ftp://h/", "expected an http:// or https:// URL, got 'ftp://h/'"),
        ("h/v1", "expected an http:// or https:// URL, got 'h/v1'"),
        ("/v1/", "expected an http:// or https:// URL, got '/v1/'"),
        ("http:///v1", "URL has no host: 'http:///v1'"),
        ("http://h/?a=1", "URL must not have a query string: 'http://h/?a=1'"),
        ("http://h/?", "URL must not have a query string: 'http://h/?'"),
        ("http://h/#f", "URL must not have a fragment: 'http://h/#f'"),
        ("http://u:p@h/", "credentials in the URL are not supported (they would be logged)"),
        ("http://h:0/", "URL port must be between 1 and 65535: 'http://h:0/'"),
        ("http://h:99999/", "invalid URL 'http://h:99999/': "),
        ("http://h:x/", "invalid URL 'http://h:x/': "),
        ("http://[::1/", "invalid URL 'http://[::1/': "),
        ("http://h /", "URL must not contain whitespace or control characters: 'http://h /'"),
        ("http://h/\n", "URL must not contain whitespace or control characters: 'http://h/\\n'"),
    ],
)
def test_invalid_destinations(url: str, problem: str) -> None:
    message = error_of(proxy({"r": route(destination=url)}))
    assert message.startswith(f"routes.r.destination: {problem}")


def test_destination_must_be_a_string() -> None:
    assert error_of(proxy({"r": route(destination=5)})) == (
        "routes.r.destination: expected a string, got 5"
    )


# ------------------------------------------------------------------ value parsers


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("1h", 3600.0),
     ("2d", 172800.0), ("1w", 604800.0), ("500ms", 0.5), ("1h30m", 5400.0), (" 2H ", 7200.0),
     ("0.5h", 1800.0), (0, 0.0)],
)  # fmt: skip
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value, "k") == seconds


@pytest.mark.parametrize(
    "value", ["", "s", "1x", "-1s", "1h 30m", "inf", "nan", None, True, [], -1]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^k: "):
        parse_duration(value, "k")


@pytest.mark.parametrize(
    ("value", "size"),
    [(0, 0), (1024, 1024), (2048.0, 2048), ("1024", 1024), ("1KB", 1000), ("10MB", 10**7),
     ("50GB", 50 * 10**9), ("1TB", 10**12), ("512MiB", 512 * MiB), ("1KiB", 1024),
     ("2GiB", 2 * 1024**3), ("10m", 10 * MiB), ("1k", 1024), ("1.5KiB", 1536), ("10 mb", 10**7),
     ("7B", 7)],
)  # fmt: skip
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value, "k") == size


@pytest.mark.parametrize(
    "value", ["", "MB", "1XB", "-1", "1e9", None, True, 1.5, -1, [], float("inf")]
)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^k: "):
        parse_size(value, "k")


def test_error_is_one_line_even_for_hostile_input() -> None:
    message = error_of({"server\n\u2028x": 1})
    assert message.startswith("server\\n\\u2028x: unknown key")
    assert error_of({"server": {"port": 10**5000}}) == (
        "server.port: must be between 0 and 65535, got a very large integer"
    )


# ------------------------------------------------------------------ fuzzing

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        ["/a/", "/b/", "GET /a/", "/x/{id}", "http://h/v1", "https://[::1]:1/", "${X}",
         "${X:-1}", "10MB", "1h", "true", "5601", "", "/", "/404", "ca.pem", "h.com/a/"]
    )
)  # fmt: skip
anything = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4)
    ),
    max_leaves=12,
)


def section(keys: list[str]) -> st.SearchStrategy[object]:
    known = st.dictionaries(st.sampled_from(keys), anything, max_size=len(keys))
    return anything | known


ROUTE_KEYS = ["pattern", "source", "name", "destination", "logging", "strip_prefix",
              "ca_file", "connect_timeout", "response_timeout", "idle_timeout"]  # fmt: skip
routes_strategy = (
    anything
    | st.dictionaries(st.text(max_size=6), section(ROUTE_KEYS), max_size=3)
    | st.lists(section(ROUTE_KEYS), max_size=3)
)
documents = anything | st.fixed_dictionaries(
    {},
    optional={
        "server": section(["host", "port", "not_found", "connect_timeout", "response_timeout",
                           "idle_timeout", "shutdown_timeout", "max_body_size", "workers"]),
        "logging": section(["enabled", "default", "console", "log_dir", "server_url",
                            "server_token", "redact_headers", "retention", "max_decoded_size",
                            "buffer_size"]),
        "logging_server": section(["host", "port", "token"]),
        "routes": routes_strategy,
    },
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=documents,
    env=st.dictionaries(
        st.sampled_from(["X", "LOGPROXY_PORT", "LOGPROXY_HOST", "LOGPROXY_LOG_DIR"]),
        st.text(max_size=6).filter(lambda s: "\0" not in s),
    ),
)
def test_fuzz_only_config_errors(data: object, env: dict[str, str]) -> None:
    try:
        config = parse_config(data, env=env, base_dir="/nonexistent-base")
    except ConfigError as e:
        assert len(str(e).splitlines()) == 1
        assert "\n" not in str(e)
    else:
        assert isinstance(config, Config)


@settings(max_examples=150, deadline=None)
@given(data=documents)
def test_fuzz_through_yaml(tmp_path_factory: pytest.TempPathFactory, data: object) -> None:
    """A round trip through a YAML file exercises load_config as well."""
    try:
        text = yaml.safe_dump(data)
    except yaml.YAMLError:
        return
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text)
    try:
        load_config(str(path), env={}, require_file=True)
    except ConfigError as e:
        assert "\n" not in str(e)


def test_workers_auto_is_one_per_core() -> None:
    import os

    config = parse({"server": {"workers": "auto"}}, {})
    assert config.server is not None
    assert config.server.workers == len(os.sched_getaffinity(0)) >= 1
