"""Anthropic Messages API (``/v1/messages``).

Streams announce usage twice: ``message_start`` carries the input counts
(and an early ``output_tokens``), each ``message_delta`` the cumulative
output count (recent API versions restate the input counts there too).
"""

from __future__ import annotations

from typing import Any

from .state import Handler, State, compact, short
from .usage import ANTHROPIC_INPUTS, count, from_anthropic

_TOOL_BLOCKS = ("tool_use", "server_tool_use")


def _block_index(obj: dict[str, Any]) -> object:
    index = obj.get("index")
    return ("block", index)


class Messages(Handler):
    def __init__(self) -> None:
        self._usage: dict[str, int] = {}
        self._inputs: dict[object, str] = {}  # tool block -> its start ``input`` as JSON

    def event(self, st: State, name: str, obj: dict[str, Any], at_ms: float) -> None:
        kind = obj.get("type")
        kind = kind if isinstance(kind, str) else name
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if not isinstance(delta, dict):
                return
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                if isinstance(text, str) and text:
                    st.text.add(text)
                    st.content(at_ms)
            elif dtype == "input_json_delta":
                call = st.tools.find(_block_index(obj))
                piece = delta.get("partial_json")
                if call is not None and isinstance(piece, str):
                    call.arguments.add(piece)
                    if piece:
                        st.content(at_ms)
        elif kind == "content_block_start":
            block = obj.get("content_block")
            if isinstance(block, dict):
                self._start_block(st, obj, block, at_ms)
        elif kind == "content_block_stop":
            key = _block_index(obj)
            call = st.tools.find(key)
            start = self._inputs.pop(key, None)
            if call is not None and not call.arguments.size and start is not None:
                call.arguments.add(start)  # no deltas: the start block's input is the input
        elif kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                st.model(message.get("model"))
                self._merge(st, message.get("usage"), start=True)
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                reason = short(delta.get("stop_reason"))
                if reason is not None:
                    st.finish_reason = reason
            self._merge(st, obj.get("usage"), start=False)
        elif kind == "message_stop":
            st.terminated = True

    def _start_block(
        self, st: State, obj: dict[str, Any], block: dict[str, Any], at_ms: float
    ) -> None:
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                st.text.add(text)
                st.content(at_ms)
        elif kind in _TOOL_BLOCKS:
            key = _block_index(obj)
            call = st.tools.get(key)
            if call is not None:
                call.identify(block.get("id"), block.get("name"))
                self._inputs[key] = compact(block.get("input", {}))
                st.content(at_ms)

    def _merge(self, st: State, usage: object, start: bool) -> None:
        """``output_tokens``: the latest value; input counters: the largest seen (cumulative)."""
        if not isinstance(usage, dict):
            return
        for key in (*ANTHROPIC_INPUTS, "output_tokens"):
            value = count(usage.get(key))
            if value is None:
                continue
            if key == "output_tokens" or start:
                self._usage[key] = value
            else:
                self._usage[key] = max(self._usage.get(key, value), value)
        st.set_usage(from_anthropic(self._usage))

    def body(self, st: State, obj: dict[str, Any]) -> None:
        st.model(obj.get("model"))
        st.finish_reason = short(obj.get("stop_reason"))
        usage = obj.get("usage")
        if isinstance(usage, dict):
            st.set_usage(from_anthropic(usage))
        content = obj.get("content")
        if isinstance(content, list):
            for index, block in enumerate(content):
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "text":
                    text = block.get("text")
                    if isinstance(text, str):
                        st.text.add(text)
                elif block.get("type") in _TOOL_BLOCKS:
                    call = st.tools.get(("block", index))
                    if call is not None:
                        call.identify(block.get("id"), block.get("name"))
                        call.arguments.add(compact(block.get("input", {})))
        st.terminated = True
