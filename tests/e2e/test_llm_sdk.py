"""Every API the proxy understands, called with the official SDKs through a real twistd
proxy: the response metadata carries the right ``llm`` block (SPEC section 8)."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from .conftest import Logproxy

pytestmark = pytest.mark.e2e

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello proxy"}]
REPLY = "word1 word2 word3"
MOCK = {"mock": {"chunks": 3}}


def llm_of(proxy: Logproxy, capture_id: str) -> dict[str, Any]:
    llm = proxy.capture(capture_id).response_meta["llm"]
    assert isinstance(llm, dict)
    return llm


def test_chat_completions_stream_with_usage(proxy: Logproxy, oai: openai.OpenAI) -> None:
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=CHAT,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
        extra_body=MOCK,
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        capture_id = response.headers["x-logproxy-id"]
    assert text == REPLY
    llm = llm_of(proxy, capture_id)
    assert (llm["api"], llm["model"], llm["stream"]) == ("openai.chat", "gpt-4o-mini", True)
    assert llm["response_model"] == "gpt-4o-mini-mock-2025"
    assert llm["output_text"] == REPLY and llm["finish_reason"] == "stop"
    assert llm["usage"]["output_tokens"] == 3 and llm["usage"]["total_tokens"] is not None
    assert llm["message_count"] == 2 and llm["partial"] is False
    assert 0 < llm["ttfb_ms"] <= llm["ttft_ms"]


def test_chat_completions_with_tool_calls(proxy: Logproxy, oai: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "please call a tool"}],
    )
    completion = raw.parse()
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    llm = llm_of(proxy, raw.headers["x-logproxy-id"])
    assert llm["finish_reason"] == "tool_calls"
    assert llm["tool_calls"] == [
        {"id": call.id, "name": "get_weather", "arguments": call.function.arguments}  # type: ignore[union-attr]
    ]


def test_legacy_completions(proxy: Logproxy, oai: openai.OpenAI) -> None:
    raw = oai.completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt="say hi", extra_body=MOCK
    )
    assert raw.parse().choices[0].text == REPLY
    llm = llm_of(proxy, raw.headers["x-logproxy-id"])
    assert llm["api"] == "openai.completions" and llm["output_text"] == REPLY
    assert llm["usage"]["output_tokens"] == 3


def test_embeddings(proxy: Logproxy, oai: openai.OpenAI) -> None:
    raw = oai.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["one", "two"]
    )
    assert len(raw.parse().data) == 2
    llm = llm_of(proxy, raw.headers["x-logproxy-id"])
    assert llm["api"] == "openai.embeddings" and llm["model"] == "text-embedding-3-small"
    assert llm["usage"]["input_tokens"] is not None and llm["output_text"] is None


def test_responses_api_stream(proxy: Logproxy, oai: openai.OpenAI) -> None:
    with oai.responses.with_streaming_response.create(
        model="gpt-4.1-mini", input="hello proxy", stream=True, extra_body=MOCK
    ) as response:
        events = list(response.parse())
        capture_id = response.headers["x-logproxy-id"]
    assert events[-1].type == "response.completed"
    llm = llm_of(proxy, capture_id)
    assert (llm["api"], llm["stream"], llm["finish_reason"]) == (
        "openai.responses",
        True,
        "completed",
    )
    assert llm["output_text"] == REPLY and llm["usage"]["output_tokens"] == 3


def test_openrouter_extras(proxy: Logproxy, oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini",
        messages=CHAT,
        extra_body={"mock": {"chunks": 3, "openrouter": True}},
    )
    llm = llm_of(proxy, raw.headers["x-logproxy-id"])
    assert llm["provider_hint"] == "openrouter"
    usage = llm["usage"]  # the mock charges 1e-6 per token
    assert usage["cost"] == pytest.approx(usage["total_tokens"] * 1e-6)


def test_anthropic_messages_stream(proxy: Logproxy, claude: anthropic.Anthropic) -> None:
    with claude.messages.with_streaming_response.create(
        model="claude-sonnet-4-6",
        max_tokens=100,
        stream=True,
        messages=[{"role": "user", "content": "hello proxy"}],
        extra_body=MOCK,
    ) as response:
        list(response.iter_lines())
        capture_id = response.headers["x-logproxy-id"]
    llm = llm_of(proxy, capture_id)
    assert (llm["api"], llm["stream"], llm["finish_reason"]) == (
        "anthropic.messages",
        True,
        "end_turn",
    )
    assert llm["output_text"] == REPLY
    assert llm["usage"]["input_tokens"] == 2 and llm["usage"]["output_tokens"] == 3
    assert llm["usage"]["cached_input_tokens"] == 0


def test_anthropic_messages_plain(proxy: Logproxy, claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "hello proxy"}],
        extra_body=MOCK,
    )
    assert raw.parse().content[0].text == REPLY  # type: ignore[union-attr]
    llm = llm_of(proxy, raw.headers["x-logproxy-id"])
    assert llm["api"] == "anthropic.messages" and llm["stream"] is False
    assert llm["usage"]["total_tokens"] == 5


def test_models_list_is_not_an_llm_call(proxy: Logproxy, oai: openai.OpenAI) -> None:
    raw = oai.models.with_raw_response.list()
    meta = proxy.capture(raw.headers["x-logproxy-id"]).response_meta
    assert meta.get("llm") is None
