"""One console line when a request starts and one when it ends (SPEC section 6).

Lines go through the Twisted logger, so twistd puts them where its log goes (the
terminal with ``-n``, the ``--logfile`` of a daemon) with its own timestamp in front.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

log = Logger(namespace="logproxy")


def start_line(
    short_id: str, method: str, source: str, target: str | None, route: str | None
) -> str:
    arrow = f" -> {target}" if target else ""
    tag = f" [{route}]" if route else ""
    return f"[{short_id}] {method} {source}{arrow}{tag}"


def end_line(
    short_id: str,
    status: int,
    phrase: str,
    request_bytes: int,
    response_bytes: int,
    duration_ms: float,
    error: str | None,
    usage: str | None = None,
) -> str:
    text = (
        f"[{short_id}] {status} {phrase} in={request_bytes}B out={response_bytes}B "
        f"{duration_ms:.1f}ms"
    )
    if usage:
        text += f" {usage}"
    if error:
        text += f" error={error!r}"
    return text


def usage_summary(llm: dict[str, Any] | None) -> str | None:
    """``gpt-4o-mini tokens=12+30`` for the end line of an LLM call."""
    if not llm:
        return None
    usage = llm.get("usage") or {}
    model = llm.get("response_model") or llm.get("model") or "?"
    tokens_in, tokens_out = usage.get("input_tokens"), usage.get("output_tokens")
    parts = [str(model)]
    if tokens_in is not None or tokens_out is not None:
        parts.append(f"tokens={_n(tokens_in)}+{_n(tokens_out)}")
    if llm.get("ttft_ms") is not None:
        parts.append(f"ttft={llm['ttft_ms']:.0f}ms")
    return " ".join(parts)


def _n(value: object) -> str:
    return "?" if value is None else str(value)


def emit(line: str) -> None:
    # log_system keeps twistd's prefix short: "<time> [logproxy] [092d0424] POST ..."
    log.info("{line}", line=line, log_system="logproxy")
