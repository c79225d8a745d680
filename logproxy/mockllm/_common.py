"""Shared pieces of the mock: knobs, request decoding, errors, JSON templates, reply text."""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import brotli
import zstandard

Flavor = Literal["openai", "anthropic"]

#: The deterministic filler used when ``chunk_size`` is set (and by the byte helpers).
PATTERN = "The quick brown fox jumps over the lazy dog. "
#: The phrase that turns a request with ``tools`` into a tool call.
TOOL_TRIGGER = "call a tool"
#: Limit on a decompressed request body, so a tiny zip bomb cannot eat the benchmark host.
MAX_DECODED_BODY = 256 * 1024 * 1024

_compact = json.JSONEncoder(separators=(",", ":")).encode


def dumps(obj: object) -> bytes:
    """Compact JSON, as the real APIs send it."""
    return _compact(obj).encode()


def sse_data(obj: object) -> bytes:
    """One OpenAI-style SSE event (no ``event:`` line)."""
    return b"data: " + dumps(obj) + b"\n\n"


def sse_event(name: str, obj: object) -> bytes:
    """One named SSE event, as Anthropic and the Responses API send them."""
    return b"event: " + name.encode() + b"\ndata: " + dumps(obj) + b"\n\n"


def new_id(prefix: str) -> str:
    """A random id shaped like the real ones (``chatcmpl-…``, ``msg_…``)."""
    return prefix + os.urandom(12).hex()


class ApiError(Exception):
    """Raised by handlers; rendered as the flavour's error JSON."""

    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


_OPENAI_KINDS = {401: "invalid_request_error", 429: "rate_limit_error", 404: "not_found_error"}
_OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded", 404: "model_not_found"}
_ANTHROPIC_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body(flavor: Flavor, err: ApiError) -> bytes:
    """The error JSON each real API sends, so SDKs raise their usual exception types."""
    status = err.status
    if flavor == "anthropic":
        kind = err.kind or _ANTHROPIC_KINDS.get(status, "api_error" if status >= 500 else "")
        kind = kind or "invalid_request_error"
        return dumps({"type": "error", "error": {"type": kind, "message": err.message}})
    kind = err.kind or _OPENAI_KINDS.get(status, "server_error" if status >= 500 else "")
    return dumps(
        {
            "error": {
                "message": err.message,
                "type": kind or "invalid_request_error",
                "param": None,
                "code": _OPENAI_CODES.get(status),
            }
        }
    )


# --------------------------------------------------------------------------- knobs


@dataclass(frozen=True, slots=True)
class Knobs:
    """Per-request behaviour switches (body ``mock`` object and/or ``X-Mock-*`` headers)."""

    chunks: int = 5
    interval: float = 0.0
    chunk_size: int | None = None
    ttft: float = 0.0
    status: int | None = None
    drop_after: int | None = None
    gzip: bool = False
    echo: bool = False
    openrouter: bool = False  # OpenRouter's extras on chat: usage.cost and a provider field


DEFAULT_KNOBS = Knobs()
KNOB_NAMES = tuple(f.name for f in fields(Knobs))
#: ``chunk_size`` -> ``x-mock-chunk-size``
KNOB_HEADERS = {name: b"x-mock-" + name.replace("_", "-").encode() for name in KNOB_NAMES}


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _as_int(value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise ValueError(f"not an integer: {value!r}")
    number = int(value)
    if number != float(value) or not low <= number <= high:
        raise ValueError(f"{value!r} is not an integer in [{low}, {high}]")
    return number


def _as_seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise ValueError(f"not a number of seconds: {value!r}")
    seconds = float(value)
    if not 0.0 <= seconds <= 3600.0:
        raise ValueError(f"{value!r} is not a number of seconds in [0, 3600]")
    return seconds


_CONVERTERS: dict[str, Callable[[object], object]] = {
    "chunks": lambda v: _as_int(v, 0, 10**12),
    "interval": _as_seconds,
    "chunk_size": lambda v: None if v is None else _as_int(v, 1, 64 * 1024 * 1024),
    "ttft": _as_seconds,
    "status": lambda v: None if v is None else _as_int(v, 100, 599),
    "drop_after": lambda v: None if v is None else _as_int(v, 0, 10**15),
    "gzip": _as_bool,
    "echo": _as_bool,
    "openrouter": _as_bool,
}


def parse_knobs(headers: Callable[[bytes], Sequence[bytes] | None], body: object) -> Knobs:
    """Read knobs from ``X-Mock-*`` headers, then let the body's ``mock`` object override.

    ``headers`` is ``request.requestHeaders.getRawHeaders``. Raises ``ApiError`` (400)
    for unknown knobs or bad values, so typos in tests fail loudly.
    """
    values: dict[str, object] = {}
    for name, header in KNOB_HEADERS.items():
        raw = headers(header)
        if raw:
            values[name] = raw[-1].decode("latin-1")
    mock = body.get("mock") if isinstance(body, dict) else None
    if mock is not None:
        if not isinstance(mock, dict):
            raise ApiError(400, "'mock' must be an object")
        unknown = sorted(set(mock) - set(KNOB_NAMES))
        if unknown:
            raise ApiError(400, f"unknown mock knob(s): {', '.join(unknown)}")
        values.update(mock)
    if not values:
        return DEFAULT_KNOBS
    try:
        converted = {name: _CONVERTERS[name](value) for name, value in values.items()}
    except (ValueError, OverflowError) as exc:
        raise ApiError(400, f"bad mock knob: {exc}") from None
    return replace(DEFAULT_KNOBS, **converted)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- request bodies


def _zlib_decode(data: bytes, wbits: int) -> bytes:
    decoder = zlib.decompressobj(wbits)
    out = decoder.decompress(data, MAX_DECODED_BODY + 1)
    if len(out) > MAX_DECODED_BODY:
        raise ApiError(413, "decoded request body too large")
    if not decoder.eof:
        raise ApiError(400, "truncated compressed request body")
    return out


def _deflate(data: bytes) -> bytes:
    """``deflate`` means zlib-wrapped per RFC 9110, but raw deflate is common in the wild."""
    try:
        return _zlib_decode(data, zlib.MAX_WBITS)
    except zlib.error:
        return _zlib_decode(data, -zlib.MAX_WBITS)


def _zstd(data: bytes) -> bytes:
    # stream_reader copes with frames that omit the content size (streaming encoders do).
    with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
        out = bytes(reader.read(MAX_DECODED_BODY + 1))
    if len(out) > MAX_DECODED_BODY:
        raise ApiError(413, "decoded request body too large")
    return out


def _brotli(data: bytes) -> bytes:
    out = bytes(brotli.decompress(data))
    if len(out) > MAX_DECODED_BODY:
        raise ApiError(413, "decoded request body too large")
    return out


_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda d: _zlib_decode(d, 16 + zlib.MAX_WBITS),
    "x-gzip": lambda d: _zlib_decode(d, 16 + zlib.MAX_WBITS),
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
    "identity": lambda d: d,
}


def decode_body(data: bytes, content_encodings: Sequence[bytes] | None) -> bytes:
    """Undo ``Content-Encoding`` (possibly stacked, e.g. ``gzip, zstd``) on a request body."""
    if not content_encodings:
        return data
    codings = [c.strip().lower() for v in content_encodings for c in v.decode("latin-1").split(",")]
    for coding in reversed([c for c in codings if c]):
        decoder = _DECODERS.get(coding)
        if decoder is None:
            raise ApiError(415, f"unsupported Content-Encoding: {coding}")
        try:
            data = decoder(data)
        except ApiError:
            raise
        except Exception as exc:  # each library has its own error type
            raise ApiError(400, f"could not decode {coding} request body: {exc}") from None
    return data


def parse_json_body(data: bytes) -> dict[str, Any]:
    """The request JSON; anything but an object is a 400, as with the real APIs."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request. ({exc})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


# --------------------------------------------------------------------------- text helpers


def iter_texts(value: object) -> Iterator[str]:
    """Every text in a messages/input structure (strings, ``text`` and ``content`` fields)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from iter_texts(item)
    elif isinstance(value, dict):
        for key in ("text", "content", "input"):
            if key in value:
                yield from iter_texts(value[key])


def count_words(*values: object) -> int:
    """Deterministic token count: whitespace-separated words."""
    return sum(len(text.split()) for value in values for text in iter_texts(value))


def last_user_text(messages: object) -> str:
    """Text of the last ``role: user`` message (or the value itself if it is a string)."""
    if isinstance(messages, str):
        return messages
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return "\n".join(iter_texts(message.get("content")))
    return ""


def wants_tool(body: dict[str, Any], user_text: str) -> dict[str, Any] | None:
    """The first tool when the request offers tools and the user asks to "call a tool"."""
    tools = body.get("tools")
    if isinstance(tools, list) and tools and TOOL_TRIGGER in user_text.lower():
        tool = tools[0]
        if isinstance(tool, dict):
            return tool
    return None


def _sample(schema: object) -> object:
    if not isinstance(schema, dict):
        return "mock"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    samples: dict[object, object] = {
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "array": [],
        "object": {},
        "null": None,
    }
    return samples.get(kind, "mock")


def tool_arguments(schema: object) -> dict[str, object]:
    """Plausible arguments for a JSON-schema: the required properties (or all of them)."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return {}
    props: dict[str, object] = schema["properties"]
    required = schema.get("required")
    names = [n for n in required if n in props] if isinstance(required, list) else list(props)
    return {name: _sample(props[name]) for name in names}


def split_fixed(text: str, size: int = 8) -> list[str]:
    """Cut ``text`` into pieces of ``size`` characters (tool arguments are streamed so)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def max_tokens(body: dict[str, Any], *names: str) -> int | None:
    """The first integer-valued limit among ``names`` (``max_tokens`` and friends)."""
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter")
    return model


# --------------------------------------------------------------------------- replies


_WORDS = re.compile(r"\s*\S+")


@dataclass(frozen=True, slots=True)
class Reply:
    """The assistant's text, as ``count`` deterministic pieces (one per content delta)."""

    count: int
    truncated: bool
    chunk_size: int | None
    fixed: tuple[str, ...] | None = None

    def pieces(self) -> Iterator[str]:
        if self.fixed is not None:
            yield from self.fixed[: self.count]
        elif self.chunk_size is None:
            yield "word1"
            for i in range(2, self.count + 1):
                yield f" word{i}"
        else:
            size = self.chunk_size
            period = len(PATTERN)
            ring = PATTERN * (size // period + 2)
            for i in range(self.count):
                start = (i * size) % period
                yield ring[start : start + size]

    def text(self) -> str:
        return "".join(self.pieces())

    @property
    def size_hint(self) -> int:
        """Rough size in characters, to decide between one buffer and a stream."""
        return self.count * (self.chunk_size or 8)


def make_reply(knobs: Knobs, user_text: str, limit: int | None) -> Reply:
    """``chunks`` words (or ``chunk_size`` slices), or an echo; at most ``limit`` pieces."""
    if knobs.echo:
        if knobs.chunk_size:
            size = knobs.chunk_size
            parts = [user_text[i : i + size] for i in range(0, len(user_text), size)]
        else:
            parts = _WORDS.findall(user_text)
            tail = user_text[len("".join(parts)) :]
            if tail:  # trailing whitespace belongs to the last piece
                parts = [*parts[:-1], (parts[-1] if parts else "") + tail]
        total = len(parts)
        count = total if limit is None else min(total, limit)
        return Reply(count, count < total, knobs.chunk_size, tuple(parts))
    count = knobs.chunks if limit is None else min(knobs.chunks, limit)
    return Reply(count, count < knobs.chunks, knobs.chunk_size)


def expected_text(chunks: int = 5, chunk_size: int | None = None) -> str:
    """The reply text the mock produces for these knobs (handy in other test suites)."""
    return Reply(chunks, False, chunk_size).text()


# --------------------------------------------------------------------------- JSON templates


class Template:
    """Pre-serialised JSON with holes, so hot-path events cost one ``json.dumps(str)``.

    Build it from an object whose hole values are ``Template.hole(i)``; ``render``
    fills the holes in order with JSON-encoded values.
    """

    __slots__ = ("_parts",)

    @staticmethod
    def hole(index: int) -> str:
        return f"\x01hole{index}\x01"

    def __init__(
        self, obj: object, holes: int = 1, prefix: bytes = b"", suffix: bytes = b""
    ) -> None:
        text = _compact(obj)
        parts: list[bytes] = []
        for index in range(holes):
            before, sep, text = text.partition(_compact(self.hole(index)))
            if not sep:
                raise ValueError(f"template hole {index} missing")
            parts.append(before.encode())
        parts.append(text.encode())
        parts[0] = prefix + parts[0]
        parts[-1] += suffix
        self._parts = parts

    def render(self, *values: object) -> bytes:
        parts = self._parts
        out = [parts[0]]
        for value, part in zip(values, parts[1:], strict=True):
            out.append(_compact(value).encode())
            out.append(part)
        return b"".join(out)


def json_blocks(
    build: Callable[[str], object], reply: Reply, block: int = 65536
) -> Iterator[bytes]:
    """The JSON of ``build(text)`` as byte blocks, without ever holding a huge text in memory."""
    if reply.size_hint <= 1024 * 1024:
        yield dumps(build(reply.text()))
        return
    marker = Template.hole(0)
    parts = _compact(build(marker)).split(_compact(marker))
    yield parts[0].encode()
    for part in parts[1:]:
        buffered, size = ['"'], 1
        for piece in reply.pieces():
            escaped = _compact(piece)[1:-1]
            buffered.append(escaped)
            size += len(escaped)
            if size >= block:
                yield "".join(buffered).encode()
                buffered, size = [], 0
        yield ("".join(buffered) + '"' + part).encode()


# --------------------------------------------------------------------------- plans

#: A pause (seconds) before writing some bytes; each step is exactly one ``write()``.
Step = tuple[float, bytes]


@dataclass(slots=True)
class SsePlan:
    """A ``text/event-stream`` response: headers at once, then paced events."""

    events: Iterator[Step]


@dataclass(slots=True)
class JsonPlan:
    """A JSON response, produced lazily in blocks, sent after ``delay`` (generation time)."""

    blocks: Iterator[bytes]
    delay: float = 0.0


Plan = SsePlan | JsonPlan
Builder = Callable[[dict[str, Any], Knobs, int], Plan]


def sse_event_blocks(name: str, build: Callable[[str], object], reply: Reply) -> Iterator[bytes]:
    """A named SSE event carrying the full reply text: one block, or many if it is huge."""
    if reply.size_hint <= 1024 * 1024:
        yield sse_event(name, build(reply.text()))
        return
    yield b"event: " + name.encode() + b"\ndata: "
    yield from json_blocks(build, reply)
    yield b"\n\n"
