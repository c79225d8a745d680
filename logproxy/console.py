"""One console line when a request starts and one when it ends (SPEC section 6).

Lines go through the Twisted logger, so twistd puts them where its log goes (the
terminal with ``-n``, the ``--logfile`` of a daemon) with its own timestamp in front.
"""

from __future__ import annotations

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


def emit(line: str) -> None:
    # log_system keeps twistd's prefix short: "<time> [logproxy] [092d0424] POST ..."
    log.info("{line}", line=line, log_system="logproxy")
