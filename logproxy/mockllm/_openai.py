"""OpenAI-compatible endpoints: chat, legacy completions, embeddings, models, responses."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
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
    sse_data,
    sse_event,
    sse_event_blocks,
    tool_arguments,
    wants_tool,
)

#: Appended to the requested model, as the real API answers ``gpt-4o-mini-2024-07-18``.
MODEL_SUFFIX = "-mock-2025"
FINGERPRINT = "fp_mockllm"
DONE = b"data: [DONE]\n\n"

MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "o3-mini",
    "text-embedding-3-small",
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
)


def openai_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _delays(knobs: Knobs) -> Iterator[float]:
    """``ttft`` before the first content event, ``interval`` before each later one."""
    yield knobs.ttft
    while True:
        yield knobs.interval


def _generation_time(knobs: Knobs, count: int) -> float:
    """How long a non-streamed answer "takes": what the stream would have needed."""
    return knobs.ttft + knobs.interval * count


# --------------------------------------------------------------------------- chat completions


def chat_completions(body: dict[str, Any], knobs: Knobs, now: int) -> Plan:
    """``POST /v1/chat/completions``."""
    model = require_model(body) + MODEL_SUFFIX
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array")
    user = last_user_text(messages)
    prompt = count_words(messages)
    head = {"id": new_id("chatcmpl-"), "created": now, "model": model}
    stream = body.get("stream") is True
    tool = wants_tool(body, user)
    if tool is not None:
        return _chat_tool(head, tool, prompt, knobs, stream, _include_usage(body))
    reply = make_reply(knobs, user, max_tokens(body, "max_completion_tokens", "max_tokens"))
    finish = "length" if reply.truncated else "stop"
    usage = openai_usage(prompt, reply.count)
    if knobs.openrouter:
        usage["cost"] = round((prompt + reply.count) * 1e-6, 8)
        head["provider"] = "MockProvider"
    if stream:
        return SsePlan(_chat_events(head, reply, finish, usage, knobs, _include_usage(body)))

    def build(text: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        message["annotations"] = []
        return _completion(head, message, finish, usage)

    return JsonPlan(json_blocks(build, reply), _generation_time(knobs, reply.count))


def _completion(
    head: dict[str, Any], message: dict[str, Any], finish: str, usage: dict[str, Any]
) -> dict[str, Any]:
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {
        "id": head["id"],
        "object": "chat.completion",
        "created": head["created"],
        "model": head["model"],
        "choices": [choice],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
        **({"provider": head["provider"]} if "provider" in head else {}),
    }


class _ChunkMaker:
    """Builds ``chat.completion.chunk`` events; usage is ``null`` in each when it is requested."""

    def __init__(self, head: dict[str, Any], include_usage: bool) -> None:
        self.base = {
            "id": head["id"],
            "object": "chat.completion.chunk",
            "created": head["created"],
            "model": head["model"],
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            **({"provider": head["provider"]} if "provider" in head else {}),
        }
        self.tail: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(self, delta: object, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse_data({**self.base, "choices": [choice], **self.tail})

    def template(self, delta: object) -> Template:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        obj = {**self.base, "choices": [choice], **self.tail}
        return Template(obj, prefix=b"data: ", suffix=b"\n\n")

    def usage(self, usage: dict[str, Any]) -> bytes:
        return sse_data({**self.base, "choices": [], "usage": usage})


def _chat_events(
    head: dict[str, Any],
    reply: Reply,
    finish: str,
    usage: dict[str, Any],
    knobs: Knobs,
    include_usage: bool,
) -> Iterator[Step]:
    maker = _ChunkMaker(head, include_usage)
    yield 0.0, maker.chunk({"role": "assistant", "content": "", "refusal": None})
    content = maker.template({"content": Template.hole(0)})
    delays = _delays(knobs)
    for piece in reply.pieces():
        yield next(delays), content.render(piece)
    yield next(delays), maker.chunk({}, finish)
    if include_usage:
        yield 0.0, maker.usage(usage)
    yield 0.0, DONE


def _chat_tool(
    head: dict[str, Any],
    tool: dict[str, Any],
    prompt: int,
    knobs: Knobs,
    stream: bool,
    include_usage: bool,
) -> Plan:
    nested = tool.get("function")
    function: dict[str, Any] = nested if isinstance(nested, dict) else tool
    name = str(function.get("name") or "tool")
    arguments = dumps(tool_arguments(function.get("parameters"))).decode()
    pieces = split_fixed(arguments)
    call_id = new_id("call_")
    usage = openai_usage(prompt, len(pieces))
    if not stream:
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [call],
            "refusal": None,
            "annotations": [],
        }
        body = dumps(_completion(head, message, "tool_calls", usage))
        return JsonPlan(iter([body]), _generation_time(knobs, len(pieces)))

    def events() -> Iterator[Step]:
        maker = _ChunkMaker(head, include_usage)
        start = {"index": 0, "id": call_id, "type": "function"}
        start["function"] = {"name": name, "arguments": ""}
        first = {"role": "assistant", "content": None, "tool_calls": [start], "refusal": None}
        yield 0.0, maker.chunk(first)
        delays = _delays(knobs)
        for piece in pieces:
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            yield next(delays), maker.chunk(delta)
        yield next(delays), maker.chunk({}, "tool_calls")
        if include_usage:
            yield 0.0, maker.usage(usage)
        yield 0.0, DONE

    return SsePlan(events())


# --------------------------------------------------------------------------- legacy completions


def completions(body: dict[str, Any], knobs: Knobs, now: int) -> Plan:
    """``POST /v1/completions`` (legacy ``text_completion``)."""
    model = require_model(body) + MODEL_SUFFIX
    prompt = body.get("prompt")
    if isinstance(prompt, list) and all(isinstance(p, int) for p in prompt):
        text, prompt_tokens = "", len(prompt)
    elif isinstance(prompt, str | list):
        strings = [prompt] if isinstance(prompt, str) else [p for p in prompt if isinstance(p, str)]
        text, prompt_tokens = (strings[-1] if strings else ""), count_words(strings)
    else:
        raise ApiError(400, "'prompt' must be a string or an array")
    reply = make_reply(knobs, text, max_tokens(body, "max_tokens"))
    finish = "length" if reply.truncated else "stop"
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": reply.count,
        "total_tokens": prompt_tokens + reply.count,
    }
    head = {"id": new_id("cmpl-"), "object": "text_completion", "created": now, "model": model}
    if body.get("stream") is True:
        return SsePlan(_completion_events(head, reply, finish, usage, knobs, _include_usage(body)))

    def build(text: str) -> dict[str, Any]:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice], "usage": usage, "system_fingerprint": FINGERPRINT}

    return JsonPlan(json_blocks(build, reply), _generation_time(knobs, reply.count))


def _completion_events(
    head: dict[str, Any],
    reply: Reply,
    finish: str,
    usage: dict[str, Any],
    knobs: Knobs,
    include_usage: bool,
) -> Iterator[Step]:
    tail: dict[str, Any] = {"usage": None} if include_usage else {}
    base = {**head, "system_fingerprint": FINGERPRINT}

    def choice(text: str, reason: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": reason}

    content = Template(
        {**base, "choices": [choice(Template.hole(0), None)], **tail},
        prefix=b"data: ",
        suffix=b"\n\n",
    )
    delays = _delays(knobs)
    for piece in reply.pieces():
        yield next(delays), content.render(piece)
    yield next(delays), sse_data({**base, "choices": [choice("", finish)], **tail})
    if include_usage:
        yield 0.0, sse_data({**base, "choices": [], "usage": usage})
    yield 0.0, DONE


# --------------------------------------------------------------------------- embeddings & models


def _vector(item: object, dimensions: int) -> list[float]:
    """A unit vector seeded by the input, rounded to float32 so base64 and floats agree."""
    seed = hashlib.sha256(dumps(item)).digest()
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))


def embeddings(body: dict[str, Any], knobs: Knobs, now: int) -> Plan:
    """``POST /v1/embeddings``: deterministic vectors of ``dimensions`` (default 8) floats."""
    model = require_model(body)
    inputs = body.get("input")
    if isinstance(inputs, str) or (
        isinstance(inputs, list) and inputs and all(isinstance(i, int) for i in inputs)
    ):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, "'input' must be a non-empty string or array")
    dimensions = body.get("dimensions", 8)
    if (
        isinstance(dimensions, bool)
        or not isinstance(dimensions, int)
        or not 1 <= dimensions <= 65536
    ):
        raise ApiError(400, "'dimensions' must be an integer in [1, 65536]")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be 'float' or 'base64'")
    data = []
    for index, item in enumerate(inputs):
        values = _vector(item, dimensions)
        vector: object = values
        if encoding == "base64":
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(len(i) if isinstance(i, list) else count_words(i) for i in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    response = {"object": "list", "data": data, "model": model, "usage": usage}
    return JsonPlan(iter([dumps(response)]), knobs.ttft)


def models_openai(created: int = 1_700_000_000) -> bytes:
    """``GET /v1/models`` in OpenAI's shape."""
    data = [{"id": m, "object": "model", "created": created, "owned_by": "mockllm"} for m in MODELS]
    return dumps({"object": "list", "data": data})


# --------------------------------------------------------------------------- responses API


def responses(body: dict[str, Any], knobs: Knobs, now: int) -> Plan:
    """``POST /v1/responses``."""
    model = require_model(body) + MODEL_SUFFIX
    given = body.get("input")
    if not isinstance(given, str | list):
        raise ApiError(400, "'input' must be a string or an array")
    user = last_user_text(given)
    prompt = count_words(body.get("instructions"), given)
    resp = _ResponseShell(body, now, model)
    tool = wants_tool(body, user)
    if tool is not None:
        return _responses_tool(resp, tool, prompt, knobs, body.get("stream") is True)
    reply = make_reply(knobs, user, max_tokens(body, "max_output_tokens"))
    usage = _responses_usage(prompt, reply.count)
    status = "incomplete" if reply.truncated else "completed"
    item_id = new_id("msg_")
    if body.get("stream") is True:
        return SsePlan(_responses_events(resp, item_id, reply, usage, status, knobs))

    def build(text: str) -> dict[str, Any]:
        return resp.final(status, [_message_item(item_id, text, "completed")], usage)

    return JsonPlan(json_blocks(build, reply), _generation_time(knobs, reply.count))


def _responses_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_output_text(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


class _ResponseShell:
    """The ``response`` object, echoing request settings as the real API does."""

    def __init__(self, body: dict[str, Any], now: int, model: str) -> None:
        self.id = new_id("resp_")
        self.body = body
        self.now = now
        self.model = model

    def final(self, status: str, output: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
        body = self.body
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.now,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": body.get("metadata") or {},
        }


class _Sequencer:
    """Numbers Responses-API events (``sequence_number``) and renders them as SSE."""

    def __init__(self) -> None:
        self.number = 0

    def next(self) -> int:
        number = self.number
        self.number += 1
        return number

    def event(self, kind: str, **fields: Any) -> bytes:
        return sse_event(kind, {"type": kind, "sequence_number": self.next(), **fields})


def _responses_events(
    resp: _ResponseShell,
    item_id: str,
    reply: Reply,
    usage: dict[str, Any],
    status: str,
    knobs: Knobs,
) -> Iterator[Step]:
    seq = _Sequencer()
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    yield 0.0, seq.event("response.created", response=resp.final("in_progress", [], None))
    yield 0.0, seq.event("response.in_progress", response=resp.final("in_progress", [], None))
    item = _message_item(item_id, None, "in_progress")
    yield 0.0, seq.event("response.output_item.added", output_index=0, item=item)
    yield 0.0, seq.event("response.content_part.added", **where, part=_output_text(""))
    kind = "response.output_text.delta"
    delta = Template(
        {
            "type": kind,
            "sequence_number": Template.hole(0),
            **where,
            "delta": Template.hole(1),
            "logprobs": [],
        },
        holes=2,
        prefix=b"event: " + kind.encode() + b"\ndata: ",
        suffix=b"\n\n",
    )
    delays = _delays(knobs)
    for piece in reply.pieces():
        yield next(delays), delta.render(seq.next(), piece)
    gap = next(delays)
    # The closing events repeat the whole text; they stream in blocks if it is huge.
    closing = [
        ("response.output_text.done", lambda t: {**where, "text": t, "logprobs": []}),
        ("response.content_part.done", lambda t: {**where, "part": _output_text(t)}),
        (
            "response.output_item.done",
            lambda t: {"output_index": 0, "item": _message_item(item_id, t, "completed")},
        ),
        (
            "response.completed" if status == "completed" else "response.incomplete",
            lambda t: {
                "response": resp.final(status, [_message_item(item_id, t, "completed")], usage)
            },
        ),
    ]
    for kind, make in closing:
        number = seq.next()

        def build(text: str, kind: str = kind, make: Any = make, number: int = number) -> object:
            return {"type": kind, "sequence_number": number, **make(text)}

        for block in sse_event_blocks(kind, build, reply):
            yield gap, block
            gap = 0.0


def _responses_tool(
    resp: _ResponseShell, tool: dict[str, Any], prompt: int, knobs: Knobs, stream: bool
) -> Plan:
    name = str(tool.get("name") or "tool")
    arguments = dumps(tool_arguments(tool.get("parameters"))).decode()
    pieces = split_fixed(arguments)
    usage = _responses_usage(prompt, len(pieces))
    item_id, call_id = new_id("fc_"), new_id("call_")

    def item(args: str, status: str) -> dict[str, Any]:
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": args,
            "call_id": call_id,
            "name": name,
        }

    final = resp.final("completed", [item(arguments, "completed")], usage)
    if not stream:
        return JsonPlan(iter([dumps(final)]), _generation_time(knobs, len(pieces)))

    def events() -> Iterator[Step]:
        seq = _Sequencer()
        shell = resp.final("in_progress", [], None)
        yield 0.0, seq.event("response.created", response=shell)
        yield 0.0, seq.event("response.in_progress", response=shell)
        added = item("", "in_progress")
        yield 0.0, seq.event("response.output_item.added", output_index=0, item=added)
        delays = _delays(knobs)
        where = {"item_id": item_id, "output_index": 0}
        for piece in pieces:
            kind = "response.function_call_arguments.delta"
            yield next(delays), seq.event(kind, **where, delta=piece)
        kind = "response.function_call_arguments.done"
        yield next(delays), seq.event(kind, **where, arguments=arguments, name=name)
        done = item(arguments, "completed")
        yield 0.0, seq.event("response.output_item.done", output_index=0, item=done)
        yield 0.0, seq.event("response.completed", response=final)

    return SsePlan(events())
