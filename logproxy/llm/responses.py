"""OpenAI Responses API (``/responses``): typed events, output items, a final ``response``."""

from __future__ import annotations

from typing import Any

from .openai import common
from .state import Handler, State, short

#: Events that carry the finished ``response`` object and end the stream.
TERMINAL = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "response.cancelled"}
)


def finish_reason(resp: dict[str, Any]) -> str | None:
    """``status``, or for an ``incomplete`` answer its reason (e.g. ``max_output_tokens``)."""
    status = short(resp.get("status"))
    if status == "incomplete":
        details = resp.get("incomplete_details")
        if isinstance(details, dict):
            return short(details.get("reason")) or status
    return status


def _item_key(item_id: object, output_index: object) -> object:
    if isinstance(item_id, str) and item_id:
        return item_id
    return ("index", output_index)


def _call_item(st: State, item: dict[str, Any], key: object) -> bool:
    """A ``function_call`` (or ``custom_tool_call``) output item; True if it is one."""
    kind = item.get("type")
    if kind not in ("function_call", "custom_tool_call"):
        return False
    call = st.tools.get(key)
    if call is not None:
        call.identify(item.get("call_id") or item.get("id"), item.get("name"))
        arguments = item.get("arguments" if kind == "function_call" else "input")
        if isinstance(arguments, str) and not call.arguments.size:
            call.arguments.add(arguments)
    return True


def _message_text(st: State, item: dict[str, Any]) -> None:
    content = item.get("content")
    if item.get("type") == "message" and isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "output_text":
                text = part.get("text")
                if isinstance(text, str):
                    st.text.add(text)


def _final(st: State, resp: dict[str, Any], text: bool, tools: bool) -> None:
    """The full ``response`` object: status, usage, error; text/tools if not streamed."""
    common(st, resp)
    reason = finish_reason(resp)
    if reason is not None:
        st.finish_reason = reason
    err = resp.get("error")
    if isinstance(err, dict):
        message = err.get("message") or err.get("code")
        if isinstance(message, str) and message:
            st.set_error(message)
    output = resp.get("output")
    if not isinstance(output, list):
        return
    for index, item in enumerate(output):
        if not isinstance(item, dict):
            continue
        if text:
            _message_text(st, item)
        if tools:
            _call_item(st, item, _item_key(item.get("id"), index))


class Responses(Handler):
    """Streams: ``response.output_text.delta``, function-call items and argument deltas."""

    def __init__(self) -> None:
        self._text_seen = False
        self._tools_seen = False

    def event(self, st: State, name: str, obj: dict[str, Any], at_ms: float) -> None:
        kind = obj.get("type")
        kind = kind if isinstance(kind, str) else name
        if kind == "response.output_text.delta":
            delta = obj.get("delta")
            if isinstance(delta, str) and delta:
                self._text_seen = True
                st.text.add(delta)
                st.content(at_ms)
        elif kind == "response.function_call_arguments.delta":
            call = st.tools.find(_item_key(obj.get("item_id"), obj.get("output_index")))
            delta = obj.get("delta")
            if call is not None and isinstance(delta, str):
                call.arguments.add(delta)
                st.content(at_ms)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = obj.get("item")
            if isinstance(item, dict):
                key = _item_key(item.get("id"), obj.get("output_index"))
                if _call_item(st, item, key):
                    self._tools_seen = True
                    st.content(at_ms)
        elif kind == "error":
            message = obj.get("message") or obj.get("code")
            if isinstance(message, str) and message:
                st.set_error(message)
        resp = obj.get("response")
        if isinstance(resp, dict):
            st.model(resp.get("model"))
            if kind in TERMINAL:
                _final(st, resp, not self._text_seen, not self._tools_seen)
                st.terminated = True
                if st.text.size or st.tools:  # content came only with the final object
                    st.content(at_ms)

    def body(self, st: State, obj: dict[str, Any]) -> None:
        _final(st, obj, True, True)
        st.terminated = True
