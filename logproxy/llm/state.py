"""What the API handlers fill in while a response streams by."""

from __future__ import annotations

import json
from typing import Any

from .buffers import TEXT_CAP, Budget, TextBuffer
from .usage import Usage

#: Tool calls kept per response; more are dropped and flagged as truncation.
MAX_TOOL_CALLS = 256
#: Short strings (model names, ids, finish reasons) are cut to this length.
SHORT = 256
#: Error messages are cut to this length.
ERROR_CAP = 2000


def clean(text: str) -> str:
    """Lone surrogates (from ``"\\ud800"`` escapes) would break a UTF-8 metadata file."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def short(value: object, cap: int = SHORT) -> str | None:
    """A string field from upstream, bounded and clean; ``None`` for anything else or empty."""
    if isinstance(value, str) and value:
        return clean(value[:cap])
    return None


def compact(value: object) -> str:
    """JSON text for tool arguments that arrived as an object rather than a string."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return ""


class ToolCall:
    __slots__ = ("arguments", "id", "name")

    def __init__(self, budget: Budget) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.arguments = TextBuffer(TEXT_CAP, budget)

    def identify(self, call_id: object, name: object) -> None:
        """Set id and name from the first delta that carries them."""
        if self.id is None:
            self.id = short(call_id)
        if self.name is None:
            self.name = short(name)


class ToolCalls:
    """Tool calls keyed by whatever the API uses (delta index, block index, item id)."""

    __slots__ = ("_budget", "_calls", "dropped")

    def __init__(self) -> None:
        self._calls: dict[object, ToolCall] = {}
        self._budget = Budget(TEXT_CAP)  # all arguments together, like output_text
        self.dropped = False

    def get(self, key: object) -> ToolCall | None:
        call = self._calls.get(key)
        if call is None:
            if len(self._calls) >= MAX_TOOL_CALLS:
                self.dropped = True
                return None
            call = self._calls[key] = ToolCall(self._budget)
        return call

    def find(self, key: object) -> ToolCall | None:
        return self._calls.get(key)

    def last_key(self) -> object:
        return next(reversed(self._calls)) if self._calls else None

    def __bool__(self) -> bool:
        return bool(self._calls)

    def truncated(self) -> bool:
        return self.dropped or any(c.arguments.truncated for c in self._calls.values())

    def as_list(self) -> list[dict[str, Any]]:
        return [
            {"id": c.id, "name": c.name, "arguments": c.arguments.text()}
            for c in self._calls.values()
        ]


class State:
    """The response-side facts; each field stays ``None`` until upstream says it."""

    __slots__ = (
        "error",
        "finish_reason",
        "provider_hint",
        "response_model",
        "terminated",
        "text",
        "tools",
        "ttft_ms",
        "usage",
        "warnings",
    )

    def __init__(self) -> None:
        self.response_model: str | None = None
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.text = TextBuffer(TEXT_CAP)
        self.tools = ToolCalls()
        self.ttft_ms: float | None = None
        self.error: str | None = None
        self.provider_hint: str | None = None
        self.terminated = False  # the API's own end marker was seen
        self.warnings: list[str] = []

    def content(self, at_ms: float) -> None:
        """The first content token (text or tool call) arrived at ``at_ms``."""
        if self.ttft_ms is None:
            self.ttft_ms = at_ms

    def model(self, value: object) -> None:
        if self.response_model is None:
            self.response_model = short(value)

    def warn(self, code: str) -> None:
        if code not in self.warnings and len(self.warnings) < 32:
            self.warnings.append(code)

    def set_error(self, message: str) -> None:
        if self.error is None:
            self.error = clean(message[:ERROR_CAP])

    def set_usage(self, usage: Usage) -> None:
        self.usage = usage
        if usage.cost is not None:
            self.provider_hint = "openrouter"


class Handler:
    """One API's rules: ``event`` for each SSE event's JSON, ``body`` for a whole JSON answer.

    A fresh handler serves one response, so it may keep per-stream state.
    """

    def event(self, st: State, name: str, obj: dict[str, Any], at_ms: float) -> None:
        raise NotImplementedError

    def body(self, st: State, obj: dict[str, Any]) -> None:
        raise NotImplementedError


def error_message(obj: dict[str, Any]) -> str | None:
    """The message of an API error object: OpenAI/OpenRouter ``{"error": {...}}``,
    Anthropic ``{"type": "error", "error": {...}}``, or a bare ``{"error": "..."}``."""
    err = obj.get("error")
    if isinstance(err, str) and err:
        return err
    if isinstance(err, dict):
        for key in ("message", "type", "code"):
            value = err.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
        return "error"
    return None
