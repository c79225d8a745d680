"""Reading captured HTTP messages: the header block, SSE events, and a quick LLM parse.

The proxy's own LLM parser fills the ``llm`` block of the response metadata (SPEC §8);
captures made before it existed, or calls it did not recognise, have none. The CLI then
falls back to :func:`reply_of`, a small best-effort reading of the stored body: enough to
show the reassembled assistant text and tool calls, the token usage and the model. It
never raises on odd input; unknown values stay ``None``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

#: Largest body read whole for a quick parse (model sniffing, usage, reassembly).
QUICK_LIMIT = 16 * 1024 * 1024


@dataclass(slots=True)
class Message:
    """One stored HTTP message (a ``.bin`` file): start line, headers, body."""

    start_line: str
    headers: list[tuple[str, str]]
    body: bytes
    #: The file was cut short of its header block end (in flight, or truncated).
    incomplete_head: bool = False

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    @property
    def is_sse(self) -> bool:
        if self.content_type == "text/event-stream":
            return True
        head = self.body[:64].lstrip()
        return not self.content_type and head.startswith((b"data:", b"event:"))


def split_message(data: bytes) -> Message:
    """Split a ``.bin`` file's bytes at the blank line after the headers."""
    end = data.find(b"\r\n\r\n")
    incomplete = end < 0
    head, body = (data, b"") if incomplete else (data[:end], data[end + 4 :])
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return Message(lines[0] if lines else "", headers, body, incomplete)


def read_message(path: str, limit: int | None = None) -> Message | None:
    """The message stored at ``path`` (at most ``limit`` bytes of it), or None if unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit)
    except OSError:
        return None
    return split_message(data)


def request_target(msg: Message) -> tuple[str, str]:
    """``(method, url)`` from a request line ``POST http://host/path HTTP/1.1``."""
    parts = msg.start_line.split(" ")
    if len(parts) >= 2:
        return parts[0], parts[1]
    return (parts[0] if parts else ""), ""


def response_status(msg: Message) -> tuple[int | None, str]:
    """``(code, reason)`` from a status line ``HTTP/1.1 200 OK``."""
    parts = msg.start_line.split(" ", 2)
    try:
        code = int(parts[1])
    except (IndexError, ValueError):
        return None, ""
    return code, parts[2] if len(parts) > 2 else ""


def body_text(body: bytes) -> str | None:
    """The body as UTF-8 text, or None if it is not valid UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def body_json(body: bytes) -> Any:
    """The body parsed as JSON, or None (also for ``null``: the two are not told apart)."""
    stripped = body.lstrip()
    if stripped[:1] not in (b"{", b"["):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


# --------------------------------------------------------------------------
# Server-Sent Events
# --------------------------------------------------------------------------


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str
    id: str | None = None


def parse_sse(body: bytes) -> list[SSEEvent]:
    """Events of an SSE stream (WHATWG rules: ``\\r\\n``, ``\\n`` or ``\\r`` line ends).

    A last event without its terminating blank line (a cut stream) is kept too.
    """
    text = body.decode("utf-8", "replace")
    events: list[SSEEvent] = []
    name: str | None = None
    event_id: str | None = None
    data: list[str] = []
    seen = False
    for line in re.split(r"\r\n|\r|\n", text):
        if not line:
            if seen:
                events.append(SSEEvent(name, "\n".join(data), event_id))
            name, event_id, data, seen = None, None, [], False
            continue
        if line.startswith(":"):
            continue
        key, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if key == "data":
            data.append(value)
            seen = True
        elif key == "event":
            name = value
            seen = True
        elif key == "id":
            event_id = value
            seen = True
    if seen:
        events.append(SSEEvent(name, "\n".join(data), event_id))
    return events


def event_json(event: SSEEvent) -> Any:
    try:
        return json.loads(event.data)
    except ValueError:
        return None


# --------------------------------------------------------------------------
# The quick LLM parse
# --------------------------------------------------------------------------

USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "reasoning_tokens",
    "cost",
)


@dataclass(slots=True)
class Reply:
    """What an LLM answered, reassembled from a JSON body or an SSE stream."""

    api: str | None = None
    model: str | None = None
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    partial: bool = False
    error: str | None = None

    @property
    def empty(self) -> bool:
        return not self.text and not self.tool_calls


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _get(obj: object, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def normalise_usage(raw: object) -> dict[str, Any] | None:
    """The §8 usage shape from an OpenAI (chat, completions, responses) or Anthropic usage."""
    if not isinstance(raw, dict):
        return None
    usage: dict[str, Any] = dict.fromkeys(USAGE_KEYS)
    if "prompt_tokens" in raw or "completion_tokens" in raw:  # OpenAI chat/completions
        usage["input_tokens"] = _int(raw.get("prompt_tokens"))
        usage["output_tokens"] = _int(raw.get("completion_tokens"))
        usage["total_tokens"] = _int(raw.get("total_tokens"))
        usage["cached_input_tokens"] = _int(_get(raw, "prompt_tokens_details", "cached_tokens"))
        usage["reasoning_tokens"] = _int(_get(raw, "completion_tokens_details", "reasoning_tokens"))
    elif "cache_read_input_tokens" in raw or "cache_creation_input_tokens" in raw:  # Anthropic
        base = _int(raw.get("input_tokens"))
        read = _int(raw.get("cache_read_input_tokens"))
        write = _int(raw.get("cache_creation_input_tokens"))
        usage["input_tokens"] = None if base is None else base + (read or 0) + (write or 0)
        usage["output_tokens"] = _int(raw.get("output_tokens"))
        usage["cached_input_tokens"] = read
        usage["cache_write_input_tokens"] = write
    else:  # OpenAI responses, or Anthropic without cache fields
        usage["input_tokens"] = _int(raw.get("input_tokens"))
        usage["output_tokens"] = _int(raw.get("output_tokens"))
        usage["total_tokens"] = _int(raw.get("total_tokens"))
        usage["cached_input_tokens"] = _int(_get(raw, "input_tokens_details", "cached_tokens"))
        usage["reasoning_tokens"] = _int(_get(raw, "output_tokens_details", "reasoning_tokens"))
    known = (usage["input_tokens"], usage["output_tokens"])
    if usage["total_tokens"] is None and None not in known:
        usage["total_tokens"] = known[0] + known[1]
    cost = raw.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        usage["cost"] = cost
    if usage["input_tokens"] is None and usage["output_tokens"] is None:
        return None
    return usage


def _tool_call(call_id: object, name: object, arguments: object) -> dict[str, Any]:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": call_id if isinstance(call_id, str) else None,
        "type": "function",
        "function": {"name": name if isinstance(name, str) else "", "arguments": arguments},
    }


def normalise_call(call: object) -> dict[str, Any] | None:
    """An OpenAI-shaped tool call from either that shape or a flat ``{id, name, arguments}``
    (or Anthropic's ``input``), whichever the llm block uses."""
    if not isinstance(call, dict):
        return None
    fn = call.get("function")
    if isinstance(fn, dict):
        return _tool_call(call.get("id"), fn.get("name"), fn.get("arguments", ""))
    arguments = call.get("arguments", call.get("input", ""))
    return _tool_call(call.get("id") or call.get("call_id"), call.get("name"), arguments)


def reply_from_llm(llm: dict[str, Any]) -> Reply:
    """The llm metadata block (SPEC §8) as a :class:`Reply`."""
    calls = [c for c in map(normalise_call, llm.get("tool_calls") or []) if c is not None]
    model = llm.get("response_model")
    usage = llm.get("usage")
    return Reply(
        api=llm.get("api") if isinstance(llm.get("api"), str) else None,
        model=model if isinstance(model, str) else None,
        text=str(llm.get("output_text") or ""),
        tool_calls=calls,
        usage=usage if isinstance(usage, dict) else None,
        finish_reason=llm.get("finish_reason"),
        partial=bool(llm.get("partial")),
    )


def reply_of(msg: Message) -> Reply | None:
    """The reply in a stored response, or None if it is not a recognised LLM answer."""
    if msg.is_sse:
        return _reply_from_sse(parse_sse(msg.body))
    return reply_from_json(body_json(msg.body))


def reply_from_json(obj: Any) -> Reply | None:
    if not isinstance(obj, dict):
        return None
    reply = Reply(model=obj.get("model") if isinstance(obj.get("model"), str) else None)
    reply.usage = normalise_usage(obj.get("usage"))
    kind = obj.get("object")
    if isinstance(obj.get("error"), dict | str) and "choices" not in obj:
        error = obj["error"]
        reply.error = str(error.get("message") if isinstance(error, dict) else error)
        return reply
    if isinstance(obj.get("choices"), list):
        first = obj["choices"][0] if obj["choices"] else {}
        if not isinstance(first, dict):
            return reply
        reply.finish_reason = first.get("finish_reason")
        message = first.get("message")
        if isinstance(message, dict):
            reply.api = "openai.chat"
            content = message.get("content")
            reply.text = content if isinstance(content, str) else ""
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict):
                    fn = call.get("function") or {}
                    reply.tool_calls.append(
                        _tool_call(call.get("id"), fn.get("name"), fn.get("arguments", ""))
                    )
        elif isinstance(first.get("text"), str):
            reply.api = "openai.completions"
            reply.text = first["text"]
        return reply
    if obj.get("type") == "message" and isinstance(obj.get("content"), list):
        reply.api = "anthropic.messages"
        reply.finish_reason = obj.get("stop_reason")
        for block in obj["content"]:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                reply.text += block["text"]
            elif block.get("type") == "tool_use":
                reply.tool_calls.append(
                    _tool_call(block.get("id"), block.get("name"), block.get("input", {}))
                )
        return reply
    if kind == "response" and isinstance(obj.get("output"), list):
        reply.api = "openai.responses"
        reply.finish_reason = obj.get("status")
        _responses_output(obj["output"], reply)
        return reply
    if kind == "list" and isinstance(obj.get("data"), list):
        reply.api = "openai.embeddings"
        return reply
    return None


def _responses_output(output: list[Any], reply: Reply) -> None:
    text = ""
    for item in output:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    text += str(part.get("text", ""))
        elif item.get("type") == "function_call":
            reply.tool_calls.append(
                _tool_call(item.get("call_id"), item.get("name"), item.get("arguments", ""))
            )
    reply.text = text


def _reply_from_sse(events: list[SSEEvent]) -> Reply | None:
    reply = Reply(partial=True)
    recognised = False
    calls: dict[int, dict[str, Any]] = {}  # by index: OpenAI chat deltas, Anthropic blocks
    anthropic_usage: dict[str, Any] = {}
    for event in events:
        if event.data.strip() == "[DONE]":
            reply.partial = False
            continue
        obj = event_json(event)
        if not isinstance(obj, dict):
            continue
        kind = obj.get("type")
        if isinstance(obj.get("choices"), list):  # OpenAI chat / completions chunks
            recognised = True
            if isinstance(obj.get("model"), str):
                reply.model = obj["model"]
            if obj.get("usage"):
                reply.usage = normalise_usage(obj["usage"])
            for choice in obj["choices"][:1]:
                if not isinstance(choice, dict):
                    continue
                if choice.get("finish_reason"):
                    reply.finish_reason = choice["finish_reason"]
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    reply.api = "openai.chat"
                    if isinstance(delta.get("content"), str):
                        reply.text += delta["content"]
                    for tc in delta.get("tool_calls") or []:
                        _merge_openai_call(calls, tc)
                elif isinstance(choice.get("text"), str):
                    reply.api = "openai.completions"
                    reply.text += choice["text"]
        elif isinstance(kind, str) and (
            kind.startswith(("message_", "content_block_")) or kind == "ping"
        ):
            recognised = True
            reply.api = "anthropic.messages"
            _anthropic_event(obj, reply, calls, anthropic_usage)
        elif isinstance(kind, str) and kind.startswith("response."):
            recognised = True
            reply.api = "openai.responses"
            if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
                reply.text += obj["delta"]
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                reply.partial = False
                response = obj.get("response") or {}
                reply.model = response.get("model") or reply.model
                reply.finish_reason = response.get("status")
                reply.usage = normalise_usage(response.get("usage"))
                if isinstance(response.get("output"), list):
                    _responses_output(response["output"], reply)
        elif kind == "error" or "error" in obj:
            error = obj.get("error")
            reply.error = str(error.get("message") if isinstance(error, dict) else error)
    if not recognised:
        return None
    if anthropic_usage:
        reply.usage = normalise_usage(anthropic_usage)
    for index in sorted(calls):
        call = calls[index]
        reply.tool_calls.append(_tool_call(call["id"], call["name"], call["arguments"]))
    return reply


def _merge_openai_call(calls: dict[int, dict[str, Any]], delta: object) -> None:
    if not isinstance(delta, dict):
        return
    raw_index = delta.get("index")
    index = raw_index if isinstance(raw_index, int) else len(calls)
    call = calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
    if delta.get("id"):
        call["id"] = delta["id"]
    fn = delta.get("function") or {}
    if isinstance(fn, dict):
        if fn.get("name"):
            call["name"] += str(fn["name"])
        if isinstance(fn.get("arguments"), str):
            call["arguments"] += fn["arguments"]


def _anthropic_event(
    obj: dict[str, Any], reply: Reply, calls: dict[int, dict[str, Any]], usage: dict[str, Any]
) -> None:
    kind = obj["type"]
    if kind == "message_start":
        message = obj.get("message") or {}
        reply.model = message.get("model") or reply.model
        if isinstance(message.get("usage"), dict):
            usage.update(message["usage"])
    elif kind == "content_block_start":
        block = obj.get("content_block") or {}
        if block.get("type") == "tool_use":
            calls[int(obj.get("index") or 0)] = {
                "id": block.get("id"),
                "name": block.get("name") or "",
                "arguments": "",
            }
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            reply.text += block["text"]
    elif kind == "content_block_delta":
        delta = obj.get("delta") or {}
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            reply.text += delta["text"]
        elif delta.get("type") == "input_json_delta":
            call = calls.get(int(obj.get("index") or 0))
            if call is not None:
                call["arguments"] += str(delta.get("partial_json", ""))
    elif kind == "message_delta":
        reply.finish_reason = (obj.get("delta") or {}).get("stop_reason") or reply.finish_reason
        if isinstance(obj.get("usage"), dict):
            usage.update({k: v for k, v in obj["usage"].items() if v is not None})
    elif kind == "message_stop":
        reply.partial = False


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------

_MODEL = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.){0,200})"')


#: Request bodies up to this size are parsed whole to find the model; larger ones are
#: searched at both ends (SDKs put ``model`` before or after the long ``messages``).
SNIFF_WHOLE = 256 * 1024
SNIFF_END = 64 * 1024


def _model_match(data: bytes, last: bool = False) -> str | None:
    matches = list(_MODEL.finditer(data)) if last else [m for m in [_MODEL.search(data)] if m]
    if not matches:
        return None
    try:
        value = json.loads(b'"' + matches[-1].group(1) + b'"')
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def sniff_model(body: bytes) -> str | None:
    """The ``model`` of a JSON request body (parsed whole when it is small enough)."""
    obj = body_json(body) if len(body) <= QUICK_LIMIT else None
    if isinstance(obj, dict):
        model = obj.get("model")
        return model if isinstance(model, str) else None
    return _model_match(body[:SNIFF_END]) or _model_match(body[-SNIFF_END:], last=True)


def sniff_model_file(path: str) -> str | None:
    """:func:`sniff_model` on a stored request, reading only the ends of a large body."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_WHOLE)
            end = head.find(b"\r\n\r\n")
            if end < 0:
                return None
            if len(head) < SNIFF_WHOLE:
                return sniff_model(head[end + 4 :])
            found = _model_match(head[end + 4 :])
            if found is not None:
                return found
            size = os.fstat(f.fileno()).st_size
            f.seek(max(size - SNIFF_END, len(head)))
            return _model_match(f.read(SNIFF_END), last=True)
    except OSError:
        return None
