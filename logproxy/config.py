"""Load ``config.yaml`` into frozen dataclasses and validate all of it up front.

Every problem becomes a :class:`ConfigError` whose ``str`` is one line naming the
key (``routes.lmstudio.pattern: named wildcards are not supported``), so the
twistd plugin can print it and exit before listening (SPEC §1, §2).  Nothing
here imports Twisted: the module is pure and is tested without a reactor.

Validation is driven by small schema tables (key -> converter).  A converter
takes the raw value, the full key path (for error messages) and a context
(environment, directory of the config file) and returns the typed value.
``${NAME}`` substitution happens exactly once, on each scalar string value,
before its converter runs, so a value coming from a variable is typed like a
literal one (``port: "${PORT:-5601}"``).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import yaml

__all__ = [
    "DEFAULT_REDACT_HEADERS",
    "Config",
    "ConfigError",
    "Destination",
    "LoggingConfig",
    "LoggingServerConfig",
    "Retention",
    "RouteConfig",
    "ServerConfig",
    "load_config",
    "parse_config",
    "parse_destination",
    "parse_duration",
    "parse_size",
]

MiB = 1024 * 1024
DEFAULT_REDACT_HEADERS: tuple[str, ...] = (
    "authorization",
    "x-api-key",
    "api-key",
    "proxy-authorization",
    "cookie",
)


class ConfigError(Exception):
    """An invalid setting; ``str(e)`` is exactly one line: ``'<key.path>: <problem>'``.

    Control characters (newlines included) in the key or problem are escaped,
    because user text (route names, values) ends up in both and the error must
    stay printable as a single line.
    """

    key: str
    problem: str

    def __init__(self, key: str, problem: str) -> None:
        self.key = _one_line(key)
        self.problem = _one_line(problem)
        super().__init__(f"{self.key}: {self.problem}")

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


# --------------------------------------------------------------------------
# The configuration model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """The reverse-proxy listener; absent (``Config.server is None``) means no proxy."""

    host: str = "localhost"
    port: int = 5601  # 0: an ephemeral port
    not_found: str | None = None  # a subtree pattern, always ending in "/"
    connect_timeout: float = 10.0
    response_timeout: float = 600.0
    idle_timeout: float = 300.0
    shutdown_timeout: float = 30.0
    max_body_size: int | None = None
    workers: int = 1


@dataclass(frozen=True)
class Retention:
    """Delete the oldest captures once either limit is exceeded (None: no limit)."""

    max_age: float | None  # seconds
    max_bytes: int | None


@dataclass(frozen=True)
class LoggingConfig:
    """What is captured and where it goes."""

    enabled: bool = True
    console: bool = True
    log_dir: str = "logs"  # absolute after loading
    server_url: str = ""
    server_token: str = ""
    redact_headers: tuple[str, ...] = DEFAULT_REDACT_HEADERS  # lower-cased
    retention: Retention | None = None
    max_decoded_size: int = 256 * MiB  # decompression-bomb guard per decoded body
    buffer_size: int = 64 * MiB  # capture data queued for the writer


@dataclass(frozen=True)
class LoggingServerConfig:
    """The embedded logging Site."""

    host: str = "localhost"
    port: int = 5602  # 0 disables it
    token: str = ""


@dataclass(frozen=True)
class Destination:
    """A normalised upstream base URL; ``path`` always ends with ``/``."""

    url: str
    scheme: str  # "http" | "https"
    host: str  # IPv6 without brackets
    port: int  # explicit, or 80/443
    path: str
    origin: str  # scheme://host[:port], the port only if explicit in the URL
    exact_url: str  # the URL as written (path "/" if empty): the target of an exact pattern


@dataclass(frozen=True)
class RouteConfig:
    """One route with every default already resolved."""

    name: str
    pattern: str
    destination: Destination
    logging: bool
    strip_prefix: bool
    ca_file: str | None  # absolute, readable
    connect_timeout: float
    response_timeout: float
    idle_timeout: float


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    server: ServerConfig | None
    logging: LoggingConfig
    logging_server: LoggingServerConfig
    routes: tuple[RouteConfig, ...]
    path: str | None  # the config file that was read, if any


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


def load_config(
    path: str | None,
    *,
    env: Mapping[str, str] | None = None,
    host: str | None = None,
    port: int | None = None,
    require_file: bool = False,
) -> Config:
    """Read and validate a YAML config file.

    A missing file is only tolerated when ``require_file`` is false (the
    default path was not named by the user): the result is then all defaults,
    i.e. a logging server and no proxy unless a host/port override asks for one.
    """
    if env is None:
        env = os.environ
    data: object = None
    read_path: str | None = None
    if path is not None:
        abspath = os.path.abspath(path)
        try:
            with open(abspath, "rb") as f:
                raw = f.read()
        except FileNotFoundError as e:
            if require_file:
                raise ConfigError("config", f"cannot read {path}: {_os_reason(e)}") from None
        except (OSError, ValueError) as e:
            raise ConfigError("config", f"cannot read {path}: {_os_reason(e)}") from None
        else:
            read_path = abspath
            data = _load_yaml(raw)
    base_dir = os.path.dirname(read_path) if read_path else os.getcwd()
    return parse_config(data, env=env, base_dir=base_dir, host=host, port=port, path=read_path)


def parse_config(
    data: object,
    *,
    env: Mapping[str, str],
    base_dir: str,
    host: str | None = None,
    port: int | None = None,
    path: str | None = None,
) -> Config:
    """Validate an already-parsed YAML document (``None`` is an empty document).

    ``host``/``port`` are the command-line overrides; ``env`` supplies both
    ``${NAME}`` substitution and the ``LOGPROXY_*`` overrides; relative paths
    in the document are resolved against ``base_dir``.
    """
    ctx = _Ctx(env=env, base_dir=os.path.abspath(base_dir))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"expected a mapping at the top level, got {_show(data)}")
    _check_keys(data, "", _TOP_KEYS)
    logging = _parse_logging(data.get("logging"), ctx)
    server = _parse_server(data, ctx, host, port)
    logging_server = _parse_logging_server(data.get("logging_server"), ctx)
    routes = _parse_routes(data.get("routes"), ctx, server, logging)
    if server is not None and (routes or server.not_found):
        _check_conflicts(routes, server)
    return Config(
        server=server,
        logging=logging,
        logging_server=logging_server,
        routes=tuple(route for route, _ in routes),
        path=path,
    )


# --------------------------------------------------------------------------
# Public value parsers (also useful to the CLI: --since 1h)
# --------------------------------------------------------------------------

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d|w)")
_DURATION_FULL = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h|d|w))+")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(rf"({_NUMBER})\s*([a-z]*)")


def parse_duration(value: object, key: str) -> float:
    """Seconds from a number or a string like ``"90s"``, ``"30m"``, ``"1h30m"``, ``"2d"``.

    Negative, infinite and NaN values are rejected; zero is allowed (callers
    that need a positive value check it themselves).
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(_NUMBER, text):
            return _finite(float(text), key, value)
        if _DURATION_FULL.fullmatch(text):
            seconds = sum(
                float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text)
            )
            return _finite(seconds, key, value)
        raise ConfigError(
            key, f"expected a duration such as 90s, 30m, 1h or 2d (or seconds), got {_show(value)}"
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            raise ConfigError(key, f"duration too large: {_show(value)}") from None
        if seconds < 0:
            raise ConfigError(key, f"must not be negative, got {_show(value)}")
        return _finite(seconds, key, value)
    raise ConfigError(key, f"expected a duration (seconds, or e.g. 30m, 2d), got {_show(value)}")


def parse_size(value: object, key: str) -> int:
    """Bytes from an integer or a string like ``"50GB"``, ``"512MiB"``, ``"10MB"``, ``"1KB"``.

    KB/MB/GB/TB are decimal (SI), KiB/MiB/GiB/TiB binary; bare K/M/G/T are
    binary, as in nginx (``10m``).  Fractions are rounded down to whole bytes.
    """
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a size (bytes, or e.g. 10MB, 512MiB), got {_show(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(key, f"must not be negative, got {_show(value)}")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or not value.is_integer():
            raise ConfigError(key, f"expected a whole number of bytes, got {_show(value)}")
        return int(value)
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip().lower())
        if match and match.group(2) in _SIZE_UNITS:
            try:
                return int(Decimal(match.group(1)) * _SIZE_UNITS[match.group(2)])
            except InvalidOperation:  # pragma: no cover - the regex admits only decimals
                pass
        raise ConfigError(
            key, f"expected a size such as 512MiB, 10MB, 1KB or a byte count, got {_show(value)}"
        )
    raise ConfigError(key, f"expected a size (bytes, or e.g. 10MB, 512MiB), got {_show(value)}")


def parse_destination(value: str, key: str) -> Destination:
    """Validate an upstream URL and normalise it (path joined as a directory)."""
    if not value:
        raise ConfigError(key, "expected an http:// or https:// URL, got an empty string")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ConfigError(key, f"URL must not contain whitespace or control characters: {value!r}")
    try:
        parts = urlsplit(value)
        explicit_port = parts.port
        host = parts.hostname
    except ValueError as e:
        raise ConfigError(key, f"invalid URL {value!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(key, f"expected an http:// or https:// URL, got {value!r}")
    if not host:
        raise ConfigError(key, f"URL has no host: {value!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(key, "credentials in the URL are not supported (they would be logged)")
    if parts.query or "?" in value:
        raise ConfigError(key, f"URL must not have a query string: {value!r}")
    if parts.fragment or "#" in value:
        raise ConfigError(key, f"URL must not have a fragment: {value!r}")
    if explicit_port == 0:
        raise ConfigError(key, f"URL port must be between 1 and 65535: {value!r}")
    written_path = parts.path or "/"
    path = written_path if written_path.endswith("/") else written_path + "/"
    netloc_host = f"[{host}]" if ":" in host else host
    origin = f"{scheme}://{netloc_host}"
    if explicit_port is not None:
        origin += f":{explicit_port}"
    default_port = 443 if scheme == "https" else 80
    return Destination(
        url=origin + path,
        scheme=scheme,
        host=host,
        port=explicit_port if explicit_port is not None else default_port,
        path=path,
        origin=origin,
        exact_url=origin + written_path,
    )


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    env: Mapping[str, str]
    base_dir: str


Converter = Callable[[object, str, _Ctx], Any]
_TOP_KEYS = ("server", "logging", "logging_server", "routes")


def _parse_server(
    data: dict[Any, Any], ctx: _Ctx, host: str | None, port: int | None
) -> ServerConfig | None:
    """Flags beat LOGPROXY_* beat the file; an override alone creates the section."""
    overrides: dict[str, Any] = {}
    env_host = ctx.env.get("LOGPROXY_HOST", "")
    if env_host:
        overrides["host"] = _host(env_host, "LOGPROXY_HOST", ctx)
    env_port = ctx.env.get("LOGPROXY_PORT", "")
    if env_port:
        overrides["port"] = _port(env_port, "LOGPROXY_PORT", ctx)
    if host is not None:
        overrides["host"] = _host(host, "--host", ctx)
    if port is not None:
        overrides["port"] = _port(port, "--port", ctx)
    if "server" not in data and not overrides:
        return None
    values = _section(data.get("server"), "server", _SERVER_FIELDS, ctx)
    values.update(overrides)
    return ServerConfig(**values)


def _parse_logging(raw: object, ctx: _Ctx) -> LoggingConfig:
    values = _section(raw, "logging", _LOGGING_FIELDS, ctx)
    if "default" in values:
        if "enabled" in values:
            raise ConfigError("logging.default", "alias of logging.enabled; give only one")
        values["enabled"] = values.pop("default")
    env_dir = ctx.env.get("LOGPROXY_LOG_DIR", "")
    if env_dir:
        values["log_dir"] = _path(env_dir, "LOGPROXY_LOG_DIR", _Ctx(ctx.env, os.getcwd()))
    values.setdefault("log_dir", _path("logs", "logging.log_dir", ctx))
    return LoggingConfig(**values)


def _parse_logging_server(raw: object, ctx: _Ctx) -> LoggingServerConfig:
    cfg = LoggingServerConfig(**_section(raw, "logging_server", _LOGGING_SERVER_FIELDS, ctx))
    if cfg.port != 0 and not cfg.token and not _is_loopback(cfg.host):
        raise ConfigError(
            "logging_server.token",
            f"required when the logging server listens on {cfg.host} (not loopback)",
        )
    return cfg


def _parse_routes(
    raw: object, ctx: _Ctx, server: ServerConfig | None, logging: LoggingConfig
) -> list[tuple[RouteConfig, str]]:
    """Both forms; returns each route with the key path of its pattern (for conflicts)."""
    if raw is None:
        return []
    if not isinstance(raw, dict | list):
        raise ConfigError(
            "routes", f"expected a mapping of route names to routes (or a list), got {_show(raw)}"
        )
    if not raw:
        return []
    if server is None:
        raise ConfigError(
            "routes", "requires a server section (the reverse proxy is not configured)"
        )
    if isinstance(raw, dict):
        return [_mapping_route(name, item, ctx, server, logging) for name, item in raw.items()]
    routes: list[tuple[RouteConfig, str]] = []
    seen: dict[str, str] = {}
    for index, item in enumerate(raw, start=1):
        route, pattern_key = _list_route(index, item, ctx, server, logging)
        base = f"routes[{index}]"
        if route.name in seen:
            raise ConfigError(
                f"{base}.name", f"duplicate route name {route.name!r} (also {seen[route.name]})"
            )
        seen[route.name] = base
        routes.append((route, pattern_key))
    return routes


def _mapping_route(
    name: object, item: object, ctx: _Ctx, server: ServerConfig, logging: LoggingConfig
) -> tuple[RouteConfig, str]:
    if not isinstance(name, str):
        raise ConfigError(
            f"routes.{_show(name)}", f"route names must be strings, got {_show(name)}"
        )
    base = f"routes.{name}"
    _route_name(name, base, ctx)
    values = _section(
        item, base, _ROUTE_MAPPING_FIELDS, ctx, ("pattern", "destination"), {"source": "pattern"}
    )
    return _route(name, values, True, server, logging), f"{base}.pattern"


def _list_route(
    index: int, item: object, ctx: _Ctx, server: ServerConfig, logging: LoggingConfig
) -> tuple[RouteConfig, str]:
    base = f"routes[{index}]"
    values = _section(
        item, base, _ROUTE_LIST_FIELDS, ctx, ("source", "destination"), {"pattern": "source"}
    )
    values["pattern"] = values.pop("source")
    name = values.pop("name", None) or f"route{index}"
    return _route(name, values, False, server, logging), f"{base}.source"


def _route(
    name: str,
    values: dict[str, Any],
    strip_default: bool,
    server: ServerConfig,
    logging: LoggingConfig,
) -> RouteConfig:
    """Resolve a route's defaults from its form, the logging and the server sections."""
    return RouteConfig(
        name=name,
        pattern=values["pattern"],
        destination=values["destination"],
        logging=values.get("logging", logging.enabled),
        strip_prefix=values.get("strip_prefix", strip_default),
        ca_file=values.get("ca_file"),
        connect_timeout=values.get("connect_timeout", server.connect_timeout),
        response_timeout=values.get("response_timeout", server.response_timeout),
        idle_timeout=values.get("idle_timeout", server.idle_timeout),
    )


def _check_conflicts(routes: list[tuple[RouteConfig, str]], server: ServerConfig) -> None:
    """Reject identical or ambiguous patterns, the 404 subtree included, naming both keys."""
    from logproxy.proxy.routing import PatternConflict, RouteError, Router

    entries = [(key, route.pattern) for route, key in routes]
    if server.not_found:
        entries.append(("server.not_found", server.not_found))
    text = dict(entries)
    try:
        Router([(key, pattern, None) for key, pattern in entries])
    except PatternConflict as e:
        first, second = str(e.first), str(e.second)
        p1, p2 = text.get(first, "?"), text.get(second, "?")
        why = str(e).rsplit("): ", 1)[-1]  # routing's reason, after the names it gives
        raise ConfigError(second, f"{p2!r} conflicts with {first} {p1!r}: {why}") from None
    except RouteError as e:
        raise ConfigError("routes", str(e)) from None


# --------------------------------------------------------------------------
# Generic machinery
# --------------------------------------------------------------------------


def _section(
    raw: object,
    key: str,
    fields: Mapping[str, Converter],
    ctx: _Ctx,
    required: Sequence[str] = (),
    hints: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Convert the keys present in a mapping; null counts as absent (the default applies)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(key, f"expected a mapping, got {_show(raw)}")
    _check_keys(raw, key, fields, hints)
    missing = [name for name in required if raw.get(name) is None]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        names = ", ".join(repr(m) for m in missing)
        raise ConfigError(key, f"missing required key{plural} {names}")
    values: dict[str, Any] = {}
    for name, convert in fields.items():
        value = raw.get(name)
        if value is None:
            continue
        field_key = _join(key, name)
        values[name] = convert(_subst(value, field_key, ctx), field_key, ctx)
    return values


def _check_keys(
    raw: dict[Any, Any],
    key: str,
    known: Sequence[str] | Mapping[str, Any],
    hints: Mapping[str, str] | None = None,
) -> None:
    """Unknown keys are errors: a typo must never be silently ignored.

    ``hints`` maps a known mistake to the right key (``pattern`` in a
    list-form route is spelt ``source``) where string similarity would not.
    """
    names = list(known)
    for k in raw:
        if isinstance(k, str) and k in names:
            continue
        label = k if isinstance(k, str) else _show(k)
        close = [hints[label]] if hints and label in hints else []
        close = close or difflib.get_close_matches(label, names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(names)}"
        raise ConfigError(_join(key, label), f"unknown key ({hint})")


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _subst(value: object, key: str, ctx: _Ctx) -> object:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in a string (``:-`` as in the shell)."""
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = ctx.env.get(name)
        if default is not None:
            return found if found else default
        if found is None:
            raise ConfigError(key, f"environment variable {name} is not set")
        return found

    return _VAR.sub(replace, value)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


# --------------------------------------------------------------------------
# Converters: (value after substitution, key path, context) -> typed value
# --------------------------------------------------------------------------


def _str(value: object, key: str, ctx: _Ctx) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {_show(value)}")
    return value


def _nonempty(value: object, key: str, ctx: _Ctx) -> str:
    text = _str(value, key, ctx)
    if not text.strip():
        raise ConfigError(key, "must not be empty")
    return text


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _bool(value: object, key: str, ctx: _Ctx) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    raise ConfigError(key, f"expected a boolean (true or false), got {_show(value)}")


def _int(value: object, key: str, ctx: _Ctx) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            pass
    raise ConfigError(key, f"expected an integer, got {_show(value)}")


def _port(value: object, key: str, ctx: _Ctx) -> int:
    port = _int(value, key, ctx)
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"must be between 0 and 65535, got {_show(port)}")
    return port


#: More reactor processes than this is almost certainly a typo.
MAX_WORKERS = 256


def _workers(value: object, key: str, ctx: _Ctx) -> int:
    """A number of processes, or ``auto``: one per CPU core."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return max(
            1,
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1,
        )
    workers = _int(value, key, ctx)
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(
            key, f"must be between 1 and {MAX_WORKERS} (or auto), got {_show(workers)}"
        )
    return workers


def _host(value: object, key: str, ctx: _Ctx) -> str:
    host = _str(value, key, ctx).strip()
    if not host:
        raise ConfigError(key, "must not be empty (use 0.0.0.0 or :: for all interfaces)")
    return host


def _duration(value: object, key: str, ctx: _Ctx) -> float:
    """A timeout or age: positive (zero would mean 'fail at once')."""
    seconds = parse_duration(value, key)
    if seconds <= 0:
        raise ConfigError(key, f"must be greater than 0, got {_show(value)}")
    return seconds


def _size(value: object, key: str, ctx: _Ctx) -> int:
    size = parse_size(value, key)
    if size <= 0:
        raise ConfigError(key, f"must be greater than 0, got {_show(value)}")
    return size


def _path(value: object, key: str, ctx: _Ctx) -> str:
    """An absolute path; a relative one is taken from the config file's directory."""
    text = os.path.expanduser(_nonempty(value, key, ctx))
    if "\0" in text:
        raise ConfigError(key, "path must not contain a NUL character")
    return os.path.normpath(os.path.join(ctx.base_dir, text))


def _ca_file(value: object, key: str, ctx: _Ctx) -> str:
    """Checked now, so a typo fails at startup rather than on the first HTTPS request."""
    path = _path(value, key, ctx)
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block open()
        raise ConfigError(key, f"not a regular file: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {_os_reason(e)}") from None
    return path


def _not_found(value: object, key: str, ctx: _Ctx) -> str:
    """A subtree pattern: a missing trailing slash is added, as the Go tool does."""
    pattern = _nonempty(value, key, ctx)
    if not pattern.endswith("/"):
        pattern += "/"
    return _pattern(pattern, key, ctx)


def _pattern(value: object, key: str, ctx: _Ctx) -> str:
    from logproxy.proxy.routing import RouteError, parse_pattern

    pattern = _nonempty(value, key, ctx)
    try:
        parse_pattern(pattern)
    except RouteError as e:
        raise ConfigError(key, str(e)) from None
    return pattern


def _destination(value: object, key: str, ctx: _Ctx) -> Destination:
    return parse_destination(_str(value, key, ctx), key)


def _server_url(value: object, key: str, ctx: _Ctx) -> str:
    """Empty (write locally) or the base URL of a logging server."""
    url = _str(value, key, ctx).strip()
    if url:
        parse_destination(url, key)
    return url


def _route_name(value: object, key: str, ctx: _Ctx) -> str:
    name = _nonempty(value, key, ctx)
    if any(not ch.isprintable() for ch in name):
        raise ConfigError(key, f"route name must not contain control characters: {name!r}")
    return name


def _headers(value: object, key: str, ctx: _Ctx) -> tuple[str, ...]:
    """Replaces the default list; names are compared lower-cased."""
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of header names, got {_show(value)}")
    names: list[str] = []
    for index, item in enumerate(value, start=1):
        item_key = f"{key}[{index}]"
        name = _nonempty(_subst(item, item_key, ctx), item_key, ctx).strip().lower()
        if name not in names:
            names.append(name)
    return tuple(names)


def _retention(value: object, key: str, ctx: _Ctx) -> Retention | None:
    values = _section(value, key, _RETENTION_FIELDS, ctx)
    if not values:
        return None
    return Retention(max_age=values.get("max_age"), max_bytes=values.get("max_bytes"))


# --------------------------------------------------------------------------
# Schema tables
# --------------------------------------------------------------------------

_SERVER_FIELDS: dict[str, Converter] = {
    "host": _host,
    "port": _port,
    "not_found": _not_found,
    "connect_timeout": _duration,
    "response_timeout": _duration,
    "idle_timeout": _duration,
    "shutdown_timeout": _duration,
    "max_body_size": _size,
    "workers": _workers,
}
_RETENTION_FIELDS: dict[str, Converter] = {"max_age": _duration, "max_bytes": _size}
_LOGGING_FIELDS: dict[str, Converter] = {
    "enabled": _bool,
    "default": _bool,
    "console": _bool,
    "log_dir": _path,
    "server_url": _server_url,
    "server_token": _str,
    "redact_headers": _headers,
    "retention": _retention,
    "max_decoded_size": _size,
    "buffer_size": _size,
}
_LOGGING_SERVER_FIELDS: dict[str, Converter] = {"host": _host, "port": _port, "token": _str}
_ROUTE_OPTIONAL_FIELDS: dict[str, Converter] = {
    "logging": _bool,
    "strip_prefix": _bool,
    "ca_file": _ca_file,
    "connect_timeout": _duration,
    "response_timeout": _duration,
    "idle_timeout": _duration,
}
_ROUTE_MAPPING_FIELDS: dict[str, Converter] = {
    "pattern": _pattern,
    "destination": _destination,
    **_ROUTE_OPTIONAL_FIELDS,
}
_ROUTE_LIST_FIELDS: dict[str, Converter] = {
    "name": _route_name,
    "source": _pattern,
    "destination": _destination,
    **_ROUTE_OPTIONAL_FIELDS,
}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]  # no stubs installed
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    line = key_node.start_mark.line + 1
                    raise ConfigError("config", f"duplicate key {key_node.value!r} at line {line}")
                seen.add(ident)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(raw: bytes) -> object:
    try:
        return yaml.load(raw, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = e.problem or e.context or "syntax error"
        raise ConfigError("config", f"invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError("config", f"invalid YAML: {e}") from None
    except (ValueError, RecursionError) as e:  # e.g. an impossible date: 2024-02-30
        raise ConfigError("config", f"invalid YAML: {e}") from None


def _is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _finite(seconds: float, key: str, original: object) -> float:
    if not math.isfinite(seconds):
        raise ConfigError(key, f"duration too large: {_show(original)}")
    return seconds


def _show(value: object) -> str:
    """A short, one-line rendering of a user value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a very large integer"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple | set):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _os_reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _one_line(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
