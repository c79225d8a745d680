"""Token usage in one shape, whatever the API called it.

``input_tokens`` always counts all input, cached included; values an API
did not report stay ``None`` (never guessed), except ``total_tokens``, which
is input + output when the API gave both but no total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def count(value: object) -> int | None:
    """A token count: a non-negative int (JSON ``true`` is not one)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def number(value: object) -> float | int | None:
    """A finite number (a cost); ``NaN`` would make the metadata invalid JSON."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _sub(usage: dict[str, Any], name: str, key: str) -> int | None:
    details = usage.get(name)
    return count(details.get(key)) if isinstance(details, dict) else None


@dataclass(slots=True)
class Usage:
    input: int | None = None
    output: int | None = None
    total: int | None = None
    cached: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None
    cost: float | int | None = None

    def known(self) -> bool:
        return any(v is not None for v in (self.input, self.output, self.total))

    def total_tokens(self) -> int | None:
        if self.total is not None:
            return self.total
        if self.input is not None and self.output is not None:
            return self.input + self.output
        return None

    def as_dict(self) -> dict[str, Any]:
        """The SPEC §8 ``usage`` object."""
        return {
            "input_tokens": self.input,
            "output_tokens": self.output,
            "total_tokens": self.total_tokens(),
            "cached_input_tokens": self.cached,
            "cache_write_input_tokens": self.cache_write,
            "reasoning_tokens": self.reasoning,
            "cost": self.cost,
        }


def from_openai(usage: dict[str, Any]) -> Usage:
    """Chat/Completions/Embeddings (``prompt_tokens``…) and Responses (``input_tokens``…).

    OpenRouter adds ``cost`` and, for providers that charge cache writes,
    ``prompt_tokens_details.cache_write_tokens``.
    """
    prompt = count(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = count(usage.get("input_tokens"))
    completion = count(usage.get("completion_tokens"))
    if completion is None:
        completion = count(usage.get("output_tokens"))
    cached = _sub(usage, "prompt_tokens_details", "cached_tokens")
    if cached is None:
        cached = _sub(usage, "input_tokens_details", "cached_tokens")
    reasoning = _sub(usage, "completion_tokens_details", "reasoning_tokens")
    if reasoning is None:
        reasoning = _sub(usage, "output_tokens_details", "reasoning_tokens")
    return Usage(
        input=prompt,
        output=completion,
        total=count(usage.get("total_tokens")),
        cached=cached,
        cache_write=_sub(usage, "prompt_tokens_details", "cache_write_tokens"),
        reasoning=reasoning,
        cost=number(usage.get("cost")),
    )


#: Anthropic's input counters; in a stream they may be restated (cumulatively) late.
ANTHROPIC_INPUTS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def from_anthropic(raw: dict[str, Any]) -> Usage:
    """Anthropic ``usage``: ``input_tokens`` excludes the cache reads and writes, so add them."""
    base = count(raw.get("input_tokens"))
    read = count(raw.get("cache_read_input_tokens"))
    write = count(raw.get("cache_creation_input_tokens"))
    total_input = None if base is None else base + (read or 0) + (write or 0)
    return Usage(
        input=total_input,
        output=count(raw.get("output_tokens")),
        cached=read,
        cache_write=write,
        cost=number(raw.get("cost")),
    )


def usage_line(usage: Usage) -> str | None:
    """``[USAGE] prompt_tokens=… completion_tokens=… total_tokens=…`` (+ extras when known)."""
    if not usage.known():
        return None
    fields = (
        ("prompt_tokens", usage.input),
        ("completion_tokens", usage.output),
        ("total_tokens", usage.total_tokens()),
        ("cached_tokens", usage.cached),
        ("cache_write_tokens", usage.cache_write),
        ("reasoning_tokens", usage.reasoning),
        ("cost", usage.cost),
    )
    return "[USAGE] " + " ".join(f"{name}={value}" for name, value in fields if value is not None)
