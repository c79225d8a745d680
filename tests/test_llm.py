"""logproxy.llm: API recognition and the SPEC §8 ``llm`` block, from recorded-shape fixtures.

Each ``tests/fixtures/llm/<name>.case.json`` names a request, a response body
file and the exact expected block; every case is fed in several chunkings
(and, for SSE, with CRLF and CR line endings) and must give the same result.
In these runs headers arrive at 120 ms and every body chunk at 250 ms, so
``ttfb_ms`` is 120.0 and ``ttft_ms`` 250.0 (or null).
"""

from __future__ import annotations

import gzip
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logproxy.llm import Observer, api_for_path, observe
from logproxy.llm.buffers import BODY_CAP, TEXT_CAP
from logproxy.llm.sse import SseParser

FIXTURES = Path(__file__).parent / "fixtures" / "llm"
CASES = sorted(p.name.removesuffix(".case.json") for p in FIXTURES.glob("*.case.json"))
SSE_CASES = [c for c in CASES if (FIXTURES / f"{c}.response.sse").exists()]

SPEC_KEYS = {
    "api",
    "model",
    "response_model",
    "stream",
    "finish_reason",
    "usage",
    "ttfb_ms",
    "ttft_ms",
    "output_text",
    "tool_calls",
    "partial",
}
EXTRA_KEYS = {"message_count", "provider_hint", "error", "output_truncated", "warnings"}
USAGE_KEYS = {
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "reasoning_tokens",
    "cost",
}
HEADERS_AT = 120.0
BODY_AT = 250.0


class Case:
    def __init__(self, name: str) -> None:
        self.name = name
        meta = json.loads((FIXTURES / f"{name}.case.json").read_text())
        self.meta = meta
        self.method: str = meta["method"]
        self.path: str = meta["path"]
        self.request_type: str | None = meta["request_content_type"]
        self.request = json.dumps(meta["request"]).encode()
        self.status: int = meta["status"]
        self.content_type: str | None = meta["content_type"]
        self.complete: bool = meta["complete"]
        self.expected: dict[str, Any] | None = meta["expected"]
        body = (FIXTURES / meta["response_file"]).read_bytes()
        for marker, size in meta.get("expand", {}).items():
            body = body.replace(marker.encode(), b"x" * size)
        self.response = body


def split(data: bytes, how: str) -> list[bytes]:
    """``whole``, ``bytes`` (1-byte chunks; 4 KiB for big bodies) or ``seedN`` random cuts."""
    if how == "whole" or not data:
        return [data]
    if how == "bytes":
        step = 1 if len(data) <= 64 * 1024 else 4096
        return [data[i : i + step] for i in range(0, len(data), step)]
    rng = random.Random(how)
    mean = max(2, len(data) // 500)
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.choice((1, 2, 3, rng.randint(1, 2 * mean)))
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def run(
    case: Case,
    how: str = "whole",
    body: bytes | None = None,
    at: Callable[[int], float] = lambda _: BODY_AT,
) -> tuple[Observer | None, dict[str, Any] | None]:
    obs = observe(case.method, case.path, case.request_type)
    if obs is None:
        return None, None
    for chunk in split(case.request, how):
        obs.feed_request(chunk)
    obs.end_request()
    obs.start_response(case.status, case.content_type, HEADERS_AT)
    for index, chunk in enumerate(split(case.response if body is None else body, how)):
        obs.feed_response(chunk, at(index))
    return obs, obs.result(case.complete)


def check_shape(result: dict[str, Any]) -> None:
    assert set(result) == SPEC_KEYS | EXTRA_KEYS
    assert set(result["usage"]) == USAGE_KEYS
    for call in result["tool_calls"]:
        assert set(call) == {"id", "name", "arguments"}
    json.dumps(result, allow_nan=False)  # it goes into a metadata file as is


# --------------------------------------------------------------------------- fixtures


@pytest.mark.parametrize("how", ["whole", "bytes", "seed1", "seed2", "seed3"])
@pytest.mark.parametrize("name", CASES)
def test_fixture(name: str, how: str) -> None:
    case = Case(name)
    _, result = run(case, how)
    assert result == case.expected
    if result is not None:
        check_shape(result)
        assert "internal_error" not in result["warnings"]


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
@pytest.mark.parametrize("how", ["whole", "seed4", "seed5"])
@pytest.mark.parametrize("name", SSE_CASES)
def test_sse_line_endings(name: str, how: str, ending: bytes) -> None:
    case = Case(name)
    _, result = run(case, how, body=case.response.replace(b"\n", ending))
    assert result == case.expected


def test_fixture_list_covers_the_brief() -> None:
    """Every API, streamed and not, plus the failure shapes."""
    apis = {}
    for name in CASES:
        case = Case(name)
        if case.expected is not None:
            apis.setdefault(case.expected["api"], set()).add(case.expected["stream"])
    assert apis["openai.chat"] == {True, False}
    assert apis["openai.completions"] == {True, False}
    assert apis["openai.responses"] == {True, False}
    assert apis["anthropic.messages"] == {True, False}
    assert apis["openai.embeddings"] == {False}
    assert {"malformed_sse", "openai_chat_stream_cut", "unknown_json_api"} <= set(CASES)


# --------------------------------------------------------------------------- timing


def _events(body: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in body.split(b"\n\n") if e]


@pytest.mark.parametrize(
    ("name", "first_content"),
    [
        ("openai_chat_stream", 1),  # event 0 is the role chunk with content ""
        ("openai_chat_stream_tools", 0),  # the first tool-call delta (id and name)
        ("openai_completions_stream", 0),
        ("openai_responses_stream", 4),  # after created, in_progress, item/part added
        ("anthropic_messages_stream", 8),  # thinking, signature and ping do not count
        ("openrouter_chat_stream", 3),  # after two comments and an empty delta
    ],
)
def test_ttft_is_the_event_with_the_first_content_token(name: str, first_content: int) -> None:
    case = Case(name)
    events = _events(case.response)
    obs = observe(case.method, case.path, case.request_type)
    assert obs is not None
    obs.feed_request(case.request)
    obs.end_request()
    obs.start_response(200, case.content_type, 50.0)
    for index, event in enumerate(events):
        obs.feed_response(event, 100.0 + 10 * index)
    result = obs.result(True)
    assert result is not None
    assert result["ttfb_ms"] == 50.0
    assert result["ttft_ms"] == 100.0 + 10 * first_content


def test_ttft_counts_when_the_event_is_complete() -> None:
    """An event whose closing blank line arrives later is dispatched (and timed) then."""
    obs = observe("POST", "/v1/chat/completions", "application/json")
    assert obs is not None
    obs.start_response(200, "text/event-stream", 10.0)
    obs.feed_response(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n', 20.0)
    obs.feed_response(b"\n", 30.0)
    result = obs.result(True)
    assert result is not None
    assert (result["ttft_ms"], result["output_text"]) == (30.0, "Hi")


def test_non_streamed_ttft_is_the_first_body_byte() -> None:
    case = Case("openai_chat")
    _, result = run(case, "seed7", at=lambda index: 300.0 + index)
    assert result is not None
    assert (result["ttfb_ms"], result["ttft_ms"]) == (HEADERS_AT, 300.0)


def test_ttfb_without_start_response_is_the_first_body_chunk() -> None:
    case = Case("openai_chat")
    obs = observe(case.method, case.path, case.request_type)
    assert obs is not None
    obs.feed_request(case.request)
    obs.end_request()
    obs.feed_response(case.response, 77.77)
    result = obs.result(True)
    assert result is not None
    assert (result["ttfb_ms"], result["ttft_ms"], result["partial"]) == (77.8, 77.8, False)


# --------------------------------------------------------------------------- usage rules


def _anthropic_stream(*events: dict[str, Any]) -> dict[str, Any]:
    obs = observe("POST", "/v1/messages", "application/json")
    assert obs is not None
    obs.feed_request(b'{"model":"claude-x","stream":true,"messages":[]}')
    obs.end_request()
    obs.start_response(200, "text/event-stream", 1.0)
    for event in events:
        kind = event["type"]
        obs.feed_response(f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode(), 2.0)
    result = obs.result(True)
    assert result is not None
    return result


def test_anthropic_output_tokens_come_from_the_last_message_delta() -> None:
    start = {"input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 1}
    result = _anthropic_stream(
        {"type": "message_start", "message": {"model": "claude-x-1", "usage": start}},
        {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 7}},
        # cumulative: a restated input count may grow, a zero (some gateways) is no news
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 25, "input_tokens": 0, "cache_creation_input_tokens": 5},
        },
        {"type": "message_stop"},
    )
    assert result["finish_reason"] == "end_turn"
    assert result["usage"] == {
        "input_tokens": 115,
        "output_tokens": 25,
        "total_tokens": 140,
        "cached_input_tokens": 100,
        "cache_write_input_tokens": 5,
        "reasoning_tokens": None,
        "cost": None,
    }


def test_anthropic_without_message_start_usage_leaves_input_unknown() -> None:
    result = _anthropic_stream(
        {"type": "message_start", "message": {"model": "claude-x-1"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 3},
        },
        {"type": "message_stop"},
    )
    assert result["usage"]["input_tokens"] is None
    assert result["usage"]["output_tokens"] == 3
    assert result["usage"]["total_tokens"] is None


@pytest.mark.parametrize(
    ("name", "line"),
    [
        (
            "openai_chat",
            "[USAGE] prompt_tokens=1117 completion_tokens=10 total_tokens=1127"
            " cached_tokens=1024 reasoning_tokens=0",
        ),
        ("openai_chat_stream", None),
        (
            "anthropic_messages",
            "[USAGE] prompt_tokens=9242 completion_tokens=87 total_tokens=9329"
            " cached_tokens=8000 cache_write_tokens=1200",
        ),
        (
            "openrouter_chat",
            "[USAGE] prompt_tokens=14 completion_tokens=4 total_tokens=18"
            " cached_tokens=0 reasoning_tokens=0 cost=4.5e-06",
        ),
        ("openai_embeddings", "[USAGE] prompt_tokens=12 total_tokens=12"),
        ("unknown_json_api", None),
    ],
)
def test_usage_line(name: str, line: str | None) -> None:
    obs, _ = run(Case(name), "seed1")
    assert obs is not None
    assert obs.usage_line() == line


def test_usage_line_before_result_sees_the_stream_so_far() -> None:
    case = Case("openai_chat_stream_usage")
    obs = observe(case.method, case.path, case.request_type)
    assert obs is not None
    obs.feed_request(case.request)
    obs.end_request()
    obs.start_response(200, case.content_type, 1.0)
    obs.feed_response(case.response, 2.0)
    assert obs.usage_line() is not None
    assert obs.usage_line() == obs.usage_line()


def _stream(path: str, *events: str) -> dict[str, Any]:
    obs = observe("POST", path, "application/json")
    assert obs is not None
    obs.feed_request(b'{"model":"m","stream":true,"messages":[],"input":"hi"}')
    obs.end_request()
    obs.start_response(200, "text/event-stream", 1.0)
    for event in events:
        obs.feed_response(event.encode() + b"\n\n", 2.0)
    result = obs.result(True)
    assert result is not None
    return result


def test_openai_error_chunk_mid_stream() -> None:
    """OpenRouter (and OpenAI) report a failure mid-stream as a chunk with ``error``."""
    result = _stream(
        "/api/v1/chat/completions",
        'data: {"object":"chat.completion.chunk","model":"x/y","provider":"Groq",'
        '"choices":[{"index":0,"delta":{"content":"Par"},"finish_reason":null}]}',
        'data: {"object":"chat.completion.chunk","error":{"code":502,"message":"Provider '
        'disconnected"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}',
    )
    assert (result["error"], result["finish_reason"]) == ("Provider disconnected", "error")
    assert (result["output_text"], result["provider_hint"], result["partial"]) == (
        "Par",
        "openrouter",
        False,
    )


def test_responses_failed_and_error_events() -> None:
    failed = {
        "type": "response.failed",
        "response": {
            "model": "gpt-5",
            "status": "failed",
            "error": {"code": "server_error", "message": "The model had an error"},
            "output": [],
            "usage": None,
        },
    }
    result = _stream(
        "/v1/responses",
        'event: response.created\ndata: {"type":"response.created","response":'
        '{"model":"gpt-5","status":"in_progress","output":[]}}',
        f"event: response.failed\ndata: {json.dumps(failed)}",
    )
    assert (result["finish_reason"], result["error"], result["partial"]) == (
        "failed",
        "The model had an error",
        False,
    )
    result = _stream(
        "/v1/responses",
        'event: error\ndata: {"type":"error","code":"rate_limit_exceeded",'
        '"message":"Slow down","param":null}',
    )
    assert (result["error"], result["partial"]) == ("Slow down", True)
    assert result["warnings"] == ["no_end_of_stream"]


def test_responses_stream_without_deltas_takes_the_final_output() -> None:
    """Some compatible servers send only the final ``response.completed``."""
    final = json.loads(Case("openai_responses").response)
    event = json.dumps({"type": "response.completed", "response": final})
    result = _stream("/v1/responses", f"event: response.completed\ndata: {event}")
    assert result["output_text"] == "Paris is the capital of France."
    assert result["usage"]["reasoning_tokens"] == 256
    assert result["ttft_ms"] == 2.0  # the text came with the final event


# --------------------------------------------------------------------------- the project's mock


def _mock_bytes(plan: Any) -> bytes:
    from logproxy.mockllm._common import SsePlan

    if isinstance(plan, SsePlan):
        return b"".join(block for _, block in plan.events)
    return b"".join(plan.blocks)


_TOOL = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("path", "builder", "body", "tool"),
    [
        ("/v1/chat/completions", "chat_completions", {"messages": "m"}, None),
        (
            "/v1/chat/completions",
            "chat_completions",
            {
                "messages": "m",
                "tools": [
                    {"type": "function", "function": {"name": "lookup", "parameters": _TOOL}}
                ],
            },
            "lookup",
        ),
        ("/v1/completions", "completions", {"prompt": "say hi please"}, None),
        ("/v1/responses", "responses", {"input": "m"}, None),
        (
            "/v1/responses",
            "responses",
            {"input": "m", "tools": [{"type": "function", "name": "find", "parameters": _TOOL}]},
            "find",
        ),
        ("/v1/messages", "messages", {"messages": "m", "max_tokens": 50}, None),
        (
            "/v1/messages",
            "messages",
            {
                "messages": "m",
                "max_tokens": 50,
                "tools": [{"name": "fetch", "input_schema": _TOOL}],
            },
            "fetch",
        ),
    ],
)
def test_against_the_mock_server(
    path: str, builder: str, body: dict[str, Any], tool: str | None, stream: bool
) -> None:
    """The mock (logproxy.mockllm) streams exactly like the real APIs: all of it is understood."""
    from logproxy.mockllm import MODEL_SUFFIX, Knobs, _anthropic, _openai, expected_text

    words = "please call a tool" if tool else "say hi please"
    request = {k: v for k, v in body.items() if v != "m"}
    if body.get("messages") == "m":
        request["messages"] = [{"role": "user", "content": words}]
    if body.get("input") == "m":
        request["input"] = [{"role": "user", "content": words}]
    request.update(model="claude-haiku-4-5" if builder == "messages" else "gpt-4o-mini")
    request.update(stream=stream, stream_options={"include_usage": True})
    module = _anthropic if builder == "messages" else _openai
    plan = getattr(module, builder)(request, Knobs(chunks=7), 1_700_000_000)
    obs = observe("POST", path, "application/json")
    assert obs is not None
    obs.feed_request(json.dumps(request).encode())
    obs.end_request()
    obs.start_response(200, "text/event-stream" if stream else "application/json", 1.0)
    for chunk in split(_mock_bytes(plan), "seed9"):
        obs.feed_response(chunk, 2.0)
    result = obs.result(True)
    assert result is not None
    check_shape(result)
    assert (result["partial"], result["warnings"], result["error"]) == (False, [], None)
    assert result["stream"] is stream
    suffix = "" if builder == "messages" else MODEL_SUFFIX
    assert result["response_model"] == request["model"] + suffix
    usage = result["usage"]
    assert usage["input_tokens"] == len(words.split())  # the mock counts words
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    if tool is None:
        assert result["output_text"] == expected_text(7)
        assert usage["output_tokens"] == 7
        assert result["tool_calls"] == []
    else:
        assert result["output_text"] is None
        [call] = result["tool_calls"]
        assert (call["name"], json.loads(call["arguments"])) == (tool, {"q": "mock"})
        assert call["id"].startswith(("call_", "toolu_"))
    assert result["ttft_ms"] == 2.0


def test_against_the_mock_embeddings() -> None:
    from logproxy.mockllm import Knobs, _openai

    request = {"model": "text-embedding-3-small", "input": ["one two", "three"]}
    plan = _openai.embeddings(request, Knobs(), 1_700_000_000)
    obs = observe("POST", "/v1/embeddings", "application/json")
    assert obs is not None
    obs.feed_request(json.dumps(request).encode())
    obs.end_request()
    obs.start_response(200, "application/json", 1.0)
    obs.feed_response(_mock_bytes(plan), 2.0)
    result = obs.result(True)
    assert result is not None
    assert (result["api"], result["usage"]["input_tokens"], result["partial"]) == (
        "openai.embeddings",
        3,
        False,
    )


# --------------------------------------------------------------------------- recognition


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/chat/completions", "openai.chat"),
        ("/openrouter/api/v1/chat/completions", "openai.chat"),
        ("/lmstudio/chat/completions?foo=1", "openai.chat"),
        ("/v1/chat/completions/", "openai.chat"),
        ("/v1/completions", "openai.completions"),
        ("/v1/engines/davinci/completions", "openai.completions"),
        ("/azure/openai/deployments/gpt4o/embeddings?api-version=2024-10-21", "openai.embeddings"),
        ("/v1/responses", "openai.responses"),
        ("/anthropic/v1/messages", "anthropic.messages"),
        ("/v1/messages/count_tokens", None),
        ("/v1/responses/resp_123", None),
        ("/v1/models", None),
        ("/static/app.js", None),
    ],
)
def test_api_for_path(path: str, api: str | None) -> None:
    assert api_for_path(path) == api


@pytest.mark.parametrize(
    ("method", "path", "content_type", "watched"),
    [
        ("POST", "/v1/chat/completions", "application/json", True),
        ("POST", "/v1/chat/completions", None, True),
        ("post", "/v1/messages", "text/plain", True),  # a known path: content type is not trusted
        ("GET", "/static/app.js", None, False),
        ("GET", "/", "text/html", False),
        ("OPTIONS", "/v1/chat/completions", None, False),
        ("HEAD", "/v1/chat/completions", None, False),
        ("POST", "/upload", "multipart/form-data; boundary=x", False),
        ("POST", "/api/generate", "application/json; charset=utf-8", True),  # decided by body
        ("POST", "/v1/messages/count_tokens", "application/json", False),
        ("POST", "/v1/responses/input_tokens", "application/json", False),
        ("GET", "/v1/chat/completions", None, True),  # listing stored completions: body decides
    ],
)
def test_observe_candidates(
    method: str, path: str, content_type: str | None, watched: bool
) -> None:
    assert (observe(method, path, content_type) is not None) == watched


def test_get_without_a_body_is_not_an_llm_call() -> None:
    obs = observe("GET", "/v1/chat/completions?limit=10", None)
    assert obs is not None
    obs.end_request()
    obs.start_response(200, "application/json", 5.0)
    obs.feed_response(b'{"object":"list","data":[]}', 6.0)
    assert obs.result(True) is None
    assert obs.usage_line() is None


def test_unknown_path_with_a_non_object_body_is_rejected_at_once() -> None:
    obs = observe("POST", "/rpc", "application/json")
    assert obs is not None
    obs.feed_request(b'  ["model", "messages"]')
    obs.end_request()
    obs.start_response(200, "application/json", 1.0)
    obs.feed_response(b"{}", 2.0)
    assert obs.result(True) is None


def test_shape_recognised_embeddings_vs_responses_by_answer() -> None:
    """``{"model", "input"}`` is both Embeddings and Responses: the answer decides."""
    obs = observe("POST", "/embed-gateway", "application/json")
    assert obs is not None
    obs.feed_request(b'{"model":"text-embedding-3-large","input":["a","b"]}')
    obs.end_request()
    obs.start_response(200, "application/json", 1.0)
    obs.feed_response(Case("openai_embeddings").response, 2.0)
    result = obs.result(True)
    assert result is not None
    assert (result["api"], result["message_count"]) == ("openai.embeddings", None)
    assert result["usage"]["input_tokens"] == 12


def test_response_content_type_missing_is_sniffed() -> None:
    """No content type: ``data:`` starts an SSE stream, ``{`` a JSON body."""
    for name in ("openai_chat_stream", "openai_chat"):
        case = Case(name)
        case.content_type = None
        _, result = run(case, "bytes")
        assert result == case.expected


def test_gzip_must_be_decoded_by_the_caller() -> None:
    """Compressed bytes are not an answer: flagged, never a crash."""
    case = Case("openai_chat")
    _, result = run(case, "seed2", body=gzip.compress(case.response))
    assert result is not None
    assert result["partial"] is True
    assert result["usage"]["input_tokens"] is None
    assert "response_not_json" in result["warnings"]


# --------------------------------------------------------------------------- bounds


def test_output_text_is_capped() -> None:
    obs = observe("POST", "/v1/chat/completions", None)
    assert obs is not None
    obs.start_response(200, "text/event-stream", 1.0)
    piece = json.dumps({"choices": [{"index": 0, "delta": {"content": "y" * 1000}}]})
    event = f"data: {piece}\n\n".encode()
    for _ in range(TEXT_CAP // 1000 + 50):
        obs.feed_response(event, 2.0)
    obs.feed_response(b"data: [DONE]\n\n", 3.0)
    result = obs.result(True)
    assert result is not None
    assert len(result["output_text"]) == TEXT_CAP
    assert result["output_truncated"] is True
    assert result["partial"] is False


def test_tool_call_arguments_share_one_cap() -> None:
    obs = observe("POST", "/v1/chat/completions", None)
    assert obs is not None
    obs.start_response(200, "text/event-stream", 1.0)
    for call in range(4):
        for _ in range(TEXT_CAP // 3000 + 1):
            delta = {"tool_calls": [{"index": call, "function": {"arguments": "a" * 1000}}]}
            chunk = {"choices": [{"index": 0, "delta": delta}]}
            obs.feed_response(f"data: {json.dumps(chunk)}\n\n".encode(), 2.0)
    result = obs.result(True)
    assert result is not None
    sizes = [len(call["arguments"]) for call in result["tool_calls"]]
    assert sum(sizes) == TEXT_CAP
    assert sizes[3] == 0 and sizes[0] > TEXT_CAP // 3
    assert result["output_truncated"] is True


def test_sse_parser_bounds_its_line_buffer() -> None:
    parser = SseParser(max_line=16)
    events = []
    for byte in b"data: " + b"z" * 100 + b"\n\ndata: ok\n\n":
        events += parser.feed(bytes([byte]))
        assert parser.pending <= 16
    assert [e.data for e in events] == [b"ok"]
    assert parser.problems == {"line_too_long": 1}


def test_sse_parser_bounds_multi_line_event_data() -> None:
    parser = SseParser(max_line=16)
    events = parser.feed(b"data: 0123456789\ndata: 0123456789\n\ndata: ok\n\n")
    assert [e.data for e in events] == [b"ok"]
    assert parser.problems == {"event_too_large": 1}


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: a\ndata: b\n\n", [("message", b"a\nb")]),
        (b"event: ping\ndata: {}\n\n", [("ping", b"{}")]),
        (b": keep-alive\n\ndata:x\n\n", [("message", b"x")]),
        (b"id: 7\nretry: 10\ndata:  two spaces\n\n", [("message", b" two spaces")]),
        (b"\xef\xbb\xbfdata: bom\n\n", [("message", b"bom")]),
        (b"event: lonely\n\n", []),  # no data: nothing to dispatch
        (b"data: a\r\rdata: b\r\n\r\n", [("message", b"a"), ("message", b"b")]),
        (b"data\n\n", [("message", b"")]),
    ],
)
def test_sse_parser_framing(stream: bytes, expected: list[tuple[str, bytes]]) -> None:
    for how in ("whole", "bytes", "seed1"):
        parser = SseParser()
        events = [e for chunk in split(stream, how) for e in parser.feed(chunk)]
        events += parser.close(whole=True)
        assert [(e.name, e.data) for e in events] == expected


def test_sse_parser_close() -> None:
    """A stream ending without its blank line still yields its last event; a cut partial
    line is dropped unless the stream ended whole."""
    parser = SseParser()
    parser.feed(b"data: one\n")
    assert [e.data for e in parser.close(whole=False)] == [b"one"]
    parser = SseParser()
    parser.feed(b"data: one\n\ndata: tw")
    assert parser.close(whole=False) == []
    parser = SseParser()
    parser.feed(b"data: [DONE]")
    assert [e.data for e in parser.close(whole=True)] == [b"[DONE]"]


def test_request_over_the_cap_keeps_model_and_stream() -> None:
    obs = observe("POST", "/v1/chat/completions", "application/json")
    assert obs is not None
    filler = "z" * (BODY_CAP + (1 << 20))
    tool = {"name": "pick", "parameters": {"properties": {"model": {"type": "string"}}}}
    body = json.dumps(  # the order the OpenAI SDK sends: messages first
        {
            "messages": [{"role": "user", "content": filler}],
            "model": "gpt-4o",
            "stream": True,
            "tools": [{"type": "function", "function": tool}],  # a nested "model" key
        }
    ).encode()
    for i in range(0, len(body), 1 << 20):
        obs.feed_request(body[i : i + (1 << 20)])
    obs.end_request()
    case = Case("openai_chat_stream")
    obs.start_response(200, case.content_type, 1.0)
    obs.feed_response(case.response, 2.0)
    result = obs.result(True)
    assert result is not None
    assert (result["model"], result["stream"], result["message_count"]) == ("gpt-4o", True, None)
    assert result["output_text"] == "Hello! How can I help?"
    assert result["warnings"] == ["request_over_cap"]
    assert result["partial"] is False


def test_response_over_the_cap_keeps_model_and_usage() -> None:
    """A huge embeddings answer: too big to parse, but usage is salvaged from its tail."""
    vector = json.dumps([0.0123456789] * 1536).encode()
    item = b'{"object":"embedding","index":0,"embedding":' + vector + b"}"
    data = b",".join([item] * (BODY_CAP // len(item) + 20))
    body = (
        b'{"object":"list","data":[' + data + b'],"model":"text-embedding-3-small",'
        b'"usage":{"prompt_tokens":9000,"total_tokens":9000}}'
    )
    assert len(body) > BODY_CAP
    obs = observe("POST", "/v1/embeddings", "application/json")
    assert obs is not None
    obs.feed_request(b'{"model":"text-embedding-3-small","input":["x"]}')
    obs.end_request()
    obs.start_response(200, "application/json", 1.0)
    for i in range(0, len(body), 65536):
        obs.feed_response(body[i : i + 65536], 2.0)
    result = obs.result(True)
    assert result is not None
    assert result["response_model"] == "text-embedding-3-small"
    assert result["usage"]["input_tokens"] == 9000
    assert result["usage"]["total_tokens"] == 9000
    assert result["warnings"] == ["response_over_cap"]
    assert result["partial"] is False


def _chat_stream(events: int) -> list[bytes]:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m"}
    chunks = []
    for i in range(events):
        delta = {"content": f" w{i}"}
        if i % 50 == 0:  # a tool call growing throughout, too
            delta["tool_calls"] = [{"index": 0, "function": {"arguments": f"{i},"}}]
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        chunks.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def _feed_time(chunks: list[bytes]) -> float:
    best = math.inf
    for _ in range(3):
        obs = observe("POST", "/v1/chat/completions", None)
        assert obs is not None
        obs.start_response(200, "text/event-stream", 1.0)
        started = time.perf_counter()
        for chunk in chunks:
            obs.feed_response(chunk, 2.0)
        result = obs.result(True)
        best = min(best, time.perf_counter() - started)
        assert result is not None
        assert result["partial"] is False
    return best


def test_per_chunk_cost_does_not_grow_with_the_stream() -> None:
    small = _feed_time(_chat_stream(1_000))
    large = _feed_time(_chat_stream(10_000))
    assert large / small < 20  # 10x the events; quadratic work would be ~100x


# --------------------------------------------------------------------------- robustness


def test_result_is_repeatable_and_ends_observation() -> None:
    case = Case("openai_chat_stream_cut")
    obs, first = run(case, "seed3")
    assert obs is not None
    assert obs.result(False) == first
    obs.feed_response(b'data: {"choices":[{"index":0,"delta":{"content":"late"}}]}\n\n', 9.0)
    again = obs.result(False)
    assert again is not None and first is not None
    assert again["output_text"] == first["output_text"]
    assert "data_after_result" in again["warnings"]


def test_complete_flag_marks_a_cut_stream_partial() -> None:
    case = Case("openai_chat_stream")
    case.complete = False
    _, result = run(case)
    assert result is not None
    assert (result["partial"], result["warnings"]) == (True, ["cut"])
    assert result["output_text"] == "Hello! How can I help?"


def test_no_response_at_all() -> None:
    case = Case("openai_chat")
    obs = observe(case.method, case.path, case.request_type)
    assert obs is not None
    obs.feed_request(case.request)
    obs.end_request()
    result = obs.result(False)
    assert result is not None
    assert result["model"] == "gpt-4o-mini"
    assert (result["partial"], result["ttfb_ms"], result["response_model"]) == (True, None, None)
    assert result["warnings"] == ["cut", "no_response"]


def test_lone_surrogates_are_replaced() -> None:
    """``"\\ud800"`` is valid JSON but not encodable as UTF-8: the block must stay writable."""
    obs = observe("POST", "/v1/chat/completions", None)
    assert obs is not None
    obs.feed_request(b'{"model":"m\\ud800","messages":[]}')
    obs.end_request()
    obs.start_response(200, "text/event-stream", 1.0)
    delta = b'{"content":"a\\udc00b","tool_calls":[{"index":0,"id":"c\\ud801","function":{}}]}'
    obs.feed_response(b'data: {"choices":[{"index":0,"delta":' + delta + b"}]}\n\n", 2.0)
    result = obs.result(False)
    assert result is not None
    json.dumps(result, ensure_ascii=False).encode("utf-8")
    assert (result["model"], result["output_text"]) == ("m?", "a?b")


def test_methods_are_total_on_odd_input() -> None:
    obs = observe("POST", "/v1/chat/completions", None)
    assert obs is not None
    obs.feed_request(b"\xff\xfe not json")
    obs.end_request()
    obs.end_request()
    obs.start_response("200", 17, None)  # type: ignore[arg-type]
    obs.feed_response(b"data: {}\n\n", None)  # type: ignore[arg-type]
    obs.feed_response(bytearray(b"data: [DONE]\n\n"), 3.0)
    result = obs.result(True)
    assert result is not None
    check_shape(result)
    assert observe(None, "/x", None) is None  # type: ignore[arg-type]


def _stream_bytes() -> Iterator[bytes]:
    for name in (
        "openai_chat_stream_tools",
        "anthropic_messages_stream",
        "openai_responses_stream",
    ):
        yield Case(name).response


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(["/v1/chat/completions", "/v1/messages", "/v1/responses", "/x"]),
    ctype=st.sampled_from(["text/event-stream", "application/json", None]),
    request=st.binary(max_size=200),
    chunks=st.lists(st.binary(max_size=64), max_size=30),
    complete=st.booleans(),
)
def test_arbitrary_bytes_never_raise(
    path: str, ctype: str | None, request: bytes, chunks: list[bytes], complete: bool
) -> None:
    obs = observe("POST", path, None)
    if obs is None:
        return
    obs.feed_request(b'{"model":"m","messages":[]}' if path == "/x" else request)
    obs.end_request()
    obs.start_response(200, ctype, 1.0)
    for chunk in chunks:
        obs.feed_response(chunk, 2.0)
    result = obs.result(complete)
    obs.usage_line()
    if result is not None:
        check_shape(result)
        assert "internal_error" not in result["warnings"]


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_fixture_streams_with_injected_damage_never_raise(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(list(_stream_bytes())))
    cut = data.draw(st.integers(0, len(body)))
    junk = data.draw(st.binary(max_size=40))
    obs = observe("POST", "/v1/chat/completions", None)
    assert obs is not None
    obs.start_response(200, "text/event-stream", 1.0)
    obs.feed_response(body[:cut] + junk + body[cut:], 2.0)
    result = obs.result(data.draw(st.booleans()))
    assert result is not None
    check_shape(result)
    assert "internal_error" not in result["warnings"]
