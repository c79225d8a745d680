"""Anthropic-compatible endpoints: ``POST /v1/messages`` and Anthropic-shaped ``/v1/models``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._common import (
    ApiError,
    JsonPlan,
    Knobs,
    Plan,
    Reply,
    SsePlan,
    Step,
    Template,
    count_words,
    dumps,
    json_blocks,
    last_user_text,
    make_reply,
    max_tokens,
    new_id,
    require_model,
    split_fixed,
    sse_event,
    tool_arguments,
    wants_tool,
)
from ._openai import MODELS


def _usage(prompt: int, output: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output,
    }


def _message(
    message_id: str, model: str, content: list[Any], stop: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def messages(body: dict[str, Any], knobs: Knobs, now: int) -> Plan:
    """``POST /v1/messages``: text (or a ``tool_use`` block when asked to "call a tool")."""
    model = require_model(body)
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise ApiError(400, "messages: must be a non-empty list")
    user = last_user_text(turns)
    prompt = count_words(body.get("system"), turns)
    message_id = new_id("msg_")
    stream = body.get("stream") is True
    tool = wants_tool(body, user)
    if tool is not None:
        return _tool_use(message_id, model, tool, prompt, knobs, stream)
    reply = make_reply(knobs, user, max_tokens(body, "max_tokens"))
    stop = "max_tokens" if reply.truncated else "end_turn"
    if stream:
        return SsePlan(_text_events(message_id, model, reply, stop, prompt, knobs))

    def build(text: str) -> dict[str, Any]:
        content = [{"type": "text", "text": text}]
        return _message(message_id, model, content, stop, _usage(prompt, reply.count))

    return JsonPlan(json_blocks(build, reply), knobs.ttft + knobs.interval * reply.count)


def _opening(message_id: str, model: str, prompt: int, block: dict[str, Any]) -> Iterator[Step]:
    """``message_start``, ``content_block_start`` and ``ping``: sent as soon as headers are."""
    start = _message(message_id, model, [], None, _usage(prompt, 1))
    yield 0.0, sse_event("message_start", {"type": "message_start", "message": start})
    opening = {"type": "content_block_start", "index": 0, "content_block": block}
    yield 0.0, sse_event("content_block_start", opening)
    yield 0.0, sse_event("ping", {"type": "ping"})


def _closing(stop: str, prompt: int, output: int, delay: float) -> Iterator[Step]:
    yield delay, sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    delta = {"stop_reason": stop, "stop_sequence": None}
    closing = {"type": "message_delta", "delta": delta, "usage": _usage(prompt, output)}
    yield 0.0, sse_event("message_delta", closing)
    yield 0.0, sse_event("message_stop", {"type": "message_stop"})


def _text_events(
    message_id: str, model: str, reply: Reply, stop: str, prompt: int, knobs: Knobs
) -> Iterator[Step]:
    yield from _opening(message_id, model, prompt, {"type": "text", "text": ""})
    kind = "content_block_delta"
    delta = Template(
        {"type": kind, "index": 0, "delta": {"type": "text_delta", "text": Template.hole(0)}},
        prefix=b"event: " + kind.encode() + b"\ndata: ",
        suffix=b"\n\n",
    )
    delay = knobs.ttft
    for piece in reply.pieces():
        yield delay, delta.render(piece)
        delay = knobs.interval
    yield from _closing(stop, prompt, reply.count, delay)


def _tool_use(
    message_id: str, model: str, tool: dict[str, Any], prompt: int, knobs: Knobs, stream: bool
) -> Plan:
    name = str(tool.get("name") or "tool")
    arguments = tool_arguments(tool.get("input_schema"))
    pieces = split_fixed(dumps(arguments).decode())
    tool_id = new_id("toolu_")
    if not stream:
        block = {"type": "tool_use", "id": tool_id, "name": name, "input": arguments}
        usage = _usage(prompt, len(pieces))
        body = dumps(_message(message_id, model, [block], "tool_use", usage))
        return JsonPlan(iter([body]), knobs.ttft + knobs.interval * len(pieces))

    def events() -> Iterator[Step]:
        block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
        yield from _opening(message_id, model, prompt, block)
        delay = knobs.ttft
        for piece in pieces:
            delta = {"type": "input_json_delta", "partial_json": piece}
            event = {"type": "content_block_delta", "index": 0, "delta": delta}
            yield delay, sse_event("content_block_delta", event)
            delay = knobs.interval
        yield from _closing("tool_use", prompt, len(pieces), delay)

    return SsePlan(events())


def models_anthropic() -> bytes:
    """``GET /v1/models`` in Anthropic's shape (chosen when ``anthropic-version`` is sent)."""
    created = "2025-01-01T00:00:00Z"
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": created}
        for m in MODELS
        if m.startswith("claude")
    ]
    return dumps(
        {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    )
