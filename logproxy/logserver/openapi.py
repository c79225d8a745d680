"""The OpenAPI 3.1 description of the query API, served at ``/api/openapi.json``.

Kept next to the code it describes; ``tests/test_api.py`` validates it and checks real
answers against its schemas.
"""

from __future__ import annotations

from typing import Any

from logproxy import __version__
from logproxy.index.query import DEFAULT_LIMIT, MAX_LIMIT
from logproxy.index.schema import BODY_TEXT_LIMIT


def _nullable(kind: str | list[str], **extra: Any) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return {"type": [*kinds, "null"], **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "A capture id (lower-case UUID) or a unique prefix of at least 4 characters.",
    "schema": {"type": "string", "pattern": "^[0-9a-fA-F-]{4,36}$"},
}

_TIME = (
    "RFC 3339 (`2025-09-13T02:00:00Z`), a UTC date (`2025-09-13`) or an age "
    "(`90s`, `30m`, `1h`, `2d`)."
)


def _query_param(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


_FILTERS = [
    _query_param("route", "Route name (exact); `-` for requests no route matched."),
    _query_param(
        "model",
        "The requested model (the llm block's `model`, else the request body's `model`): "
        "exact, or a GLOB pattern with `*`, `?` or `[...]` (case-sensitive).",
    ),
    _query_param(
        "status",
        "Comma-separated, any of: a status code (`200`), a class (`4xx`), `error` "
        "(the exchange failed: `error` is not null), `inflight` (the response has not ended).",
        pattern="^([1-5][0-9x]{2}|error|inflight)(,([1-5][0-9x]{2}|error|inflight))*$",
    ),
    _query_param("method", "HTTP method, e.g. `POST` (case-insensitive)."),
]

_LIST_PARAMS = [
    *_FILTERS,
    _query_param(
        "q",
        "Text search over the request body, the response body (the first "
        f"{BODY_TEXT_LIMIT // 1024} KiB of each) and the reassembled assistant text. "
        "Every word must occur; each word is matched as a whole token (`gpt-4o` as a "
        "phrase); a trailing `*` matches a prefix (`weath*`). A capture is searchable "
        "once its request (request text) or response (response text) has ended.",
    ),
    _query_param("since", f"Started at or after this time. {_TIME}"),
    _query_param("until", f"Started before this time. {_TIME}"),
    _query_param("cursor", "`next_cursor` of the previous page."),
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"Page size (default {DEFAULT_LIMIT}).",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    },
]

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "One line."}},
    },
    "Exchange": {
        "type": "object",
        "description": "The `metadata` object of a stream document (SPEC section 5); "
        "response fields appear once the upstream has answered.",
        "required": ["id"],
        "properties": {
            "id": {"type": "string"},
            "route": _nullable("string"),
            "pattern": _nullable("string"),
            "method": {"type": "string"},
            "source_url": {"type": "string"},
            "target_url": _nullable("string"),
            "request_started_at": {"type": "string", "format": "date-time"},
            "client_address": _nullable("string"),
            "request_content_encoding": _nullable("string"),
            "upstream_response_at": _nullable("string", format="date-time"),
            "upstream_header_duration_ms": _nullable("number"),
            "response_status": _nullable("string"),
            "response_status_code": _nullable("integer"),
            "response_content_encoding": _nullable("string"),
        },
        "additionalProperties": True,
    },
    "Usage": {
        "type": "object",
        "properties": {
            name: _nullable("integer")
            for name in (
                "input_tokens",
                "output_tokens",
                "total_tokens",
                "cached_input_tokens",
                "cache_write_input_tokens",
                "reasoning_tokens",
            )
        }
        | {"cost": _nullable("number")},
        "additionalProperties": True,
    },
    "Llm": {
        "type": "object",
        "description": "SPEC section 8: what the proxy understood of an LLM call.",
        "properties": {
            "api": _nullable("string"),
            "model": _nullable("string"),
            "response_model": _nullable("string"),
            "stream": _nullable("boolean"),
            "finish_reason": _nullable("string"),
            "usage": {"oneOf": [_ref("Usage"), {"type": "null"}]},
            "ttfb_ms": _nullable("number"),
            "ttft_ms": _nullable("number"),
            "output_text": _nullable("string"),
            "tool_calls": _nullable("array"),
            "partial": _nullable("boolean"),
        },
        "additionalProperties": True,
    },
    "StreamDocument": {
        "type": "object",
        "description": "A `*_metadata.json` document as on disk (SPEC section 5).",
        "required": ["stream_type", "metadata", "started_at", "completed", "error"],
        "properties": {
            "format_version": {"type": "integer"},
            "stream_type": {"enum": ["request", "response"]},
            "metadata": _ref("Exchange"),
            "started_at": {"type": "string", "format": "date-time"},
            "completed_at": _nullable("string", format="date-time"),
            "duration_ms": _nullable("number"),
            "bytes_written": {"type": "integer"},
            "completed": {"type": "boolean"},
            "error": _nullable("string"),
            "filename": {"type": "string"},
            "truncated": {"type": "boolean"},
            "bytes_lost": {"type": "integer"},
            "decode_error": _nullable("string"),
            "capture_error": _nullable("string"),
            "writer_pid": {"type": "integer"},
            "llm": {"oneOf": [_ref("Llm"), {"type": "null"}]},
        },
        "additionalProperties": True,
    },
    "RequestStream": {
        "type": "object",
        "description": "The request stream's document without `metadata` (the response "
        "document's `metadata` repeats it).",
        "properties": {
            "stream_type": {"const": "request"},
            "started_at": {"type": "string", "format": "date-time"},
            "completed_at": _nullable("string", format="date-time"),
            "duration_ms": _nullable("number"),
            "bytes_written": {"type": "integer"},
            "completed": {"type": "boolean"},
            "error": _nullable("string"),
            "filename": {"type": "string"},
        },
        "additionalProperties": True,
    },
    "Summary": {
        "type": "object",
        "description": "What the index holds about a capture, flat and typed: what a list "
        "row shows. `model` is the requested model (the llm block's, else the request "
        "body's); `duration_ms` runs from the request's start to the response's end; "
        "`in_flight`: the response has not ended and nothing failed; `response_bytes` "
        "grows while a response streams.",
        "required": [
            "id",
            "started_at",
            "route",
            "pattern",
            "method",
            "source_url",
            "target_url",
            "status",
            "api",
            "model",
            "response_model",
            "stream",
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "ttft_ms",
            "duration_ms",
            "completed",
            "error",
            "in_flight",
            "request_bytes",
            "response_bytes",
            "truncated",
        ],
        "properties": {
            "id": {"type": "string"},
            "started_at": {"type": "string", "format": "date-time"},
            "route": _nullable("string"),
            "pattern": _nullable("string"),
            "method": _nullable("string"),
            "source_url": _nullable("string"),
            "target_url": _nullable("string"),
            "status": _nullable("integer"),
            "api": _nullable("string"),
            "model": _nullable("string"),
            "response_model": _nullable("string"),
            "stream": _nullable("boolean"),
            "input_tokens": _nullable("integer"),
            "output_tokens": _nullable("integer"),
            "total_tokens": _nullable("integer"),
            "ttft_ms": _nullable("number"),
            "duration_ms": _nullable("number"),
            "completed": _nullable("boolean"),
            "error": _nullable("string"),
            "in_flight": {"type": "boolean"},
            "request_bytes": _nullable("integer"),
            "response_bytes": _nullable("integer"),
            "truncated": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
    "ListItem": {
        "description": "The response metadata document as on disk (the request's while the "
        "response stream has not started), with `id`, `request` and `summary` added.",
        "allOf": [
            _ref("StreamDocument"),
            {
                "type": "object",
                "required": ["id", "request", "summary"],
                "properties": {
                    "id": {"type": "string"},
                    "request": {"oneOf": [_ref("RequestStream"), {"type": "null"}]},
                    "summary": _ref("Summary"),
                },
            },
        ],
    },
    "ListPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("ListItem")},
            "next_cursor": _nullable(
                "string", description="Pass as `cursor` for the next (older) page."
            ),
        },
        "additionalProperties": False,
    },
    "Detail": {
        "type": "object",
        "required": ["id", "request", "response", "summary", "links"],
        "properties": {
            "id": {"type": "string"},
            "request": {"oneOf": [_ref("StreamDocument"), {"type": "null"}]},
            "response": {"oneOf": [_ref("StreamDocument"), {"type": "null"}]},
            "summary": _ref("Summary"),
            "links": {
                "type": "object",
                "required": ["request", "response", "tail"],
                "properties": {
                    "request": {"type": "string"},
                    "response": {"type": "string"},
                    "tail": {"type": "string"},
                },
            },
        },
        "additionalProperties": False,
    },
    "Facets": {
        "type": "object",
        "required": ["routes", "models", "methods", "unmatched", "text_search"],
        "properties": {
            "routes": {"type": "array", "items": {"type": "string"}},
            "models": {"type": "array", "items": {"type": "string"}},
            "methods": {"type": "array", "items": {"type": "string"}},
            "unmatched": {
                "type": "boolean",
                "description": "Some captures matched no route (filter with `route=-`).",
            },
            "text_search": {"enum": ["fts5", "like"]},
        },
        "additionalProperties": False,
    },
}

_RAW = {
    "parameters": [
        _ID,
        {
            "name": "body",
            "in": "query",
            "required": False,
            "description": "`1`: only the body (after the header block); `Range` then "
            "counts from the body's first byte.",
            "schema": {"type": "string", "enum": ["0", "1"]},
        },
        {
            "name": "Range",
            "in": "header",
            "required": False,
            "description": "One byte range (`bytes=0-1023`, `bytes=1000-`, `bytes=-500`); "
            "several ranges are answered with the whole file.",
            "schema": {"type": "string"},
        },
    ],
    "responses": {
        "200": {
            "description": "The `.bin` file as stored: start line, headers, blank line, "
            "decoded body.",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        "206": {
            "description": "The requested range (`Content-Range`).",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        "400": _error("Not a capture id, or an ambiguous prefix."),
        "404": _error("No such capture, or its file is gone."),
        "416": _error("The range starts past the end (`Content-Range: bytes */size`)."),
    },
}


def openapi_document() -> dict[str, Any]:
    def get(summary: str, description: str, **operation: Any) -> dict[str, Any]:
        return {"get": {"summary": summary, "description": description, **operation}}

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "logproxy query API",
            "version": __version__,
            "description": "Read the captures of a logproxy logging server: list and search "
            "them, read both stream documents and the raw files, follow new captures "
            "(Server-Sent Events) and a response while it streams. With "
            "`logging_server.token` set, every path but `/health` needs the token: "
            "`Authorization: Bearer <token>`, `?token=<token>` (which also sets an "
            "HttpOnly `logproxy_token` cookie for the browser UI), or that cookie.",
        },
        "servers": [{"url": "/"}],
        "security": [{}, {"bearer": []}, {"tokenQuery": []}, {"tokenCookie": []}],
        "paths": {
            "/api/requests": get(
                "List captures, newest first",
                "One page of captures matching every given filter, newest first (by the "
                "request's start). Pages are stable while new captures arrive: a cursor "
                "points below the newest capture of the first page.",
                operationId="listRequests",
                parameters=_LIST_PARAMS,
                responses={
                    "200": {
                        "description": "A page.",
                        "content": {"application/json": {"schema": _ref("ListPage")}},
                    },
                    "400": _error("An invalid parameter (the message names it)."),
                    "503": _error("The capture index is not available."),
                },
            ),
            "/api/requests/{id}": get(
                "One capture's metadata",
                "Both stream documents as on disk now, the index's summary and links.",
                operationId="getRequest",
                parameters=[_ID],
                responses={
                    "200": {
                        "description": "The capture.",
                        "content": {"application/json": {"schema": _ref("Detail")}},
                    },
                    "400": _error("Not a capture id, or an ambiguous prefix."),
                    "404": _error("No such capture."),
                },
            ),
            "/api/requests/{id}/request": get(
                "The stored request (raw .bin)",
                "Supports `Range`.",
                operationId="getRawRequest",
                **_RAW,
            ),
            "/api/requests/{id}/response": get(
                "The stored response (raw .bin)",
                "Supports `Range`. While the response streams, the file as it is now.",
                operationId="getRawResponse",
                **_RAW,
            ),
            "/api/requests/{id}/tail": get(
                "Follow the response body",
                "The response body (decoded, without the header block), from byte 0, "
                "streamed as the proxy captures it, ending when the capture ends. The "
                "answer starts once the upstream's response head is captured; "
                "`X-Logproxy-Status` and `X-Logproxy-Content-Type` carry the captured "
                "status and content type. For a finished capture: the whole body.",
                operationId="tailResponse",
                parameters=[_ID],
                responses={
                    "200": {
                        "description": "The body (chunked).",
                        "headers": {
                            "X-Logproxy-Status": {"schema": {"type": "integer"}},
                            "X-Logproxy-Content-Type": {"schema": {"type": "string"}},
                        },
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "400": _error("Not a capture id, or an ambiguous prefix."),
                    "404": _error("No such capture."),
                },
            ),
            "/api/events": get(
                "Live capture events (Server-Sent Events)",
                "`event: start` (a capture began: its request stream opened), "
                "`event: progress` (its response stream opened, or its body grew; at most "
                "4 per second per capture), `event: end` (its response ended). `data:` is "
                "the capture's list item (schema `ListItem`), `id:` an event id: "
                "reconnecting with `Last-Event-ID` (EventSource does) replays the events "
                "missed, if still known. A comment line every 15 s keeps the connection "
                "alive. The filters of `/api/requests` (but `q`) select events. A client "
                "that does not read is disconnected after 1 MiB of backlog.",
                operationId="events",
                parameters=[
                    *_FILTERS,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                responses={
                    "200": {
                        "description": "An endless event stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": _error("An invalid parameter."),
                },
            ),
            "/api/facets": get(
                "Filter values",
                "The routes, models and methods that occur in the index (for filter menus).",
                operationId="facets",
                responses={
                    "200": {
                        "description": "Distinct values, sorted.",
                        "content": {"application/json": {"schema": _ref("Facets")}},
                    }
                },
            ),
            "/api/openapi.json": get(
                "This document",
                "The OpenAPI 3.1 description of the query API.",
                operationId="openapi",
                responses={
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            ),
            "/health": get(
                "Liveness",
                "Never needs the token.",
                operationId="health",
                security=[],
                responses={
                    "200": {
                        "description": '`{"status": "ok"}`',
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            ),
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
                "tokenCookie": {"type": "apiKey", "in": "cookie", "name": "logproxy_token"},
            },
        },
    }
