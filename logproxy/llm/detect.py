"""Which API a call is: from the path's tail, else from the request and response shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .state import short

CHAT = "openai.chat"
COMPLETIONS = "openai.completions"
EMBEDDINGS = "openai.embeddings"
RESPONSES = "openai.responses"
MESSAGES = "anthropic.messages"

#: Path tails, most specific first: any route prefix may come before them.
_TAILS = (
    ("chat/completions", CHAT),
    ("completions", COMPLETIONS),
    ("embeddings", EMBEDDINGS),
    ("responses", RESPONSES),
    ("messages", MESSAGES),
)

#: Tails that are never a generation, even with an LLM-shaped body (token counting).
_NOT_LLM = ("count_tokens", "input_tokens", "models")

#: A request body is LLM-shaped with a string ``model`` and one of these.
_SHAPE_KEYS = ("messages", "input", "prompt")


def _clean(path: str) -> str:
    return path.split("?", 1)[0].split("#", 1)[0].rstrip("/").lower()


def never_llm(path: str) -> bool:
    """``/v1/messages/count_tokens``, ``/v1/responses/input_tokens``, ``/v1/models``."""
    return _clean(path).rsplit("/", 1)[-1] in _NOT_LLM


def api_for_path(path: str) -> str | None:
    """``/openrouter/api/v1/chat/completions?x=1`` -> ``openai.chat``."""
    clean = _clean(path)
    for tail, api in _TAILS:
        if clean == tail or clean.endswith("/" + tail):
            return api
    return None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The few request facts kept (the parsed body itself is dropped at once)."""

    model: str | None = None
    stream: bool | None = None
    messages: int | None = None  # len(messages)
    inputs: int | None = None  # len(input), or 1 for a string input
    parsed: bool = False  # the body was a JSON object

    def message_count(self, api: str | None) -> int | None:
        """Messages for chat/Anthropic, input items for Responses; None otherwise."""
        if api in (CHAT, MESSAGES) or (api is None and self.messages is not None):
            return self.messages
        if api == RESPONSES:
            return self.inputs
        return None


def request_info(obj: object) -> RequestInfo:
    """Model, stream flag and message counts from a parsed request body."""
    if not isinstance(obj, dict):
        return RequestInfo()
    stream = obj.get("stream")
    messages = obj.get("messages")
    given = obj.get("input")
    inputs = len(given) if isinstance(given, list) else 1 if isinstance(given, str) else None
    return RequestInfo(
        model=short(obj.get("model")),
        stream=stream if isinstance(stream, bool) else None,
        messages=len(messages) if isinstance(messages, list) else None,
        inputs=inputs,
        parsed=True,
    )


def plausible_for_path(obj: object) -> bool:
    """A known path's body, unless it is a JSON object with nothing an LLM call has
    (e.g. an Assistants ``/threads/{id}/messages`` post: ``{"role", "content"}``)."""
    if not isinstance(obj, dict):
        return True
    return "model" in obj or any(key in obj for key in _SHAPE_KEYS)


def llm_shaped(obj: object) -> bool:
    """At an unknown path: a JSON object with a string ``model`` and messages/input/prompt."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("model"), str)
        and any(key in obj for key in _SHAPE_KEYS)
    )


def api_for_object(obj: dict[str, Any], event: str) -> str | None:
    """Recognise the API from one response object (a JSON body or an SSE event's data)."""
    kind = obj.get("type")
    if isinstance(kind, str):
        if kind.startswith("response.") or kind == "response":
            return RESPONSES
        if kind.startswith(("message_", "content_block_")) or kind == "message":
            return MESSAGES
    if event.startswith(("message_", "content_block_")):
        return MESSAGES
    if event.startswith("response."):
        return RESPONSES
    marker = obj.get("object")
    if marker in ("chat.completion", "chat.completion.chunk"):
        return CHAT
    if marker == "text_completion":
        return COMPLETIONS
    if marker == "response":
        return RESPONSES
    data = obj.get("data")
    if marker == "list" and isinstance(data, list):
        if data and isinstance(data[0], dict) and data[0].get("object") == "embedding":
            return EMBEDDINGS
        return None
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        if "delta" in first or "message" in first:
            return CHAT
        if "text" in first:
            return COMPLETIONS
    return None
