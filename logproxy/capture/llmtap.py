"""Feeds one capture's stored (decoded) bodies to an :class:`logproxy.llm.Observer`.

The observer runs where the capture bytes are encoded: on the writer thread for local
captures, on the reactor for remote ones, never on the relay path. Both streams of a
capture share one tap; the request stream's items always reach it first (one FIFO).

Thread confinement: the reactor sets ``status``/``content_type``/``headers_at`` before the
response stream is opened (the queue hand-over orders those writes before the reads);
everything else is called on the one thread that encodes the capture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from logproxy.llm import Observer

#: (llm block or None, "[USAGE] ..." line or None), delivered on the reactor thread.
ResultCallback = Callable[[dict[str, Any] | None, str | None], None]


class LLMTap:
    def __init__(self, observer: Observer, started: float, on_result: ResultCallback) -> None:
        self._observer = observer
        self._started = started
        self.on_result = on_result
        self.status = 0
        self.content_type: str | None = None
        self.headers_at = 0.0
        self.chunk_at = 0.0  # arrival time of the chunk being encoded (set by the job)
        self._request_done = False

    def _ms(self, at: float) -> float:
        return round((at - self._started) * 1000, 3)

    # request side

    def request_body(self, data: bytes) -> None:
        self._observer.feed_request(data)

    def request_end(self) -> None:
        if not self._request_done:
            self._request_done = True
            self._observer.end_request()

    # response side

    def response_begin(self) -> None:
        self.request_end()  # a request cut short still lets the response be judged
        self._observer.start_response(self.status, self.content_type, self._ms(self.headers_at))

    def response_body(self, data: bytes) -> None:
        self._observer.feed_response(data, self._ms(self.chunk_at))

    def response_end(self, complete: bool) -> tuple[dict[str, Any] | None, str | None]:
        result = self._observer.result(complete)
        return result, self._observer.usage_line() if result is not None else None
