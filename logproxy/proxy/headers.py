"""Header rewriting between client and upstream (pure functions, no I/O).

RFC 9110 section 7.6.1: hop-by-hop headers describe one connection and must not be
forwarded, nor any header the ``Connection`` header names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: Request headers the proxy sets itself: ``Host`` becomes the destination's host,
#: ``Content-Length`` is framed by the upstream client from the body producer's length,
#: ``Expect: 100-continue`` is answered by the proxy and not sent on.
REQUEST_SET_BY_PROXY: frozenset[bytes] = frozenset({b"host", b"content-length", b"expect"})

RawHeaders = list[tuple[bytes, bytes]]


def connection_tokens(values: Iterable[bytes]) -> set[bytes]:
    """Header names listed in ``Connection`` values (lower-cased)."""
    tokens: set[bytes] = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


def forwardable(
    headers: Iterable[tuple[bytes, Sequence[bytes]]], drop: frozenset[bytes] = frozenset()
) -> RawHeaders:
    """The end-to-end headers among ``headers`` as ``(name, value)`` pairs, in order.

    ``headers`` is what ``Headers.getAllRawHeaders()`` yields. Repeated headers stay
    repeated. ``drop`` names (lower-case) further headers to leave out.
    """
    pairs = [(name, values) for name, values in headers]
    named = connection_tokens(
        value for name, values in pairs if name.lower() == b"connection" for value in values
    )
    out: RawHeaders = []
    for name, values in pairs:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named or lower in drop:
            continue
        out.extend((name, value) for value in values)
    return out


def header_value(headers: RawHeaders, name: bytes) -> bytes | None:
    """The last value of ``name`` (case-insensitive) in ``headers``, or ``None``."""
    wanted = name.lower()
    found = None
    for key, value in headers:
        if key.lower() == wanted:
            found = value
    return found
