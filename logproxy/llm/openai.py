"""OpenAI-shaped APIs: Chat Completions, legacy Completions, Embeddings.

OpenRouter and most OpenAI-compatible servers use the same shapes, with
extras (``usage.cost``, a top-level ``provider``) that are picked up here.
"""

from __future__ import annotations

from typing import Any

from .state import Handler, State, ToolCall, compact, short
from .usage import from_openai


class OpenAIHandler(Handler):
    """Model, usage and provider from every object; a whole body ends the answer."""

    def event(self, st: State, name: str, obj: dict[str, Any], at_ms: float) -> None:
        common(st, obj)

    def body(self, st: State, obj: dict[str, Any]) -> None:
        common(st, obj)
        st.terminated = True


def common(st: State, obj: dict[str, Any]) -> None:
    """Fields every OpenAI-shaped object may carry: model, usage, OpenRouter's provider."""
    st.model(obj.get("model"))
    usage = obj.get("usage")
    if isinstance(usage, dict):
        st.set_usage(from_openai(usage))
    if isinstance(obj.get("provider"), str):
        st.provider_hint = "openrouter"


def first_choice(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Choice 0: with ``n > 1`` only the first alternative is reassembled."""
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                return choice
    return None


def _text(content: object) -> str:
    """Message content: a string, or (some compatible servers) a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict))
        return "".join(t for t in parts if isinstance(t, str))
    return ""


def _arguments(value: object) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else compact(value)


def _finish(st: State, choice: dict[str, Any]) -> None:
    reason = short(choice.get("finish_reason"))
    if reason is not None:
        st.finish_reason = reason
        st.terminated = True


class Chat(OpenAIHandler):
    """``/chat/completions``: ``delta.content`` and ``delta.tool_calls`` fragments."""

    def event(self, st: State, name: str, obj: dict[str, Any], at_ms: float) -> None:
        common(st, obj)
        choice = first_choice(obj)
        if choice is None:
            return
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = _text(delta.get("content"))
            if text:
                st.text.add(text)
                st.content(at_ms)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for position, call in enumerate(calls):
                    if isinstance(call, dict) and _tool_delta(st, call, position):
                        st.content(at_ms)
            legacy = delta.get("function_call")
            if isinstance(legacy, dict) and _legacy_function(st, legacy):
                st.content(at_ms)
        _finish(st, choice)

    def body(self, st: State, obj: dict[str, Any]) -> None:
        super().body(st, obj)
        choice = first_choice(obj)
        if choice is None:
            return
        message = choice.get("message")
        if isinstance(message, dict):
            st.text.add(_text(message.get("content")))
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                for position, call in enumerate(calls):
                    if isinstance(call, dict):
                        _tool_delta(st, {**call, "index": position}, position)
            legacy = message.get("function_call")
            if isinstance(legacy, dict):
                _legacy_function(st, legacy)
        _finish(st, choice)


def _tool_delta(st: State, delta: dict[str, Any], position: int) -> bool:
    """Merge one ``tool_calls[]`` fragment; True if it carried anything."""
    index = delta.get("index")
    call_id = delta.get("id")
    key: object
    if isinstance(index, int) and not isinstance(index, bool):
        key = index
    elif isinstance(call_id, str) and call_id:
        key = ("id", call_id)
    else:  # a continuation without index or id belongs to the latest call
        last = st.tools.last_key()
        key = position if last is None else last
    call = st.tools.get(key)
    if call is None:
        return False
    function = delta.get("function")
    function = function if isinstance(function, dict) else {}
    call.identify(call_id, function.get("name"))
    arguments = _arguments(function.get("arguments"))
    call.arguments.add(arguments)
    return bool(arguments) or call_id is not None or function.get("name") is not None


def _legacy_function(st: State, function: dict[str, Any]) -> bool:
    """The deprecated ``function_call`` (one call, no id)."""
    call: ToolCall | None = st.tools.get("function_call")
    if call is None:
        return False
    call.identify(None, function.get("name"))
    arguments = _arguments(function.get("arguments"))
    call.arguments.add(arguments)
    return bool(arguments) or function.get("name") is not None


class Completions(OpenAIHandler):
    """Legacy ``/completions``: ``choices[0].text`` in every event and in the body."""

    def event(self, st: State, name: str, obj: dict[str, Any], at_ms: float) -> None:
        common(st, obj)
        choice = first_choice(obj)
        if choice is None:
            return
        text = choice.get("text")
        if isinstance(text, str) and text:
            st.text.add(text)
            st.content(at_ms)
        _finish(st, choice)

    def body(self, st: State, obj: dict[str, Any]) -> None:
        super().body(st, obj)
        choice = first_choice(obj)
        if choice is not None:
            text = choice.get("text")
            if isinstance(text, str):
                st.text.add(text)
            _finish(st, choice)


class Embeddings(OpenAIHandler):
    """``/embeddings``: only model and usage (``prompt_tokens``, ``total_tokens``)."""
