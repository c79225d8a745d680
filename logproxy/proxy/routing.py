"""Request routing with Go 1.22 ``http.ServeMux`` semantics, minus named wildcards.

Pure and stdlib-only so it can be tested exhaustively without a reactor. Patterns are
``[METHOD ][HOST]/PATH``; a path ending in ``/`` is a subtree, ``/x/{$}`` matches only
``/x/``. Of two matching patterns the more specific wins; patterns where neither is
more specific are rejected up front, so matching never has to break ties.

Request paths are cleaned before matching (``.``, ``..`` and empty segments, also when
percent-encoded, give a 301 to the clean path). Hence the remainder of a subtree
match can never climb out of the matched prefix.
"""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import quote, unquote_to_bytes

__all__ = [
    "Matched",
    "MethodNotAllowed",
    "NotFound",
    "Pattern",
    "PatternConflict",
    "Redirect",
    "RouteError",
    "Router",
    "parse_pattern",
]

T = TypeVar("T")

WILDCARD_MESSAGE = "named wildcards are not supported"

# RFC 9110 section 5.6.2 token characters (what Go accepts as a method).
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
# Lower-cased reg-name (RFC 3986, without percent-escapes) or a bracketed IP literal.
_HOST_RE = re.compile(r"[a-z0-9._~!$&'()*+,;=-]+|\[[0-9a-f:.]+\]")
# RFC 3986 pchar minus "%": what a re-encoded clean path may leave unescaped.
_PATH_SAFE = "/!$&'()*+,;=:@"
_SPACE_TAB = " \t"


class RouteError(ValueError):
    """Invalid pattern or conflicting patterns; ``str(e)`` is one line for the user."""


class PatternConflict(RouteError):
    """Two routes' patterns overlap and neither is more specific (or they are identical)."""

    first: str
    second: str

    def __init__(self, first: str, second: str, message: str) -> None:
        super().__init__(message)
        self.first = first
        self.second = second


@dataclass(frozen=True, slots=True)
class Pattern:
    """A parsed pattern; ``path`` is the literal path (``/test/`` for ``/test/{$}``)."""

    text: str
    method: str | None
    host: str | None
    path: str
    subtree: bool

    def matches_method(self, method: str) -> bool:
        """Whether a request with ``method`` is in this pattern's method set (GET has HEAD)."""
        if self.method is None or self.method == method:
            return True
        return self.method == "GET" and method == "HEAD"


@dataclass(frozen=True, slots=True)
class Matched(Generic[T]):
    """A route matched. ``prefix_raw + remainder_raw`` is the raw request path."""

    route: T
    pattern: Pattern
    prefix_raw: str
    remainder_raw: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer 301 with this ``Location`` (path cleaning or a trailing-slash redirect)."""

    location: str


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    """Answer 405; ``allow`` is the sorted ``Allow`` header list."""

    allow: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotFound:
    """No pattern matches the request."""


# --------------------------------------------------------------------------- parsing


def parse_pattern(text: str) -> Pattern:
    """Parse ``[METHOD ][HOST]/PATH``; raises RouteError with a one-line reason."""
    spec = text.strip()
    if not spec:
        raise RouteError("empty pattern")
    method, rest = _split_method(spec)
    host, path = _split_host(rest)
    literal, subtree = _parse_path(path)
    return Pattern(text=text, method=method, host=host, path=literal, subtree=subtree)


def _split_method(spec: str) -> tuple[str | None, str]:
    """Split off the method, which is everything before the first space or tab."""
    cut = next((i for i, ch in enumerate(spec) if ch in _SPACE_TAB), -1)
    if cut < 0:
        return None, spec
    method = spec[:cut]
    if not set(method) <= _TOKEN_CHARS:
        raise RouteError(f"invalid method {method!r} (expected [METHOD ][HOST]/PATH)")
    return method, spec[cut:].lstrip(_SPACE_TAB)


def _split_host(rest: str) -> tuple[str | None, str]:
    """Split ``[HOST]/PATH``; the host is lower-cased because hosts are case-insensitive."""
    slash = rest.find("/")
    if slash < 0:
        raise RouteError("the path must start with '/' (expected [METHOD ][HOST]/PATH)")
    raw_host, path = rest[:slash], rest[slash:]
    if not raw_host:
        return None, path
    if "{" in raw_host or "}" in raw_host:
        raise RouteError("host contains '{' (missing initial '/'?)")
    host, port = _split_port(raw_host.lower())
    if port is not None:
        raise RouteError(f"host {raw_host!r} must not include a port (ports are ignored)")
    if not _HOST_RE.fullmatch(host):
        raise RouteError(f"invalid host {raw_host!r}")
    return host, path


def _parse_path(path: str) -> tuple[str, bool]:
    """Validate the path; returns the literal path and whether it is a subtree."""
    if any(ch <= " " or ch == "\x7f" for ch in path):
        raise RouteError("the path must not contain spaces or control characters")
    if "?" in path or "#" in path:
        raise RouteError("the path must not contain '?' or '#'")
    segments = path[1:].split("/")
    for index, segment in enumerate(segments):
        if "{" not in segment and "}" not in segment:
            continue
        if segment != "{$}":
            raise RouteError(WILDCARD_MESSAGE)
        if index != len(segments) - 1:
            raise RouteError("{$} is only allowed at the end of the path")
    if segments[-1] == "{$}":
        literal, subtree = path[: -len("{$}")], False
    else:
        literal, subtree = path, path.endswith("/")
    decoded = unquote_to_bytes(_to_bytes(literal))
    cleaned = _clean(decoded)
    if cleaned != decoded:
        suggestion = quote(cleaned, safe=_PATH_SAFE)
        raise RouteError(f"path {literal!r} is not clean and can never match (use {suggestion!r})")
    return literal, subtree


def _split_port(host: str) -> tuple[str, str | None]:
    """Split ``host[:port]`` (also ``[v6]:port``); the port is None when absent."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        tail = host[end + 1 :]
        return host[: end + 1], (tail[1:] if tail.startswith(":") else None)
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, port
    return host, None


# --------------------------------------------------------------------------- paths


def _to_bytes(text: str) -> bytes:
    """UTF-8 bytes of ``text`` that never fail, even for lone surrogates."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _unquote(segment: bytes) -> bytes:
    """Percent-decode; invalid escapes stay literal (as in Go)."""
    return unquote_to_bytes(segment) if b"%" in segment else segment


def _clean(path: bytes) -> bytes:
    """Go's ``cleanPath``: resolve ``.``/``..``, drop empty segments, keep a trailing slash."""
    if b"/." not in path and b"//" not in path:
        return path
    kept: list[bytes] = []
    for segment in path.split(b"/")[1:]:
        if segment in (b"", b"."):
            continue
        if segment == b"..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    cleaned = b"/" + b"/".join(kept)
    if path.endswith(b"/") and cleaned != b"/":
        cleaned += b"/"
    return cleaned


def _escape_unsafe(raw: bytes, extra: bytes) -> str:
    """Percent-encode only bytes that may not appear in a Location header as-is.

    The client's own encoding is kept, so the redirected request reaches the
    upstream byte-exactly.
    """
    return "".join(
        f"%{byte:02X}" if byte <= 0x20 or byte >= 0x7F or byte in extra else chr(byte)
        for byte in raw
    )


def _query_suffix(query: str | None) -> str:
    """``?query`` for a redirect, or nothing when the request had no query."""
    if not query:
        return ""
    return "?" + _escape_unsafe(_to_bytes(query), b"#")


def _request_keys(raw: bytes) -> list[bytes]:
    """Decoded segments of a raw path; ``/a/`` gives ``[b"a", b""]``, ``/`` gives ``[b""]``.

    Each segment is decoded on its own, so ``%2F`` does not split a segment.
    """
    return [_unquote(segment) for segment in raw[1:].split(b"/")]


def _pattern_keys(pattern: Pattern) -> tuple[bytes, ...]:
    """Decoded segments of a pattern; a subtree's trailing slash is not a segment."""
    body = pattern.path[1:]
    if pattern.subtree:
        body = body[:-1]
        if not body:
            return ()
    return tuple(_unquote(_to_bytes(segment)) for segment in body.split("/"))


def _request_host(host: str | None) -> str | None:
    """The Host header as a key: lower-cased, port removed, None when empty."""
    if not host:
        return None
    name, _port = _split_port(host.strip().lower())
    return name or None


def _prefix_end(raw_path: str, depth: int) -> int:
    """Index just past the ``/`` that follows the first ``depth`` raw segments."""
    position = 0
    for _ in range(depth):
        position = raw_path.index("/", position + 1)
    return position + 1


# --------------------------------------------------------------------------- conflicts


class _Relation(enum.Enum):
    """How the request sets of two patterns relate in one dimension."""

    EQUAL = "equal"
    GENERAL = "more general"
    SPECIFIC = "more specific"
    DISJOINT = "disjoint"


def _method_relation(first: str | None, second: str | None) -> _Relation:
    """Methods: None is every method, GET includes HEAD, others are disjoint."""
    if first == second:
        return _Relation.EQUAL
    if first is None or (first == "GET" and second == "HEAD"):
        return _Relation.GENERAL
    if second is None or (first == "HEAD" and second == "GET"):
        return _Relation.SPECIFIC
    return _Relation.DISJOINT


def _contains(outer: tuple[bytes, ...], inner: tuple[bytes, ...], strict: bool) -> bool:
    """Whether subtree ``outer`` covers ``inner`` (a strict one needs a further segment)."""
    longer = len(inner) > len(outer) if strict else len(inner) >= len(outer)
    return longer and inner[: len(outer)] == outer


def _path_relation(first: _Entry[T], second: _Entry[T]) -> _Relation:
    """Paths: an exact path is one request path, a subtree is a set of them."""
    a, b = first.keys, second.keys
    a_tree, b_tree = first.pattern.subtree, second.pattern.subtree
    if a_tree == b_tree and a == b:
        return _Relation.EQUAL
    if a_tree and _contains(a, b, strict=not b_tree):
        return _Relation.GENERAL
    if b_tree and _contains(b, a, strict=not a_tree):
        return _Relation.SPECIFIC
    return _Relation.DISJOINT


def _check_conflict(earlier: _Entry[T], later: _Entry[T]) -> None:
    """Raise PatternConflict when no request could tell which of the two should win."""
    if earlier.pattern.host != later.pattern.host:
        return
    methods = _method_relation(earlier.pattern.method, later.pattern.method)
    if methods is _Relation.DISJOINT:
        return
    paths = _path_relation(earlier, later)
    if paths is _Relation.DISJOINT:
        return
    if methods is _Relation.EQUAL and paths is _Relation.EQUAL:
        reason = "both match exactly the same requests"
    elif {methods, paths} == {_Relation.GENERAL, _Relation.SPECIFIC}:
        reason = "both match some requests and neither is more specific"
    else:
        return
    raise PatternConflict(
        earlier.name,
        later.name,
        f'pattern "{earlier.pattern.text}" (route {earlier.name}) conflicts with '
        f'"{later.pattern.text}" (route {later.name}): {reason}',
    )


# --------------------------------------------------------------------------- router


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    """A registered route with its pattern's decoded segments."""

    name: str
    pattern: Pattern
    route: T
    keys: tuple[bytes, ...]


class _Node(Generic[T]):
    """A trie node for one path prefix (one decoded segment per level)."""

    __slots__ = ("children", "exact", "subtree")

    def __init__(self) -> None:
        self.children: dict[bytes, _Node[T]] = {}
        self.exact: _Entry[T] | None = None
        self.subtree: _Entry[T] | None = None


# An entry with the number of request segments its pattern consumed.
_Hit = tuple[_Entry[T], int]


def _walk(node: _Node[T], keys: Sequence[bytes]) -> _Hit[T] | None:
    """The most specific entry under ``node`` for the request segments ``keys``.

    An exact entry must consume all segments; a subtree entry at depth d needs at
    least one more segment (possibly the empty one after a trailing slash). The
    deepest candidate is the most specific, as in Go's routing tree.
    """
    best: _Hit[T] | None = None
    for depth, key in enumerate(keys):
        if node.subtree is not None:
            best = (node.subtree, depth)
        child = node.children.get(key)
        if child is None:
            return best
        node = child
    if node.exact is not None:
        return (node.exact, len(keys))
    return best


def _is_exact(hit: _Hit[T], keys: Sequence[bytes]) -> bool:
    """Go's ``exactMatch``: the pattern matched the path itself, not something below it."""
    entry, depth = hit
    if not entry.pattern.subtree:
        return True
    return keys[-1] == b"" and depth == len(keys) - 1


class Router(Generic[T]):
    """Maps (method, host, path) to a route, built once and matched per request."""

    def __init__(self, routes: Sequence[tuple[str, str, T]]) -> None:
        """Parse and check all patterns; raises RouteError or PatternConflict."""
        # host (None: any host) -> method (None: any method) -> path trie
        self._trees: dict[str | None, dict[str | None, _Node[T]]] = {}
        entries: list[_Entry[T]] = []
        for name, text, route in routes:
            try:
                pattern = parse_pattern(text)
            except RouteError as error:
                raise RouteError(f"route {name}: {error}") from None
            entry = _Entry(name, pattern, route, _pattern_keys(pattern))
            for earlier in entries:
                _check_conflict(earlier, entry)
            entries.append(entry)
            self._insert(entry)

    def _insert(self, entry: _Entry[T]) -> None:
        methods = self._trees.setdefault(entry.pattern.host, {})
        node = methods.setdefault(entry.pattern.method, _Node())
        for key in entry.keys:
            node = node.children.setdefault(key, _Node())
        if entry.pattern.subtree:
            node.subtree = entry
        else:
            node.exact = entry

    def match(
        self, method: str, host: str | None, raw_path: str, query: str | None = None
    ) -> Matched[T] | Redirect | MethodNotAllowed | NotFound:
        """Route one request; never raises.

        ``raw_path`` is the path as received (percent-encoded, no query); decode the
        request bytes with ``utf-8`` and ``surrogateescape`` so stray bytes round-trip.
        A path not starting with ``/`` (``*``, absolute form) is NotFound.
        """
        if not raw_path.startswith("/"):
            return NotFound()
        host_key = _request_host(host)
        raw = _to_bytes(raw_path)
        decoded = _unquote(raw)
        cleaned = _clean(decoded)
        if cleaned != decoded:
            location = quote(cleaned, safe=_PATH_SAFE)
            keys = _request_keys(location.encode("ascii"))
            if self._slash_redirect(method, host_key, keys, self._find(method, host_key, keys)):
                location += "/"
            return Redirect(location + _query_suffix(query))
        keys = _request_keys(raw)
        hit = self._find(method, host_key, keys)
        if self._slash_redirect(method, host_key, keys, hit):
            return Redirect(_escape_unsafe(raw, b"?#") + "/" + _query_suffix(query))
        if hit is not None:
            return _matched(hit, raw_path)
        allow = self._allowed_methods(host_key, keys)
        return MethodNotAllowed(allow) if allow else NotFound()

    def _find(self, method: str, host: str | None, keys: Sequence[bytes]) -> _Hit[T] | None:
        """Host patterns first, then host-less ones; per host, the method before any-method."""
        for host_key in (host, None) if host is not None else (None,):
            methods = self._trees.get(host_key)
            if methods is None:
                continue
            candidates = (method, "GET", None) if method == "HEAD" else (method, None)
            for method_key in candidates:
                node = methods.get(method_key)
                hit = _walk(node, keys) if node is not None else None
                if hit is not None:
                    return hit
        return None

    def _slash_redirect(
        self, method: str, host: str | None, keys: Sequence[bytes], current: _Hit[T] | None
    ) -> bool:
        """Whether Go would redirect: the path lacks a slash that makes it match exactly.

        ``current`` is the path's own match; Go tries the slash only if it is not exact,
        so a match by a wider subtree such as ``/`` does not prevent the redirect.
        """
        if current is not None and _is_exact(current, keys):
            return False
        if keys[-1] == b"":
            return False
        slashed = [*keys, b""]
        hit = self._find(method, host, slashed)
        return hit is not None and _is_exact(hit, slashed)

    def _allowed_methods(self, host: str | None, keys: Sequence[bytes]) -> tuple[str, ...]:
        """Methods of patterns matching the path (or path + "/"), as Go's ``Allow``."""
        probes = [keys] if keys[-1] == b"" else [keys, [*keys, b""]]
        allowed: set[str] = set()
        for host_key in (host, None) if host is not None else (None,):
            for method_key, node in self._trees.get(host_key, {}).items():
                if method_key is not None and any(_walk(node, probe) for probe in probes):
                    allowed.add(method_key)
        if "GET" in allowed:
            allowed.add("HEAD")
        return tuple(sorted(allowed))


def _matched(hit: _Hit[T], raw_path: str) -> Matched[T]:
    """Build the result, splitting the raw path after the subtree's prefix."""
    entry, depth = hit
    if not entry.pattern.subtree:
        return Matched(entry.route, entry.pattern, raw_path, "")
    end = _prefix_end(raw_path, depth)
    return Matched(entry.route, entry.pattern, raw_path[:end], raw_path[end:])
