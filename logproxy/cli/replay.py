"""``logproxy replay ID [--to ORIGIN]``: send a captured request again and diff the answer.

The request goes out with the captured method, path, query, headers and body (the body
as stored, i.e. decoded: its ``Content-Encoding`` line is not in the capture either).
Hop-by-hop and framing headers (``Host``, ``Content-Length``, ...) and the proxy's own
``X-Proxy-Path`` line are recomputed or left out. Redacted credentials are filled in
from the environment:

* ``LOGPROXY_REPLAY_AUTHORIZATION``, if set, is sent as the ``Authorization`` value and
  stands in for every redacted credential header;
* otherwise a redacted ``Authorization`` becomes ``Bearer $OPENAI_API_KEY``
  (``Bearer $ANTHROPIC_AUTH_TOKEN`` for Anthropic-looking targets), a redacted
  ``x-api-key`` ``$ANTHROPIC_API_KEY`` and a redacted ``api-key`` (Azure)
  ``$AZURE_OPENAI_API_KEY`` or ``$OPENAI_API_KEY``.

A credential that is needed but not set is reported in one warning line and the request
is sent without it: local servers usually need none, and a real API answers 401, which
the output then shows.

This uses the standard library's ``http.client`` rather than treq under
``twisted.internet.task.react``: a replay is one sequential request from a short-lived
process, so an event loop buys nothing here, while ``react()`` stops the global reactor
and can run only once per process -- which would keep ``main()`` from being called
in-process (tests run their own reactor) or twice. ``http.client`` streams the response
and verifies TLS with ``ssl.create_default_context()`` (system store; ``SSL_CERT_FILE``
is honoured).
"""

from __future__ import annotations

import difflib
import http.client
import json
import os
import ssl
import time
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import urlsplit

from logproxy.capture.decode import CappedDecoder, DecodeError, make_decoder
from logproxy.cli.parse import Message, body_json, body_text, reply_of, request_target
from logproxy.cli.store import REQUEST_BIN, RESPONSE_BIN, Capture, CliError, Store

#: Not replayed as captured: recomputed for the new connection, or the proxy's own.
_SKIP = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "x-proxy-path",
        "x-decompression-error",
        "expect",
    }
)
_REDACTED = "<redacted>"
_MAX_DECODED = 256 * 1024 * 1024


def parse_origin(value: str) -> tuple[str, str]:
    """``(scheme, netloc)`` of ``--to http://host:port``. Raises CliError."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - validates the port
    except ValueError as e:
        raise CliError(f"--to: invalid URL {value!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--to: expected an origin such as http://localhost:8080, got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise CliError(f"--to: give only scheme://host:port (the path is kept), got {value!r}")
    return parts.scheme, parts.netloc


def _anthropic_like(host: str, headers: list[tuple[str, str]]) -> bool:
    return "anthropic" in host.lower() or any(k.lower() == "anthropic-version" for k, _ in headers)


def fill_credentials(
    headers: list[tuple[str, str]], host: str, env: Mapping[str, str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Replace redacted header values from ``env``; returns the headers and warnings."""
    override = env.get("LOGPROXY_REPLAY_AUTHORIZATION") or None
    anthropic = _anthropic_like(host, headers)
    result: list[tuple[str, str]] = []
    warnings: list[str] = []
    override_used = False
    for name, value in headers:
        if not value.startswith(_REDACTED):
            result.append((name, value))
            continue
        lower = name.lower()
        if lower in ("authorization", "x-api-key", "api-key") and override is not None:
            if not override_used:
                result.append(("Authorization", override))
                override_used = True
            continue
        if lower == "authorization":
            var = "ANTHROPIC_AUTH_TOKEN" if anthropic else "OPENAI_API_KEY"
            secret = env.get(var)
            new = f"Bearer {secret}" if secret else None
        elif lower == "x-api-key":
            var = "ANTHROPIC_API_KEY"
            new = env.get(var) or None
        elif lower == "api-key":
            var = "AZURE_OPENAI_API_KEY or OPENAI_API_KEY"
            new = env.get("AZURE_OPENAI_API_KEY") or env.get("OPENAI_API_KEY") or None
        else:
            warnings.append(f"{name} was redacted in the capture; sending without it")
            continue
        if new is None:
            warnings.append(
                f"{name} was redacted and {var} is not set (or set"
                " LOGPROXY_REPLAY_AUTHORIZATION); sending without it"
            )
            continue
        result.append((name, new))
    return result, warnings


def _decode(body: bytes, coding: str | None) -> tuple[bytes, str | None]:
    try:
        decoder = make_decoder(coding)
        if decoder is None:
            return body, None
        capped = CappedDecoder(decoder, _MAX_DECODED)
        pieces: list[bytes] = []
        capped.feed(body, pieces.append)
        capped.finish(pieces.append)
    except DecodeError as e:
        return body, str(e)
    return b"".join(pieces), None


def comparable(msg: Message) -> tuple[str, list[str]]:
    """What to diff: the reassembled text of an LLM stream, pretty JSON, or the text."""
    if msg.is_sse:
        reply = reply_of(msg)
        if reply is not None and not reply.empty:
            lines = reply.text.splitlines()
            for call in reply.tool_calls:
                fn = call["function"]
                lines.append(f"[tool call] {fn['name']}({fn['arguments']})")
            return "reassembled text", lines
    obj = body_json(msg.body)
    if obj is not None:
        return "json", json.dumps(obj, indent=2, ensure_ascii=False).splitlines()
    text = body_text(msg.body)
    if text is None:
        return "binary", [f"<{len(msg.body)} bytes of binary data>"]
    return "body", text.splitlines()


def diff_bodies(old: Message | None, new: Message, old_label: str) -> list[str]:
    new_kind, new_lines = comparable(new)
    if old is None:
        old_kind, old_lines = "nothing", list[str]()
    else:
        old_kind, old_lines = comparable(old)
        if old_kind != new_kind and "reassembled text" in (old_kind, new_kind):
            old_kind, old_lines = "body", (body_text(old.body) or "").splitlines()
            new_kind, new_lines = "body", (body_text(new.body) or "").splitlines()
    return list(
        difflib.unified_diff(
            old_lines,
            new_lines,
            f"{old_label} ({old_kind})",
            f"replay ({new_kind})",
            lineterm="",
        )
    )


def _send(
    scheme: str,
    netloc: str,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    timeout: float,
) -> tuple[str, int, str, list[tuple[str, str]], bytes]:
    parts = urlsplit(f"{scheme}://{netloc}/")
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(
            host, parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", netloc)
        for name, value in headers:
            conn.putheader(name, value)
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        data = response.read()
        version = "HTTP/1.0" if response.version == 10 else "HTTP/1.1"
        return version, response.status, response.reason, list(response.getheaders()), data
    finally:
        conn.close()


def cmd_replay(
    args: Any, store: Store, out: IO[str], err: IO[str], env: Mapping[str, str] | None = None
) -> int:
    env = os.environ if env is None else env
    capture: Capture = store.resolve(args.id)
    request = capture.message("request") if capture.files & REQUEST_BIN else None
    if request is None or request.incomplete_head:
        raise CliError(f"capture {capture.capture_id} has no complete request to replay")
    method, url = request_target(request)
    if args.via_proxy:
        url = request.header("x-proxy-path") or ""
        if not url:
            raise CliError(f"capture {capture.capture_id} has no X-Proxy-Path line")
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"capture {capture.capture_id}: cannot replay request line {url!r}")
    scheme, netloc = parse_origin(args.to) if args.to else (parts.scheme, parts.netloc)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [(k, v) for k, v in request.headers if k.lower() not in _SKIP]
    host = urlsplit(f"{scheme}://{netloc}").hostname or ""
    headers, warnings = fill_credentials(headers, host, env)
    request_doc = capture.metadata("request") or {}
    if request_doc.get("truncated") or request_doc.get("decode_error"):
        warnings.append("the captured request body is incomplete; sending what was captured")
    for warning in warnings:
        err.write(f"replay: warning: {warning}\n")
    full_url = f"{scheme}://{netloc}{target}"
    out.write(f"replay {capture.capture_id[:8]}: {method} {full_url}\n")
    started = time.monotonic()
    try:
        version, status, reason, resp_headers, raw = _send(
            scheme, netloc, method, target, headers, request.body, args.timeout
        )
    except (OSError, http.client.HTTPException) as e:
        detail = str(e) or type(e).__name__
        raise CliError(f"replay to {full_url} failed: {detail}") from None
    elapsed = (time.monotonic() - started) * 1000
    coding = next((v for k, v in resp_headers if k.lower() == "content-encoding"), None)
    body, decode_error = _decode(raw, coding)
    if decode_error:
        err.write(f"replay: warning: could not decode {coding} response body: {decode_error}\n")
    kept = [(k, v) for k, v in resp_headers if k.lower() != "content-encoding" or decode_error]
    new = Message(f"{version} {status} {reason}", kept, body)
    old = capture.message("response") if capture.files & RESPONSE_BIN else None
    was = f" (captured: {old.start_line.partition(' ')[2]})" if old is not None else ""
    out.write(f"{version} {status} {reason}{was} in {elapsed:.0f}ms\n")
    new_id = next((v for k, v in resp_headers if k.lower() == "x-logproxy-id"), None)
    if new_id:
        out.write(f"new capture: {new_id}\n")
    lines = diff_bodies(old, new, f"captured {capture.capture_id[:8]}")
    if not lines:
        out.write("response body identical to the capture\n")
    for line in lines:
        out.write(line + "\n")
    return 0
