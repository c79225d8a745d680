"""``logproxy ls`` and ``logproxy show``: what a human reads, and their ``--json`` forms."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit

from logproxy.cli.parse import (
    Message,
    Reply,
    body_json,
    body_text,
    event_json,
    parse_sse,
    reply_from_llm,
    reply_of,
)
from logproxy.cli.store import (
    REQUEST_BIN,
    RESPONSE_BIN,
    Bounds,
    Capture,
    CliError,
    Filter,
    Store,
    Summary,
    iso,
    parse_time,
)

# --------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """Escape control characters (but newline and tab) so a body cannot drive the terminal."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


def one_line(text: str) -> str:
    return clean(text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " "))


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.1f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f}s"
    minutes, seconds = divmod(int(ms / 1000), 60)
    return f"{minutes}m{seconds:02d}s"


def fmt_bytes(size: object) -> str:
    if not isinstance(size, int):
        return "-"
    if size < 1024:
        return f"{size}B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f}KiB"
    return f"{size / 1024 / 1024:.1f}MiB"


def fmt_time(ts: float) -> str:
    """``2025-09-13 02:11:09`` in UTC, like the file names and the console."""
    return iso(ts, millis=False).replace("T", " ").rstrip("Z")


def path_of(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def tokens(usage: dict[str, Any] | None, key: str) -> str:
    value = usage.get(key) if usage else None
    return str(value) if isinstance(value, int) else "-"


def marker(summary: Summary) -> str:
    """``~`` in flight, ``!`` ended with an error (or the capture lost bytes), else blank."""
    if summary.in_flight:
        return "~"
    doc = summary.doc
    if summary.error is not None or doc.get("truncated") or doc.get("capture_error"):
        return "!"
    return " "


# --------------------------------------------------------------------------
# ls
# --------------------------------------------------------------------------

_COLUMNS = ("", "TIME", "ID", "ROUTE", "METHOD", "PATH", "STATUS", "MODEL", "IN", "OUT", "DURATION")
_RIGHT = {"IN", "OUT", "DURATION"}


def ls_row(summary: Summary) -> list[str]:
    usage = summary.usage if summary.finished else None
    return [
        marker(summary),
        fmt_time(summary.started),
        summary.capture.capture_id[:8],
        one_line(summary.route or "-"),
        one_line(summary.method or "-"),
        one_line(shorten(path_of(summary.source_url), 48)),
        str(summary.status) if summary.status is not None else "-",
        one_line(shorten(summary.model or "-", 32)),
        tokens(usage, "input_tokens"),
        tokens(usage, "output_tokens"),
        fmt_ms(summary.duration_ms),
    ]


def table(rows: list[list[str]], out: IO[str]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    for row in [list(_COLUMNS), *rows]:
        cells = [
            cell.rjust(widths[i]) if _COLUMNS[i] in _RIGHT else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.write(" ".join(cells).rstrip() + "\n")


def select(
    store: Store, since: str | None, until: str | None, newest_first: bool
) -> Iterator[Capture]:
    """Captures started in ``[--since, --until)``, by file name only (nothing opened)."""
    bounds = Bounds.of(
        parse_time(since, "--since") if since else None,
        parse_time(until, "--until") if until else None,
    )
    return store.captures(bounds, newest_first=newest_first)


def cmd_ls(args: Any, store: Store, out: IO[str], err: IO[str]) -> int:
    flt = Filter(args.route, args.model, args.status)
    if args.limit < 0:
        raise CliError("--limit: must be 0 (no limit) or more")
    captures = select(store, args.since, args.until, newest_first=True)
    found: list[Summary] = []
    more = False
    for capture in captures:
        summary = Summary.load(capture)
        if not flt.matches(summary):
            continue
        if args.limit and len(found) == args.limit:
            more = True
            break
        found.append(summary)
    if args.json:
        for summary in found:
            out.write(json.dumps(summary.doc, ensure_ascii=False) + "\n")
        return 0
    if not found:
        err.write("no captures found\n")
        return 0
    table([ls_row(s) for s in found], out)
    if more:
        err.write(f"(the newest {args.limit}; --limit N or --limit 0 for more)\n")
    return 0


# --------------------------------------------------------------------------
# show
# --------------------------------------------------------------------------


def _text_or_base64(body: bytes) -> tuple[str, str]:
    text = body_text(body)
    if text is not None:
        return text, "utf-8"
    import base64

    return base64.b64encode(body).decode("ascii"), "base64"


def show_json(capture: Capture) -> dict[str, Any]:
    """Both metadata documents, the header blocks and the bodies as text."""
    result: dict[str, Any] = {"id": capture.capture_id, "folder": capture.folder}
    for kind, flag in (("request", REQUEST_BIN), ("response", RESPONSE_BIN)):
        result[kind] = capture.metadata(kind)
        msg = capture.message(kind) if capture.files & flag else None
        if msg is None:
            result[f"{kind}_line"] = None
            result[f"{kind}_headers"] = None
            result[f"{kind}_body"] = None
            continue
        text, encoding = _text_or_base64(msg.body)
        result[f"{kind}_line"] = msg.start_line
        result[f"{kind}_headers"] = [[k, v] for k, v in msg.headers]
        result[f"{kind}_body"] = text
        result[f"{kind}_body_encoding"] = encoding
    return result


def _summary_lines(summary: Summary, request_doc: dict[str, Any] | None) -> list[tuple[str, str]]:
    meta = summary.meta
    lines: list[tuple[str, str]] = []
    route = summary.route
    pattern = meta.get("pattern")
    lines.append(("route", f"{route} ({pattern})" if route else "- (no route matched)"))
    lines.append(("request", f"{summary.method} {summary.source_url}"))
    if summary.target_url:
        lines.append(("upstream", summary.target_url))
    if meta.get("client_address"):
        lines.append(("client", str(meta["client_address"])))
    lines.append(("started", str(meta.get("request_started_at") or iso(summary.started))))
    if summary.status is not None:
        lines.append(("status", summary.status_text))
    header_ms = meta.get("upstream_header_duration_ms")
    timing = fmt_ms(summary.duration_ms)
    if isinstance(header_ms, int | float):
        timing += f" (upstream headers after {fmt_ms(float(header_ms))})"
    lines.append(("duration", timing))
    if summary.in_flight:
        state = "in flight"
    elif summary.error is not None:
        state = f"error: {summary.error}"
    else:
        state = "completed"
    lines.append(("state", state))
    for kind, doc in (("request", request_doc), ("response", summary.doc)):
        if doc is None or doc.get("stream_type") != kind:
            continue
        parts = [fmt_bytes(doc.get("bytes_written"))]
        coding = meta.get(f"{kind}_content_encoding")
        if coding:
            parts.append(f"{coding} (stored decoded)")
        if doc.get("error") and kind == "request":
            parts.append(f"error: {doc['error']}")
        for key in ("decode_error", "capture_error"):
            if doc.get(key):
                parts.append(f"{key.replace('_', ' ')}: {doc[key]}")
        if doc.get("truncated"):
            parts.append(f"truncated, {doc.get('bytes_lost')} bytes lost")
        lines.append((f"{kind} file", ", ".join(parts)))
    llm = summary.llm
    if llm is not None:
        lines.append(("llm", _llm_line(llm)))
    return lines


def _llm_line(llm: dict[str, Any]) -> str:
    parts = [str(llm.get("api") or "?")]
    model = llm.get("model")
    response_model = llm.get("response_model")
    if model or response_model:
        parts.append(
            f"{model} -> {response_model}"
            if response_model and response_model != model
            else str(model or response_model)
        )
    if llm.get("stream"):
        parts.append("stream")
    if llm.get("finish_reason"):
        parts.append(f"finish={llm['finish_reason']}")
    usage = llm.get("usage")
    if isinstance(usage, dict):
        parts.append(_usage_text(usage))
    for key in ("ttfb_ms", "ttft_ms"):
        if isinstance(llm.get(key), int | float):
            parts.append(f"{key[:-3]}={fmt_ms(float(llm[key]))}")
    if llm.get("partial"):
        parts.append("PARTIAL")
    return ", ".join(parts)


def _usage_text(usage: dict[str, Any]) -> str:
    text = f"tokens in={tokens(usage, 'input_tokens')} out={tokens(usage, 'output_tokens')}"
    for key, label in (
        ("cached_input_tokens", "cached"),
        ("cache_write_input_tokens", "cache-write"),
        ("reasoning_tokens", "reasoning"),
    ):
        if isinstance(usage.get(key), int) and usage[key]:
            text += f" {label}={usage[key]}"
    if isinstance(usage.get("cost"), int | float):
        text += f" cost={usage['cost']}"
    return text


def render_body(msg: Message, out: IO[str]) -> None:
    body = msg.body
    if not body:
        out.write("(empty body)\n")
        return
    if msg.is_sse:
        events = parse_sse(body)
        out.write(f"({len(events)} server-sent events)\n")
        for n, event in enumerate(events, 1):
            obj = event_json(event)
            data = json.dumps(obj, ensure_ascii=False) if obj is not None else event.data
            name = f"{event.event} " if event.event else ""
            out.write(f"[{n}] {clean(name)}{clean(data)}\n")
        return
    obj = body_json(body)
    if obj is not None:
        out.write(clean(json.dumps(obj, indent=2, ensure_ascii=False)) + "\n")
        return
    text = body_text(body)
    if text is None:
        kind = msg.content_type or "unknown type"
        out.write(f"({len(body)} bytes of binary data, {kind}; use --json for base64)\n")
        return
    out.write(clean(text) + ("" if text.endswith("\n") else "\n"))


def render_reply(reply: Reply | None, llm: dict[str, Any] | None, out: IO[str]) -> None:
    """The reassembled assistant message: from the llm block, else from the quick parse."""
    if llm is not None and (llm.get("output_text") is not None or llm.get("tool_calls")):
        reply = reply_from_llm(llm)
    elif reply is None or reply.empty:
        return
    elif reply.usage:
        out.write(f"({_usage_text(reply.usage)})\n")
    out.write("\n=== Assistant" + (" (partial)" if reply.partial else "") + " ===\n")
    if reply.text:
        out.write(clean(reply.text) + "\n")
    for call in reply.tool_calls:
        fn = call["function"]
        out.write(f"tool call {clean(str(fn['name']))}({clean(str(fn['arguments']))})")
        out.write(f" id={clean(str(call['id']))}\n" if call.get("id") else "\n")


def cmd_show(args: Any, store: Store, out: IO[str], err: IO[str]) -> int:
    capture = store.resolve(args.id)
    if args.json:
        out.write(json.dumps(show_json(capture), ensure_ascii=False, indent=2) + "\n")
        return 0
    summary = Summary.load(capture)
    request_doc = capture.metadata("request")
    out.write(f"capture {capture.capture_id}\n")
    for label, value in _summary_lines(summary, request_doc):
        out.write(f"  {label:<14}{one_line(value)}\n")
    out.write(f"  {'files':<14}{clean(capture.prefix)}*\n")
    for kind, flag in (("request", REQUEST_BIN), ("response", RESPONSE_BIN)):
        out.write(f"\n=== {kind.capitalize()} ===\n")
        msg = capture.message(kind) if capture.files & flag else None
        if msg is None:
            out.write("(not captured yet)\n" if summary.in_flight else "(no file)\n")
            continue
        if not msg.start_line and msg.incomplete_head:
            out.write("(nothing received)\n")
            continue
        out.write(clean(msg.start_line) + "\n")
        for name, value in msg.headers:
            out.write(f"{clean(name)}: {clean(value)}\n")
        out.write("\n")
        if msg.incomplete_head:
            out.write("(header block incomplete)\n")
            continue
        render_body(msg, out)
        if kind == "response":
            reply = reply_of(msg) if summary.llm is None else None
            render_reply(reply, summary.llm, out)
    return 0
