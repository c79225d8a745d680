"""Watches one proxied exchange and distils the SPEC §8 ``llm`` block from it.

The proxy hands over decoded body chunks as they pass. Request bodies and
non-streamed JSON answers are buffered up to a cap and parsed once; SSE
answers go through an incremental parser, so per-chunk work stays flat and
memory stays bounded however long the stream runs.

Every public method is total: malformed input (or a bug here) is recorded
in ``warnings`` and never raises into the proxy.
"""

from __future__ import annotations

from typing import Any

from . import detect
from .anthropic import Messages
from .buffers import CappedBody, loads, salvage
from .detect import RequestInfo
from .openai import Chat, Completions, Embeddings
from .responses import Responses
from .sse import SseParser
from .state import Handler, State, clean, error_message, short
from .usage import from_anthropic, from_openai, usage_line

_SSE_MARKERS = (b"data:", b"event:", b":", b"id:", b"retry:")
#: Undecided (no content type) bodies: sniff at most this much before calling it JSON.
_SNIFF = 1024
#: Parser problems that lost data: the result is flagged partial.
_LOSSY = frozenset({"line_too_long", "event_too_large"})


def make_handler(api: str | None) -> Handler | None:
    if api == detect.CHAT:
        return Chat()
    if api == detect.COMPLETIONS:
        return Completions()
    if api == detect.EMBEDDINGS:
        return Embeddings()
    if api == detect.RESPONSES:
        return Responses()
    if api == detect.MESSAGES:
        return Messages()
    return None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class Observer:
    """One exchange; see :func:`logproxy.llm.observe`.

    ``path_api`` is the API named by the path, or ``None`` when the call is
    to be recognised by its request body (and the API by the response).
    """

    def __init__(self, path_api: str | None) -> None:
        self._path_api = path_api
        self._api = path_api
        self._handler = make_handler(path_api)
        self._request: CappedBody | None = CappedBody()
        self._request_checked = False  # first body byte looked at (shape mode)
        self._facts: tuple[int, RequestInfo, bool] | None = None
        self._info = RequestInfo()
        self._llm: bool | None = None  # None: not decided yet
        self._req_warnings: list[str] = []
        self._status: int | None = None
        self._ctype = ""
        self._ttfb: float | None = None
        self._first_body: float | None = None
        self._last_ms = 0.0
        self._mode: str | None = None  # "sse" | "json"
        self._prefix = bytearray()
        self._sse: SseParser | None = None
        self._body: CappedBody | None = None
        self._json_checked = False
        self._not_json = False
        self._json_memo: tuple[int, State] | None = None
        self._malformed = False
        self._st = State()
        self._closed = False

    # ------------------------------------------------------------------ request

    def feed_request(self, data: bytes) -> None:
        """A decoded request body chunk."""
        try:
            request = self._request
            if request is None or not data or self._llm is False:
                return
            data = bytes(data)
            if self._path_api is None and not self._request_checked:
                stripped = data.lstrip()
                if stripped:
                    self._request_checked = True
                    if stripped[0] != 0x7B:  # "{": no JSON object, no LLM call
                        self._llm = False
                        self._request = None
                        return
            request.feed(data)
        except Exception:
            self._st.warn("internal_error")

    def end_request(self) -> None:
        """The request body is complete: keep its few facts, free the buffer."""
        try:
            if self._request is not None:
                self._request_facts()
                self._llm = self._facts[2] if self._facts else False
                self._request = None
        except Exception:
            self._st.warn("internal_error")

    def _request_facts(self) -> tuple[RequestInfo, bool]:
        """(facts, is it an LLM call), from the request buffered so far; memoised by size."""
        request = self._request
        if request is None:
            return self._info, bool(self._llm)
        if self._facts is not None and self._facts[0] == request.size:
            return self._facts[1], self._facts[2]
        by_path = self._path_api is not None
        warnings: list[str] = []
        if request.over:
            warnings.append("request_over_cap")
            head, tail = request.head(), request.tail()
            model = salvage(head, "model", str, False) or salvage(tail, "model", str, True)
            stream = salvage(head, "stream", bool, False)
            if stream is None:
                stream = salvage(tail, "stream", bool, True)
            info = RequestInfo(model=short(model), stream=stream)
            llm = by_path
        else:
            body = request.json()
            info = detect.request_info(body)
            if body is None and request.size and by_path:
                warnings.append("request_not_json")
            llm = detect.plausible_for_path(body) if by_path else detect.llm_shaped(body)
        self._facts = (request.size, info, llm)
        self._info = info
        self._req_warnings = warnings
        return info, llm

    def _is_llm(self) -> bool:
        if self._llm is None:
            self._llm = self._request_facts()[1]
        return self._llm

    # ------------------------------------------------------------------ response

    def start_response(self, status: int, content_type: str | None, at_ms: float) -> None:
        """Status line and headers arrived ``at_ms`` after the request started (= ttfb)."""
        try:
            self._status = status if isinstance(status, int) else None
            if isinstance(content_type, str):
                self._ctype = content_type.split(";", 1)[0].strip().lower()
            if self._ttfb is None:
                self._ttfb = float(at_ms)
        except Exception:
            self._st.warn("internal_error")

    def feed_response(self, data: bytes, at_ms: float) -> None:
        """A decoded response body chunk that arrived ``at_ms`` after the request started."""
        try:
            if not data:
                return
            if self._closed:
                self._st.warn("data_after_result")
                return
            if not self._is_llm():
                return
            at = float(at_ms)
            self._last_ms = at
            if self._first_body is None:
                self._first_body = at
                if self._ttfb is None:
                    self._ttfb = at
            data = bytes(data)
            if self._mode is None:
                self._prefix += data
                mode = self._choose_mode(force=False)
                if mode is None:
                    return
                data = bytes(self._prefix)
                self._prefix = bytearray()
                self._begin(mode)
            self._consume(data, at)
        except Exception:
            self._st.warn("internal_error")

    def _choose_mode(self, force: bool) -> str | None:
        """SSE or JSON: by content type, else by the first bytes."""
        if "event-stream" in self._ctype:
            return "sse"
        if "json" in self._ctype:
            return "json"
        head = bytes(self._prefix).lstrip()
        if not head:
            return "json" if force or len(self._prefix) >= _SNIFF else None
        if head[:1] in (b"{", b"["):
            return "json"
        for marker in _SSE_MARKERS:
            if head.startswith(marker):
                return "sse"
            if marker.startswith(head) and not force:
                return None  # "dat…": wait for more
        return "json"

    def _begin(self, mode: str) -> None:
        self._mode = mode
        if mode == "sse":
            self._sse = SseParser()
        else:
            self._body = CappedBody()

    def _consume(self, data: bytes, at: float) -> None:
        if self._sse is not None:
            for event in self._sse.feed(data):
                self._on_event(event.name, event.data, at)
        elif self._body is not None and not self._not_json:
            if not self._json_checked:
                stripped = data.lstrip()
                if not stripped:
                    return
                self._json_checked = True
                if stripped[:1] not in (b"{", b"["):
                    self._not_json = True  # an HTML error page, plain text…: not kept
                    return
            self._body.feed(data)

    def _on_event(self, name: str, data: bytes, at: float) -> None:
        st = self._st
        if data == b"[DONE]":
            st.terminated = True
            return
        obj = loads(data)
        if not isinstance(obj, dict):
            st.warn("bad_json_event" if obj is None else "unexpected_event")
            self._malformed = True
            return
        self._apply(st, obj, name, at, streamed=True)

    def _apply(self, st: State, obj: dict[str, Any], name: str, at: float, streamed: bool) -> None:
        message = error_message(obj)
        if message is not None:
            st.set_error(message)
        if self._handler is None:
            api = detect.api_for_object(obj, name)
            if api is not None:
                self._api = api
                self._handler = make_handler(api)
        if self._handler is not None:
            if streamed:
                self._handler.event(st, name, obj, at)
            else:
                self._handler.body(st, obj)

    def _json_state(self) -> State:
        """The state for a non-streamed answer: parsed once per body size."""
        body = self._body
        if body is None:
            return self._st
        if self._json_memo is not None and self._json_memo[0] == body.size:
            return self._json_memo[1]
        st = State()
        if self._not_json:
            st.warn("response_not_json")
        elif body.over:
            st.warn("response_over_cap")
            tail = body.tail()
            st.model(salvage(tail, "model", str, True) or salvage(body.head(), "model", str, False))
            usage = salvage(tail, "usage", dict, True)
            if isinstance(usage, dict):
                anthropic = self._api == detect.MESSAGES
                st.set_usage(from_anthropic(usage) if anthropic else from_openai(usage))
            st.terminated = True
        else:
            obj = body.json()
            if isinstance(obj, dict):
                self._apply(st, obj, "", self._last_ms, streamed=False)
                st.terminated = True
            elif obj is None:
                st.warn("bad_json_body" if body.size else "empty_body")
            else:
                st.warn("unexpected_body")
        self._json_memo = (body.size, st)
        return st

    # ------------------------------------------------------------------ results

    def _close(self, complete: bool) -> None:
        """End of the exchange: flush what is still pending (once)."""
        if self._closed:
            return
        self._closed = True
        if self._mode is None and self._prefix:
            self._begin(self._choose_mode(force=True) or "json")
            data = bytes(self._prefix)
            self._prefix = bytearray()
            self._consume(data, self._last_ms)
        if self._sse is not None:
            for event in self._sse.close(whole=complete):
                self._on_event(event.name, event.data, self._last_ms)

    def _state(self) -> State:
        return self._json_state() if self._mode == "json" else self._st

    def result(self, complete: bool) -> dict[str, Any] | None:
        """The SPEC §8 block; ``None`` if this was no LLM call.

        Call it when the exchange is over (``complete=False`` if it was cut);
        it flushes the SSE parser, so later body chunks are ignored.
        """
        try:
            if not self._is_llm():
                return None
            self._close(complete)
            return self._build(complete)
        except Exception:
            return None

    def _build(self, complete: bool) -> dict[str, Any]:
        info, _ = self._request_facts()
        st = self._state()
        status = self._status
        ok = status is None or status < 400
        warnings = list(self._req_warnings)
        partial = not complete
        if not complete:
            warnings.append("cut")
        if self._mode == "sse" and self._sse is not None:
            problems = self._sse.problems
            warnings.extend(sorted(problems))
            if self._malformed or _LOSSY.intersection(problems):
                partial = True
            if complete and ok and not st.terminated:
                warnings.append("no_end_of_stream")
                partial = True
        elif self._mode == "json":
            if ok and not st.terminated:
                partial = True
        elif ok:
            warnings.append("no_response" if status is None else "empty_body")
            partial = True
        for code in (*st.warnings, *self._st.warnings):  # a JSON answer has its own state
            if code not in warnings:
                warnings.append(code)
        error = st.error
        if error is None and status is not None and status >= 400:
            error = f"HTTP {status}"
        if self._mode == "sse":
            ttft = st.ttft_ms
        else:
            ttft = self._first_body if ok and error is None and st.terminated else None
        hint = st.provider_hint
        if hint is None and self._sse is not None and self._openrouter_comment(self._sse):
            hint = "openrouter"
        text = st.text.text()
        stream = info.stream if info.stream is not None else self._mode == "sse"
        return {
            "api": self._api,
            "model": info.model,
            "response_model": st.response_model,
            "stream": stream,
            "finish_reason": st.finish_reason,
            "usage": st.usage.as_dict(),
            "ttfb_ms": _ms(self._ttfb),
            "ttft_ms": _ms(ttft),
            "output_text": clean(text) if text else None,
            "tool_calls": [
                {**call, "arguments": clean(call["arguments"])} for call in st.tools.as_list()
            ],
            "partial": partial,
            "message_count": info.message_count(self._api),
            "provider_hint": hint,
            "error": error,
            "output_truncated": st.text.truncated or st.tools.truncated(),
            "warnings": warnings,
        }

    @staticmethod
    def _openrouter_comment(parser: SseParser) -> bool:
        """OpenRouter keeps streams alive with ``: OPENROUTER PROCESSING`` comments."""
        return any(b"OPENROUTER" in comment.upper() for comment in parser.comments)

    def usage_line(self) -> str | None:
        """``[USAGE] prompt_tokens=12 completion_tokens=30 total_tokens=42`` or ``None``."""
        try:
            if not self._is_llm():
                return None
            return usage_line(self._state().usage)
        except Exception:
            return None
