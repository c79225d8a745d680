"""Routing: Go 1.22 ServeMux semantics without named wildcards (logproxy.proxy.routing)."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logproxy.proxy.routing import (
    Matched,
    MethodNotAllowed,
    NotFound,
    Pattern,
    PatternConflict,
    Redirect,
    RouteError,
    Router,
    parse_pattern,
)

WILDCARDS = "named wildcards are not supported"


def router(*patterns: str) -> Router[str]:
    """A router whose route names and payloads are the pattern texts."""
    return Router([(text, text, text) for text in patterns])


def route_of(result: object) -> str:
    """The payload of a Matched result (fails the test otherwise)."""
    assert isinstance(result, Matched), result
    route: str = result.route
    return route


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "method", "host", "path", "subtree"),
    [
        ("/", None, None, "/", True),
        ("/index.html", None, None, "/index.html", False),
        ("GET /static/", "GET", None, "/static/", True),
        ("example.com/", None, "example.com", "/", True),
        ("example.com/{$}", None, "example.com", "/", False),
        ("/test/{$}", None, None, "/test/", False),
        ("/{$}", None, None, "/", False),
        ("POST\t /v1/chat", "POST", None, "/v1/chat", False),
        ("GET  Example.COM/x/", "GET", "example.com", "/x/", True),
        ("[::1]/x", None, "[::1]", "/x", False),
        ("  DELETE /a%20b  ", "DELETE", None, "/a%20b", False),
        ("M-SEARCH /", "M-SEARCH", None, "/", True),
        ("/.well-known/x", None, None, "/.well-known/x", False),
    ],
)
def test_parse_pattern(
    text: str, method: str | None, host: str | None, path: str, subtree: bool
) -> None:
    assert parse_pattern(text) == Pattern(text, method, host, path, subtree)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty pattern"),
        ("  \t", "empty pattern"),
        ("/x/{id}", WILDCARDS),
        ("/b/{bucket}/o/{objectname...}", WILDCARDS),
        ("/{path...}", WILDCARDS),
        ("GET /x/{id}/", WILDCARDS),
        ("/x/{", WILDCARDS),
        ("/x/}", WILDCARDS),
        ("/x/a{b}", WILDCARDS),
        ("/x/{$", WILDCARDS),
        ("/{}", WILDCARDS),
        ("/x{$}", WILDCARDS),
        ("/a/{$}/b", "{$} is only allowed at the end of the path"),
        ("/a/{$}/", "{$} is only allowed at the end of the path"),
        ("x", "the path must start with '/'"),
        ("GET x", "the path must start with '/'"),
        ("GET", "the path must start with '/'"),
        ("G(T /x", "invalid method 'G(T'"),
        ("GET/x /y", "invalid method 'GET/x'"),
        ("/a b", "invalid method '/a'"),
        ("{host}/x", "host contains '{'"),
        ("example.com:8080/x", "must not include a port"),
        ("[::1]:80/x", "must not include a port"),
        ("a@b/x", "invalid host 'a@b'"),
        ("GET /a/../b", "is not clean"),
        ("/a//b", "is not clean"),
        ("/a/./b/", "is not clean"),
        ("/a/%2e%2e/b", "is not clean"),
        ("/a/..", "is not clean"),
        ("/x?y=1", "must not contain '?' or '#'"),
        ("/x#top", "must not contain '?' or '#'"),
        ("/x\x7f", "control characters"),
    ],
)
def test_parse_pattern_rejects(text: str, message: str) -> None:
    with pytest.raises(RouteError) as info:
        parse_pattern(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_router_names_route_of_bad_pattern() -> None:
    with pytest.raises(RouteError) as info:
        Router([("ok", "/ok/", 1), ("lmstudio", "/lmstudio/{rest...}", 2)])
    assert str(info.value) == "route lmstudio: named wildcards are not supported"
    assert not isinstance(info.value, PatternConflict)


@pytest.mark.parametrize(
    ("pattern", "method", "expected"),
    [
        ("GET /x", "GET", True),
        ("GET /x", "HEAD", True),
        ("GET /x", "POST", False),
        ("HEAD /x", "GET", False),
        ("/x", "PATCH", True),
        ("POST /x", "POST", True),
        ("POST /x", "post", False),
    ],
)
def test_matches_method(pattern: str, method: str, expected: bool) -> None:
    assert parse_pattern(pattern).matches_method(method) is expected


# --------------------------------------------------------------------------- conflicts


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        ("GET /api/", "/api/v1/", "neither is more specific"),
        ("/api/v1/", "GET /api/", "neither is more specific"),
        ("POST /api/", "/api/v1/", "neither is more specific"),
        ("GET /", "/index.html", "neither is more specific"),  # the ServeMux docs' example
        ("HEAD /x/", "GET /x/y/", "neither is more specific"),
        ("/x", "/x", "the same requests"),
        ("GET /x", "GET /x", "the same requests"),
        ("GET  /x", "GET /x", "the same requests"),
        ("/x", "/%78", "the same requests"),
        ("/", "/", "the same requests"),
        ("example.com/x", "Example.COM/x", "the same requests"),
        ("GET a.b/", "a.b/x/", "neither is more specific"),  # same host compares as usual
    ],
)
def test_conflicts(first: str, second: str, reason: str) -> None:
    with pytest.raises(PatternConflict) as info:
        Router([("one", "other.example/", 0), ("a", first, 1), ("b", second, 2)])
    assert (info.value.first, info.value.second) == ("a", "b")
    message = str(info.value)
    assert message.startswith(f'pattern "{first}" (route a) conflicts with "{second}" (route b): ')
    assert reason in message


def test_conflict_message_matches_contract() -> None:
    with pytest.raises(PatternConflict) as info:
        Router([("a", "GET /api/", 1), ("b", "/api/v1/", 2)])
    assert str(info.value) == (
        'pattern "GET /api/" (route a) conflicts with "/api/v1/" (route b): '
        "both match some requests and neither is more specific"
    )
    assert isinstance(info.value, RouteError)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/api/", "/api/v1/"),  # nested subtrees
        ("POST /api/", "/api/"),  # method more specific, same path
        ("GET /api/", "POST /api/v1/"),  # disjoint methods
        ("GET /x", "POST /x"),
        ("GET /x", "HEAD /x"),  # HEAD is narrower than GET
        ("GET /x/", "HEAD /x/y/"),  # more specific in both dimensions
        ("example.com/x", "/x"),  # host vs no host never conflict
        ("example.com/", "GET /api/"),
        ("a.example/", "b.example/"),  # different hosts
        ("/x", "/x/"),  # exact vs subtree of the same name: disjoint
        ("/x/{$}", "/x/"),  # {$} is inside the subtree
        ("/x/{$}", "/x"),
        ("/images/", "/images/thumbnails/"),
        ("/", "/index.html"),
        ("/a%2Fb", "/a/b"),  # one segment vs two
    ],
)
def test_no_conflict(first: str, second: str) -> None:
    Router([("a", first, 1), ("b", second, 2)])
    Router([("b", second, 2), ("a", first, 1)])


# --------------------------------------------------------------------------- matching

DOCS = router(
    "/index.html",
    "GET /static/",
    "example.com/",
    "example.com/{$}",
    "/images/",
    "/images/thumbnails/",
    "/lmstudio/",
    "/exact",
    "/test/{$}",
    "POST /api/",
    "/api/",
    "POST /api/v1/",
    "GET /only-get",
    "HEAD /head",
    "GET /head",
    "/",
)


@pytest.mark.parametrize(
    ("method", "host", "path", "expected"),
    [
        ("GET", None, "/index.html", "/index.html"),
        ("DELETE", "other.org", "/index.html", "/index.html"),
        ("GET", None, "/index.html/x", "/"),
        ("GET", None, "/static/", "GET /static/"),
        ("GET", None, "/static/css/a.css", "GET /static/"),
        ("HEAD", None, "/static/a", "GET /static/"),
        ("POST", None, "/static/a", "/"),
        ("GET", "example.com", "/anything", "example.com/"),
        ("GET", "EXAMPLE.com:8443", "/index.html", "example.com/"),  # host beats no host
        ("GET", "example.com", "/", "example.com/{$}"),
        ("GET", "example.com:80", "/", "example.com/{$}"),
        ("GET", "example.org", "/", "/"),
        ("GET", None, "/images/a.png", "/images/"),
        ("GET", None, "/images/thumbnails/a.png", "/images/thumbnails/"),
        ("GET", None, "/images/thumbnails/", "/images/thumbnails/"),
        ("GET", None, "/images/thumbnailsx", "/images/"),
        ("GET", None, "/lmstudio/", "/lmstudio/"),
        ("POST", None, "/lmstudio/v1/chat/completions", "/lmstudio/"),
        ("GET", None, "/exact", "/exact"),
        ("GET", None, "/exact/", "/"),
        ("GET", None, "/exactly", "/"),
        ("GET", None, "/test/", "/test/{$}"),
        ("GET", None, "/test/x", "/"),
        ("POST", None, "/api/x", "POST /api/"),
        ("GET", None, "/api/x", "/api/"),
        ("POST", None, "/api/v1/x", "POST /api/v1/"),
        ("POST", None, "/api/v2/x", "POST /api/"),
        ("GET", None, "/api/v1/x", "/api/"),
        ("GET", None, "/api/v1", "/api/"),
        ("GET", None, "/only-get", "GET /only-get"),
        ("HEAD", None, "/only-get", "GET /only-get"),
        ("POST", None, "/only-get", "/"),  # "/" matches every method
        ("HEAD", None, "/head", "HEAD /head"),
        ("GET", None, "/head", "GET /head"),
        ("GET", None, "/", "/"),
        ("GET", None, "/%69ndex.html", "/index.html"),  # segments are decoded
        ("GET", None, "/api%2Fv1/x", "/"),  # %2F does not split a segment
        ("GET", "", "/static/x", "GET /static/"),
        ("GET", "[::1]:5601", "/static/x", "GET /static/"),
    ],
)
def test_docs_table(method: str, host: str | None, path: str, expected: str) -> None:
    assert route_of(DOCS.match(method, host, path)) == expected


METHOD_ROUTES = router("GET /x", "PUT /x", "GET /y/", "DELETE /z", "HEAD /h", "PATCH /exact")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/x", ("GET", "HEAD", "PUT")),
        ("PUT", "/y/a", ("GET", "HEAD")),
        ("POST", "/y", ("GET", "HEAD")),  # path + "/" counts, as in Go
        ("GET", "/z", ("DELETE",)),
        ("GET", "/h", ("HEAD",)),
        ("POST", "/exact", ("PATCH",)),
    ],
)
def test_method_not_allowed(method: str, path: str, allow: tuple[str, ...]) -> None:
    assert METHOD_ROUTES.match(method, None, path) == MethodNotAllowed(allow)


def test_method_not_allowed_counts_the_slashed_path() -> None:
    routes = router("GET /x", "PUT /x", "POST /x/")
    assert routes.match("DELETE", None, "/x") == MethodNotAllowed(("GET", "HEAD", "POST", "PUT"))


def test_method_not_allowed_considers_host_and_hostless() -> None:
    routes = router("GET example.com/x", "PUT /x")
    assert routes.match("POST", "example.com", "/x") == MethodNotAllowed(("GET", "HEAD", "PUT"))
    assert routes.match("POST", "other", "/x") == MethodNotAllowed(("PUT",))
    assert route_of(routes.match("PUT", "example.com", "/x")) == "PUT /x"


@pytest.mark.parametrize(
    ("method", "host", "path"),
    [
        ("GET", None, "/nothing"),
        ("GET", None, "/"),
        ("GET", "example.com", "/other/"),
        ("GET", None, "*"),
        ("OPTIONS", None, "*"),
        ("GET", None, "http://example.com/x"),
        ("GET", None, ""),
    ],
)
def test_not_found(method: str, host: str | None, path: str) -> None:
    routes = router("GET /x", "example.com/x/")
    assert routes.match(method, host, path) == NotFound()


# --------------------------------------------------------------------------- trailing slash


@pytest.mark.parametrize(
    ("patterns", "method", "path", "query", "location"),
    [
        (("/lmstudio/", "/"), "GET", "/lmstudio", None, "/lmstudio/"),
        (("/lmstudio/",), "POST", "/lmstudio", "a=1&b=%20", "/lmstudio/?a=1&b=%20"),
        (("/lmstudio/",), "GET", "/lm%73tudio", "x", "/lm%73tudio/?x"),  # raw kept
        (("/a/", "/a/b/{$}"), "GET", "/a/b", None, "/a/b/"),
        (("/a/b/",), "GET", "/a/b", "", "/a/b/"),
        (("GET /g/",), "HEAD", "/g", None, "/g/"),
        (("/x%20y/",), "GET", "/x y", None, "/x%20y/"),  # unsafe bytes are escaped
    ],
)
def test_trailing_slash_redirect(
    patterns: tuple[str, ...], method: str, path: str, query: str | None, location: str
) -> None:
    assert router(*patterns).match(method, None, path, query) == Redirect(location)


@pytest.mark.parametrize(
    ("patterns", "method", "path", "expected"),
    [
        (("/lmstudio/", "/lmstudio"), "GET", "/lmstudio", "/lmstudio"),
        (("/a/",), "GET", "/a/b", "/a/"),  # /a/b/ is not an exact match of /a/
        (("/a/", "/"), "GET", "/a/b", "/a/"),
        (("GET /g/", "/"), "POST", "/g", "/"),  # POST /g/ would not match either
        (("/lmstudio/", "/"), "GET", "/lmstudiox", "/"),
    ],
)
def test_no_trailing_slash_redirect(
    patterns: tuple[str, ...], method: str, path: str, expected: str
) -> None:
    assert route_of(router(*patterns).match(method, None, path)) == expected


def test_trailing_slash_redirect_respects_host() -> None:
    routes = router("example.com/h/", "/")
    assert routes.match("GET", "example.com:1", "/h") == Redirect("/h/")
    assert route_of(routes.match("GET", "other.com", "/h")) == "/"


def test_trailing_slash_redirect_is_skipped_for_wrong_method() -> None:
    routes = router("GET /g/")
    assert routes.match("POST", None, "/g") == MethodNotAllowed(("GET", "HEAD"))


# --------------------------------------------------------------------------- cleaning


@pytest.mark.parametrize(
    ("path", "query", "location"),
    [
        ("/a/../b", None, "/b"),
        ("/a/./b", None, "/a/b"),
        ("//a", None, "/a"),
        ("/a//b/", None, "/a/b/"),
        ("/a/%2e%2e/b", None, "/b"),
        ("/a/%2E/b", None, "/a/b"),
        ("/a/.%2E/b", None, "/b"),
        ("/lmstudio/..%2f..%2fadmin", None, "/admin"),
        ("/lmstudio/..%2F..%2Fadmin", "k=v", "/admin?k=v"),
        ("/lmstudio/%2e%2e%2f%2e%2e%2fadmin", None, "/admin"),
        ("/lmstudio/x%2F..%2F..%2Fadmin", None, "/admin"),
        ("/..", None, "/"),
        ("/../../etc/passwd", None, "/etc/passwd"),
        ("/a/..", None, "/"),
        ("/a/../", None, "/"),
        ("/a/b/..", None, "/a"),
        ("/a/b/.", None, "/a/b"),
        ("/a/b/./", None, "/a/b/"),
        ("/lmstudio/x/..", None, "/lmstudio/"),  # cleaned, then trailing slash, one hop
        ("/lmstudio/x/..", "q", "/lmstudio/?q"),
        ("/a%20b/../c%20d", None, "/c%20d"),
        ("/x/%ff/../y", None, "/x/y"),
        ("/%ff/./", None, "/%FF/"),
        ("/a%2F%2Fb", None, "/a/b"),
        ("/a/%2F", None, "/a/"),
        ("/q%3F/./x", "1", "/q%3F/x?1"),
        ("/%zz/../%zz", None, "/%25zz"),  # invalid escapes are literal text
        ("/caf\u00e9/./", None, "/caf%C3%A9/"),
    ],
)
def test_path_cleaning_redirect(path: str, query: str | None, location: str) -> None:
    routes = router("/lmstudio/", "/")
    assert routes.match("GET", None, path, query) == Redirect(location)


@pytest.mark.parametrize(
    "path",
    [
        "/a/b",
        "/a%2Fb",
        "/.well-known/x",
        "/a/..b",
        "/a/...",
        "/a/b.",
        "/a/b%2F",
        "/%zz",
        "/%",
        "/%ff",
        "/a/%2e%2ex",
    ],
)
def test_clean_paths_are_not_redirected(path: str) -> None:
    assert isinstance(router("/").match("GET", None, path), Matched)


def test_cleaning_redirect_happens_even_without_a_match() -> None:
    assert router("GET /x").match("POST", None, "/y/../x") == Redirect("/x")


# --------------------------------------------------------------------------- raw split


@pytest.mark.parametrize(
    ("patterns", "path", "prefix", "remainder"),
    [
        (("/lmstudio/",), "/lmstudio/chat/completions", "/lmstudio/", "chat/completions"),
        (("/lmstudio/",), "/lm%73tudio/v1%2Fchat", "/lm%73tudio/", "v1%2Fchat"),
        (("/lmstudio/",), "/lmstudio/", "/lmstudio/", ""),
        (("/lmstudio/",), "/lmstudio/a%20b/%ZZ/", "/lmstudio/", "a%20b/%ZZ/"),
        (("/",), "/foo%20bar", "/", "foo%20bar"),
        (("/",), "/", "/", ""),
        (("/exact",), "/exact", "/exact", ""),
        (("/ex%61ct",), "/%65xact", "/%65xact", ""),
        (("/test/{$}",), "/test/", "/test/", ""),
        (("/api/", "/api/v1/"), "/api/v1/x/y", "/api/v1/", "x/y"),
        (("/api/", "/api/v1/"), "/api/v1%2Fx", "/api/", "v1%2Fx"),
        (("/a%20b/",), "/a%20b/c", "/a%20b/", "c"),
        (("/a%20b/",), "/a b/c", "/a b/", "c"),
        (("/caf\u00e9/",), "/caf%C3%A9/x", "/caf%C3%A9/", "x"),
        (("/caf\u00e9/",), "/caf\u00e9/x", "/caf\u00e9/", "x"),
    ],
)
def test_prefix_and_remainder(
    patterns: tuple[str, ...], path: str, prefix: str, remainder: str
) -> None:
    result = router(*patterns).match("POST", None, path, "x=1")
    assert isinstance(result, Matched)
    assert (result.prefix_raw, result.remainder_raw) == (prefix, remainder)


def test_matched_carries_route_and_pattern() -> None:
    routes: Router[dict[str, int]] = Router([("lm", "POST /lmstudio/", {"port": 1234})])
    result = routes.match("POST", "localhost:5601", "/lmstudio/v1/models")
    assert result == Matched(
        {"port": 1234}, parse_pattern("POST /lmstudio/"), "/lmstudio/", "v1/models"
    )


def test_empty_router() -> None:
    assert Router[str]([]).match("GET", None, "/") == NotFound()


# --------------------------------------------------------------------------- properties

PROPERTY_ROUTER = router(
    "/lmstudio/",
    "/lmstudio/v1/",
    "GET /static/",
    "/exact",
    "/test/{$}",
    "POST /api/",
    "example.com/",
    "GET /x",
)

SEGMENTS = st.sampled_from(
    [
        "",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        ".%2e",
        "%2f",
        "%2F",
        "..%2f",
        "..%2F..%2F",
        "%2e%2e%2f",
        "%",
        "%zz",
        "%ff",
        "%c3%a9",
        "\u00e9",
        "\udcff",
        "a b",
        "lmstudio",
        "lm%73tudio",
        "v1",
        "static",
        "test",
        "exact",
        "api",
        "x",
    ]
)
PATHS = st.one_of(
    st.lists(st.one_of(SEGMENTS, st.text(max_size=6)), max_size=8).map(
        lambda parts: "/" + "/".join(parts)
    ),
    st.text(max_size=30),
)
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "", "get"])
HOSTS = st.one_of(st.none(), st.sampled_from(["example.com", "EXAMPLE.COM:80", "x", ""]), st.text())
QUERIES = st.one_of(st.none(), st.text(max_size=10))


def decoded_segments(raw: str) -> list[bytes]:
    """Fully percent-decoded segments of a raw path piece."""
    return unquote_to_bytes(raw.encode("utf-8", "surrogatepass")).split(b"/")


@settings(max_examples=400, deadline=None)
@given(METHODS, HOSTS, PATHS, QUERIES)
def test_property_match_never_escapes_prefix(
    method: str, host: str | None, path: str, query: str | None
) -> None:
    result = PROPERTY_ROUTER.match(method, host, path, query)
    if isinstance(result, Matched):
        assert result.prefix_raw + result.remainder_raw == path
        assert result.prefix_raw.endswith("/") or result.remainder_raw == ""
        remainder = decoded_segments(result.remainder_raw)
        assert b".." not in remainder
        assert b"." not in remainder
        assert b"" not in remainder[:-1]
    elif isinstance(result, Redirect):
        assert all(0x20 < ord(ch) < 0x7F for ch in result.location)
        location = result.location.partition("?")[0]
        again = PROPERTY_ROUTER.match(method, host, location)
        # A redirect target is clean: at most a trailing-slash hop remains.
        assert not isinstance(again, Redirect) or again.location == location + "/"
    else:
        assert isinstance(result, MethodNotAllowed | NotFound)
