"""``logproxy export``: JSONL (one record per call), HAR 1.2, and OpenAI chat fine-tuning lines.

Captures are exported oldest first, one at a time (memory stays bounded by the largest
capture, not the export), and the HAR document is written incrementally.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from logproxy import __version__
from logproxy.cli.parse import (
    Message,
    Reply,
    body_json,
    body_text,
    normalise_call,
    response_status,
)
from logproxy.cli.store import (
    REQUEST_BIN,
    RESPONSE_BIN,
    Capture,
    CliError,
    Filter,
    Store,
    Summary,
    iso,
)
from logproxy.cli.view import select

FORMATS = ("jsonl", "har", "openai-chat")


class Progress:
    """Progress on stderr: a percentage when it is a terminal, else a line per 1,000."""

    EVERY = 1000

    def __init__(self, err: IO[str], total: int, quiet: bool) -> None:
        self.err = err
        self.total = total
        self.quiet = quiet
        self.tty = _isatty(err)
        self._shown = -1

    def step(self, done: int) -> None:
        if self.quiet:
            return
        if self.tty:
            percent = done * 100 // self.total if self.total else 100
            if percent != self._shown and self.total >= 100:
                self._shown = percent
                self.err.write(f"\rexport: {percent:3d}% ({done}/{self.total})")
                self.err.flush()
        elif done % self.EVERY == 0:
            self.err.write(f"export: {done}/{self.total} captures\n")
            self.err.flush()

    def finish(self, written: int, skipped: int, dest: str) -> None:
        if self.quiet:
            return
        if self.tty and self._shown >= 0:
            self.err.write("\r\x1b[K")
        extra = f", {skipped} skipped" if skipped else ""
        self.err.write(f"export: {written} records to {dest}{extra}\n")
        self.err.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------
# One capture, loaded for export
# --------------------------------------------------------------------------


class Loaded:
    """A capture's summary, both messages (whole) and its request document."""

    def __init__(self, summary: Summary) -> None:
        capture = summary.capture
        self.summary = summary
        self.request = capture.message("request") if capture.files & REQUEST_BIN else None
        self.response = capture.message("response") if capture.files & RESPONSE_BIN else None
        summary.attach(self.request, self.response)

    @property
    def request_json(self) -> Any:
        return body_json(self.request.body) if self.request is not None else None

    @property
    def stream(self) -> bool:
        llm = self.summary.llm
        if llm is not None and isinstance(llm.get("stream"), bool):
            return bool(llm["stream"])
        request = self.request_json
        if isinstance(request, dict) and request.get("stream") is True:
            return True
        return self.response is not None and self.response.is_sse


def body_value(msg: Message | None) -> tuple[Any, bool]:
    """``(value, is_base64)``: parsed JSON, else text, else base64; None without a body."""
    if msg is None or not msg.body:
        return None, False
    if not msg.is_sse:
        obj = body_json(msg.body)
        if obj is not None:
            return obj, False
    text = body_text(msg.body)
    if text is not None:
        return text, False
    return base64.b64encode(msg.body).decode("ascii"), True


def endpoint(summary: Summary) -> str:
    url = summary.target_url or summary.source_url
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return url


# --------------------------------------------------------------------------
# JSONL
# --------------------------------------------------------------------------


def jsonl_record(item: Loaded) -> dict[str, Any]:
    s = item.summary
    request_body, request_b64 = body_value(item.request)
    response_body, response_b64 = body_value(item.response)
    answer = s.answer
    record: dict[str, Any] = {
        "id": s.capture.capture_id,
        "timestamp": s.meta.get("request_started_at") or iso(s.started),
        "route": s.route,
        "method": s.method,
        "endpoint": endpoint(s),
        "url": s.target_url or s.source_url,
        "model": s.model,
        "request_body": request_body,
        "status_code": s.status,
        "response_body": response_body,
        "stream": item.stream,
        "duration_ms": s.duration_ms,
        "error": s.error,
        "usage": s.usage,
        "response_model": s.response_model,
        "output_text": answer.text if answer is not None and not answer.empty else None,
        "tool_calls": answer.tool_calls if answer is not None and answer.tool_calls else None,
    }
    if request_b64:
        record["request_body_base64"] = True
    if response_b64:
        record["response_body_base64"] = True
    return record


# --------------------------------------------------------------------------
# HAR 1.2
# --------------------------------------------------------------------------


def _har_headers(msg: Message | None) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in msg.headers] if msg is not None else []


def har_entry(item: Loaded) -> dict[str, Any]:
    s = item.summary
    url = s.target_url or s.source_url
    try:
        query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    except ValueError:
        query = []
    req = item.request
    request: dict[str, Any] = {
        "method": s.method or "GET",
        "url": url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": _har_headers(req),
        "queryString": [{"name": k, "value": v} for k, v in query],
        "headersSize": -1,
        "bodySize": len(req.body) if req is not None else 0,
    }
    if req is not None and req.body:
        request["postData"] = {
            "mimeType": req.header("content-type") or "application/octet-stream",
            "params": [],
            "text": req.body.decode("utf-8", "replace"),
        }
    resp = item.response
    code, reason = response_status(resp) if resp is not None else (None, "")
    status = s.status if s.status is not None else code
    status_text = s.status_text.partition(" ")[2] if s.status is not None else reason
    content: dict[str, Any] = {"size": 0, "mimeType": "x-unknown"}
    body_size = 0
    if resp is not None:
        content["size"] = len(resp.body)
        content["mimeType"] = resp.header("content-type") or "x-unknown"
        text = body_text(resp.body)
        if text is None:
            content["text"] = base64.b64encode(resp.body).decode("ascii")
            content["encoding"] = "base64"
        else:
            content["text"] = text
        body_size = -1 if s.meta.get("response_content_encoding") else len(resp.body)
    response = {
        "status": status or 0,
        "statusText": status_text,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": _har_headers(resp),
        "content": content,
        "redirectURL": (resp.header("location") if resp is not None else None) or "",
        "headersSize": -1,
        "bodySize": body_size,
    }
    total = s.duration_ms or 0.0
    header_ms = s.meta.get("upstream_header_duration_ms")
    wait = min(float(header_ms), total) if isinstance(header_ms, int | float) else total
    receive = round(max(0.0, total - wait), 3)
    wait = round(wait, 3)
    entry: dict[str, Any] = {
        "startedDateTime": iso(s.started),
        "time": round(wait + receive, 3),
        "request": request,
        "response": response,
        "cache": {},
        "timings": {
            "blocked": -1,
            "dns": -1,
            "connect": -1,
            "send": 0,
            "wait": wait,
            "receive": receive,
            "ssl": -1,
        },
        "_resourceType": "fetch",
        "_logproxy": {
            "id": s.capture.capture_id,
            "route": s.route,
            "source_url": s.source_url,
            "error": s.error,
            "completed": bool(s.doc.get("completed")),
            "llm": s.llm,
        },
    }
    if s.error:
        entry["comment"] = f"error: {s.error}"
    return entry


# --------------------------------------------------------------------------
# OpenAI chat fine-tuning lines
# --------------------------------------------------------------------------


def _api(item: Loaded, request: dict[str, Any]) -> str | None:
    llm = item.summary.llm
    if llm is not None and isinstance(llm.get("api"), str):
        return str(llm["api"])
    path = endpoint(item.summary).rstrip("/")
    if path.endswith("/chat/completions"):
        return "openai.chat"
    if path.endswith("/messages") and "max_tokens" in request:
        return "anthropic.messages"
    return None


def _text_blocks(content: object) -> str | None:
    """Joined text of a string or a list of text blocks; None if anything else is in it."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "text":
            return None
        texts.append(str(block.get("text", "")))
    return "\n".join(texts)


def anthropic_messages(request: dict[str, Any]) -> list[dict[str, Any]] | None:
    """An Anthropic Messages request as OpenAI chat messages; None if it has content
    (images, documents) that the chat format cannot carry."""
    messages: list[dict[str, Any]] = []
    system = request.get("system")
    if system:
        text = _text_blocks(system)
        if text is None:
            return None
        messages.append({"role": "system", "content": text})
    for message in request.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return None
        role, content = message["role"], message.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            return None
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "tool_use" and role == "assistant":
                call = normalise_call(block)
                if call is not None:
                    calls.append(call)
            elif kind == "tool_result" and role == "user":
                result = _text_blocks(block.get("content", ""))
                if result is None:
                    return None
                results.append(
                    {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": result}
                )
            elif kind in ("thinking", "redacted_thinking"):
                continue
            else:
                return None
        messages.extend(results)
        if texts or calls:
            converted: dict[str, Any] = {"role": role, "content": "\n".join(texts) or None}
            if calls:
                converted["tool_calls"] = calls
            messages.append(converted)
    return messages


def _anthropic_tools(tools: object) -> list[dict[str, Any]]:
    converted = []
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and "input_schema" in tool:
            fn = {"name": tool.get("name"), "parameters": tool["input_schema"]}
            if tool.get("description"):
                fn["description"] = tool["description"]
            converted.append({"type": "function", "function": fn})
    return converted


def assistant_message(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {k: v for k, v in call.items() if v is not None} for call in reply.tool_calls
        ]
    elif message["content"] is None:
        message["content"] = ""
    return message


def chat_record(item: Loaded) -> dict[str, Any] | None:
    """``{"messages": [...request messages, assistant reply]}``, or None to skip."""
    s = item.summary
    if s.status != 200 or s.error is not None or not s.finished:
        return None
    request = item.request_json
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        return None
    api = _api(item, request)
    reply = s.answer
    if reply is None or reply.empty or reply.partial:
        return None
    record: dict[str, Any]
    if api == "openai.chat":
        record = {"messages": [*request["messages"], assistant_message(reply)]}
        if request.get("tools"):
            record["tools"] = request["tools"]
    elif api == "anthropic.messages":
        messages = anthropic_messages(request)
        if messages is None:
            return None
        record = {"messages": [*messages, assistant_message(reply)]}
        tools = _anthropic_tools(request.get("tools"))
        if tools:
            record["tools"] = tools
    else:
        return None
    return record


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------


def _write_all(
    fmt: str,
    captures: list[Capture],
    flt: Filter,
    out: IO[str],
    progress: Progress,
) -> tuple[int, int]:
    written = skipped = 0
    dumps: Callable[[Any], str] = lambda obj: json.dumps(obj, ensure_ascii=False)  # noqa: E731
    if fmt == "har":
        creator = {"name": "logproxy", "version": __version__}
        out.write('{"log": {"version": "1.2", "creator": ' + dumps(creator) + ', "entries": [')
    for done, capture in enumerate(captures, 1):
        summary = Summary.load(capture)
        if flt.matches(summary):
            item = Loaded(summary)
            if fmt == "jsonl":
                out.write(dumps(jsonl_record(item)) + "\n")
                written += 1
            elif fmt == "har":
                out.write(("\n" if not written else ",\n") + dumps(har_entry(item)))
                written += 1
            else:
                record = chat_record(item)
                if record is None:
                    skipped += 1
                else:
                    out.write(dumps(record) + "\n")
                    written += 1
        progress.step(done)
    if fmt == "har":
        out.write("\n]}}\n")
    return written, skipped


def cmd_export(args: Any, store: Store, out: IO[str], err: IO[str]) -> int:
    flt = Filter(args.route, args.model, args.status)
    captures = list(select(store, args.since, args.until, newest_first=False))
    progress = Progress(err, len(captures), args.quiet)
    if args.output in (None, "-"):
        written, skipped = _write_all(args.format, captures, flt, out, progress)
        out.flush()
        progress.finish(written, skipped, "stdout")
        return 0
    target = os.path.abspath(args.output)
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".logproxy-export-", dir=folder)
    except OSError as e:
        raise CliError(f"cannot write {args.output}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            written, skipped = _write_all(args.format, captures, flt, f, progress)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as e:
        raise CliError(f"cannot write {args.output}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    progress.finish(written, skipped, args.output)
    return 0
